//! The control socket itself: who may use it, what a bad request gets,
//! and what happens to a live or stale socket at start.

mod common;

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::Duration;

use common::{
    forkctl, forkctl_as, instance_states, raw_control, running_as_root, start_with_control,
    wait_until, Forkd, Scratch,
};

const T: Duration = Duration::from_secs(10);

const ONE_SLEEPER: &str = r#"
[[program]]
name = "web"
command = ["/bin/sleep", "1000"]
"#;

fn running(socket: &std::path::Path) -> Option<i64> {
    match instance_states(socket, "web").as_slice() {
        [(state, pid)] if state == "running" => *pid,
        _ => None,
    }
}

#[test]
fn another_uid_is_refused_and_nothing_changes() {
    if !running_as_root(
        "another_uid_is_refused_and_nothing_changes",
        "run forkctl as another uid (setpriv)",
    ) {
        return;
    }
    let dir = Scratch::new("ctl-denied");
    let (forkd, socket) = start_with_control(&dir, ONE_SLEEPER);
    wait_until("web running", T, || running(&socket).is_some());
    let pid = running(&socket);
    // Let uid 65534 reach the socket so that SO_PEERCRED, not the file
    // mode, is what refuses it.
    std::fs::set_permissions(&dir.path, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let nobody = [
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
    ];
    let out = forkctl_as(&nobody, &socket, &["stop", "web"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains("access denied for uid 65534"),
        "{}",
        out.stderr
    );
    forkd.log.wait_line("refused uid 65534", T);
    assert_eq!(running(&socket), pid, "the refused stop changed nothing");
}

#[test]
fn the_socket_is_created_for_forkds_user_only() {
    let dir = Scratch::new("ctl-mode");
    let (_forkd, socket) = start_with_control(&dir, ONE_SLEEPER);
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}

#[test]
fn malformed_requests_get_error_replies_and_the_daemon_keeps_serving() {
    let dir = Scratch::new("ctl-malformed");
    let (_forkd, socket) = start_with_control(&dir, ONE_SLEEPER);
    let too_long = format!(
        "{{\"command\":\"status\",\"x\":\"{}\"}}\n",
        "a".repeat(100_000)
    );
    let cases: [(&[u8], &str); 6] = [
        (b"this is not json\n", "bad_request"),
        (b"\xff\xfe{\n", "bad_request"),
        (too_long.as_bytes(), "too_large"),
        (b"{\"command\":\"launch\"}\n", "unknown variant `launch`"),
        (b"{\"command\":\"stop\",\"name\":42}\n", "invalid type"),
        (
            b"{\"command\":\"scale\",\"name\":\"web\",\"count\":\"lots\"}\n",
            "invalid type",
        ),
    ];
    for (bytes, expected) in cases {
        let replies = raw_control(&socket, bytes);
        assert_eq!(replies.len(), 1, "{replies:?}");
        let reply: serde_json::Value = serde_json::from_str(&replies[0]).unwrap();
        assert_eq!(reply["ok"], false);
        assert!(replies[0].contains(expected), "{expected}: {}", replies[0]);
    }
    // One connection, bad and good requests mixed: each gets its answer.
    let mixed = format!("nope\n{too_long}{{\"command\":\"version\"}}\n");
    let replies = raw_control(&socket, mixed.as_bytes());
    assert_eq!(replies.len(), 3, "{replies:?}");
    assert!(replies[2].contains("\"version\""), "{}", replies[2]);
    assert_eq!(forkctl(&socket, &["status"]).code, 0);
}

#[test]
fn a_client_that_never_reads_does_not_stop_others() {
    let dir = Scratch::new("ctl-stuck");
    let (_forkd, socket) = start_with_control(&dir, ONE_SLEEPER);
    let mut stuck = UnixStream::connect(&socket).unwrap();
    stuck.set_nonblocking(true).unwrap();
    let request = b"{\"command\":\"status\"}\n".repeat(1000);
    // Write until the kernel buffers fill up; never read a reply.
    let mut sent = 0;
    for _ in 0..2000 {
        match stuck.write(&request) {
            Ok(n) => sent += n,
            Err(_) => break,
        }
    }
    assert!(sent > 0);
    let out = forkctl(&socket, &["status"]);
    assert_eq!(out.code, 0, "{out:?}");
    let mut half_open = UnixStream::connect(&socket).unwrap();
    half_open.write_all(b"{\"command\":").unwrap();
    assert_eq!(forkctl(&socket, &["version"]).code, 0);
    let mut buf = [0u8; 16];
    half_open.set_nonblocking(true).unwrap();
    assert!(
        half_open.read(&mut buf).is_err(),
        "no reply to half a request"
    );
}

#[test]
fn a_second_forkd_on_a_live_socket_refuses_to_start() {
    let dir = Scratch::new("ctl-live");
    let (first, socket) = start_with_control(&dir, ONE_SLEEPER);
    let config = dir.write(
        "second.toml",
        &format!("[daemon]\ncontrol_socket = \"{}\"\n", socket.display()),
    );
    let mut second = Forkd::start(&config);
    assert_eq!(second.wait_exit(T), Some(1));
    let line = second.log.wait_line("already serving", T);
    assert!(line.contains(&format!("pid {}", first.pid())), "{line}");
    assert!(line.contains(&socket.display().to_string()), "{line}");
    assert_eq!(
        forkctl(&socket, &["status"]).code,
        0,
        "the first still serves"
    );
}

#[test]
fn a_live_socket_with_a_full_backlog_is_refused_at_once_not_waited_on() {
    use nix::sys::socket::{
        bind, connect, listen, socket, AddressFamily, Backlog, SockFlag, SockType, UnixAddr,
    };
    let dir = Scratch::new("ctl-full");
    let path = dir.file("control.sock");
    let addr = UnixAddr::new(&path).unwrap();
    // A listener that never accepts, its backlog filled with connections.
    let listener = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .unwrap();
    bind(std::os::fd::AsRawFd::as_raw_fd(&listener), &addr).unwrap();
    listen(&listener, Backlog::new(0).unwrap()).unwrap();
    let mut queued = Vec::new();
    loop {
        let client = socket(
            AddressFamily::Unix,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            None,
        )
        .unwrap();
        match connect(std::os::fd::AsRawFd::as_raw_fd(&client), &addr) {
            Ok(()) => queued.push(client),
            Err(nix::errno::Errno::EAGAIN) => break,
            Err(e) => panic!("filling the backlog: {e}"),
        }
        assert!(queued.len() < 64, "the backlog never filled");
    }
    let config = dir.write(
        "forkd.toml",
        &format!("[daemon]\ncontrol_socket = \"{}\"\n", path.display()),
    );
    let mut forkd = Forkd::start(&config);
    assert_eq!(forkd.wait_exit(T), Some(1), "forkd hung on a busy socket");
    forkd.log.wait_line("already serving this socket", T);
    assert!(path.exists(), "the live socket was removed");
}

#[test]
fn a_stale_socket_file_is_replaced() {
    let dir = Scratch::new("ctl-stale");
    let socket = dir.file("control.sock");
    // A socket file nobody listens on, as a crashed forkd leaves behind.
    drop(UnixListener::bind(&socket).unwrap());
    assert!(socket.exists());
    let (forkd, socket) = start_with_control(&dir, ONE_SLEEPER);
    forkd.log.wait_line("removed a stale control socket", T);
    assert_eq!(forkctl(&socket, &["status"]).code, 0);
}

#[test]
fn a_path_that_is_not_a_socket_is_left_alone() {
    let dir = Scratch::new("ctl-notsock");
    let path = dir.write("control.sock", "precious");
    let config = dir.write(
        "forkd.toml",
        &format!("[daemon]\ncontrol_socket = \"{}\"\n", path.display()),
    );
    let mut forkd = Forkd::start(&config);
    assert_eq!(forkd.wait_exit(T), Some(1));
    forkd.log.wait_line("is not a socket", T);
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "precious");
}

/// Sets this thread's own credentials. The raw syscalls change only the
/// calling thread (glibc's wrappers would change every thread of the test
/// process), and SO_PEERCRED and SO_PEERGROUPS record the credentials of
/// the thread that connects.
fn become_on_this_thread(uid: u32, gid: u32, groups: &[u32]) {
    let gid_list: Vec<libc::gid_t> = groups.to_vec();
    // SAFETY: setgroups reads `len` gids from a live Vec; the set*id calls
    // take plain integers. Only this thread's credentials change.
    let results = unsafe {
        [
            libc::syscall(libc::SYS_setgroups, gid_list.len(), gid_list.as_ptr()),
            libc::syscall(libc::SYS_setresgid, gid, gid, gid),
            libc::syscall(libc::SYS_setresuid, uid, uid, uid),
        ]
    };
    assert_eq!(results, [0, 0, 0], "{}", std::io::Error::last_os_error());
}

/// `n` connections to `socket` made by a thread that is uid/gid/groups.
fn connect_as(
    socket: &std::path::Path,
    uid: u32,
    gid: u32,
    groups: &[u32],
    n: usize,
) -> Vec<UnixStream> {
    let socket = socket.to_path_buf();
    let groups = groups.to_vec();
    std::thread::spawn(move || {
        become_on_this_thread(uid, gid, &groups);
        (0..n)
            .map(|_| UnixStream::connect(&socket).expect("connect"))
            .collect()
    })
    .join()
    .expect("connecting thread")
}

/// Lets other users reach the socket through the scratch directory.
fn open_directory(dir: &Scratch) {
    std::fs::set_permissions(&dir.path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Connections and what forkd sent on each before closing it ("" while
/// it keeps the connection open and silent).
struct Held {
    streams: Vec<(UnixStream, String, bool)>,
}

impl Held {
    fn new(streams: Vec<UnixStream>) -> Held {
        for s in &streams {
            s.set_nonblocking(true).unwrap();
        }
        Held {
            streams: streams
                .into_iter()
                .map(|s| (s, String::new(), false))
                .collect(),
        }
    }

    /// Reads what has arrived; returns the replies of closed connections.
    fn refusals(&mut self) -> Vec<String> {
        for (stream, text, closed) in &mut self.streams {
            let mut buf = [0u8; 4096];
            while !*closed {
                match stream.read(&mut buf) {
                    Ok(0) => *closed = true,
                    Ok(n) => text.push_str(&String::from_utf8_lossy(&buf[..n])),
                    Err(_) => break,
                }
            }
        }
        self.streams
            .iter()
            .filter(|(_, _, closed)| *closed)
            .map(|(_, text, _)| text.clone())
            .collect()
    }

    fn wait_refusals(&mut self, n: usize) -> Vec<String> {
        wait_until(&format!("{n} connections refused"), T, || {
            self.refusals().len() >= n
        });
        let refused = self.refusals();
        assert_eq!(refused.len(), n, "{refused:?}");
        refused
    }
}

#[test]
fn other_users_idle_connections_never_lock_the_operator_out() {
    if !running_as_root(
        "other_users_idle_connections_never_lock_the_operator_out",
        "connect as other uids",
    ) {
        return;
    }
    let dir = Scratch::new("ctl-slots");
    let (_forkd, socket) =
        start_with_control(&dir, &format!("control_group = \"nogroup\"\n{ONE_SLEEPER}"));
    open_directory(&dir);
    // One user opens every slot and sits on them: it gets its share only.
    let mut nobody = Held::new(connect_as(&socket, 65534, 65534, &[], 64));
    let refused = nobody.wait_refusals(64 - 16);
    assert!(
        refused
            .iter()
            .all(|r| r.contains("uid 65534") && r.contains("already holds 16")),
        "{refused:?}"
    );
    // Three more users in the group take what other users may: 60 slots.
    let mut others = Held::new(
        (65531..65534)
            .flat_map(|uid| connect_as(&socket, uid, 65534, &[], 16))
            .collect(),
    );
    let refused = others.wait_refusals(4);
    assert!(
        refused.iter().all(|r| r.contains("kept for root")),
        "{refused:?}"
    );
    // The operator still gets in.
    let out = forkctl(&socket, &["status"]);
    assert_eq!(out.code, 0, "{out:?}");
}

#[test]
fn a_supplementary_group_counts_as_it_was_when_the_peer_connected() {
    if !running_as_root(
        "a_supplementary_group_counts_as_it_was_when_the_peer_connected",
        "connect as another uid",
    ) {
        return;
    }
    let group = nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(1))
        .unwrap()
        .expect("a group with gid 1");
    let dir = Scratch::new("ctl-peergroups");
    let (_forkd, socket) = start_with_control(
        &dir,
        &format!("control_group = \"{}\"\n{ONE_SLEEPER}", group.name),
    );
    open_directory(&dir);
    // Only the connecting thread is in the group; the test process's main
    // thread (what /proc/PID/status shows) is not. The socket's own
    // record of the peer is what counts, not whatever holds that pid now.
    let mut stream = connect_as(&socket, 65534, 65534, &[1], 1).remove(0);
    stream.set_read_timeout(Some(T)).unwrap();
    stream.write_all(b"{\"command\":\"version\"}\n").unwrap();
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).unwrap();
    assert!(reply.contains("\"ok\":true"), "{reply}");
}

#[test]
fn out_of_file_descriptors_a_queued_connection_is_refused_not_left_hanging() {
    use std::io::BufRead;
    let dir = Scratch::new("ctl-emfile");
    let (forkd, socket) = start_with_control(&dir, ONE_SLEEPER);
    wait_until("web running", T, || running(&socket).is_some());
    let pid = forkd.pid();
    // Every fd number below the limit in use: the next accept is EMFILE.
    let was = common::set_open_files_limit(pid, common::fd_count(pid) as u64);
    let mut served = Vec::new();
    let refusal = loop {
        assert!(served.len() < 16, "forkd kept accepting past its fd limit");
        let mut stream = UnixStream::connect(&socket).unwrap();
        stream.set_read_timeout(Some(T)).unwrap();
        // A refused connection may be closed before the request is sent.
        let _ = stream.write_all(b"{\"command\":\"version\"}\n");
        let mut line = String::new();
        std::io::BufReader::new(&stream)
            .read_line(&mut line)
            .expect("an answer, not a connection left queued");
        if line.contains("\"ok\":true") {
            served.push(stream); // it fills a gap in forkd's fd numbers
            continue;
        }
        break line;
    };
    assert!(refusal.contains("file descriptors"), "{refusal}");
    forkd.log.wait_line("out of file descriptors", T);
    common::set_open_files_limit(pid, was);
    drop(served);
    let out = forkctl(&socket, &["status"]);
    assert_eq!(out.code, 0, "{out:?}");
}

/// A user at its 16 connections that closes them all and connects again
/// at once is served: forkd may see the new connection before the closes,
/// and a connection whose peer is gone must not count against it.
#[test]
fn connections_a_user_has_closed_never_count_against_its_limit() {
    let dir = Scratch::new("ctl-reconnect");
    let (_forkd, socket) = start_with_control(&dir, ONE_SLEEPER);
    let ask = |s: &mut UnixStream| {
        s.set_read_timeout(Some(T)).unwrap();
        s.write_all(b"{\"command\":\"version\"}\n").unwrap();
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        while s.read(&mut byte).unwrap() == 1 && byte[0] != b'\n' {
            line.push(byte[0]);
        }
        String::from_utf8(line).unwrap()
    };
    for round in 0..20 {
        let mut held: Vec<UnixStream> = (0..16)
            .map(|_| UnixStream::connect(&socket).unwrap())
            .collect();
        for s in &mut held {
            let reply = ask(s);
            assert!(reply.contains("\"ok\":true"), "round {round}: {reply}");
        }
        drop(held);
        let reply = ask(&mut UnixStream::connect(&socket).unwrap());
        assert!(
            reply.contains("\"ok\":true"),
            "round {round}: a reconnect right after 16 closes: {reply}"
        );
    }
}
