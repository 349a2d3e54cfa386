//! `[[service]]` keys that change what a client sees: `request_timeout`,
//! `backlog`, `tcp_nodelay`, IPv6 listeners, an exec program's stderr, and
//! the live / refused / timeouts counters of `forkctl status`.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use common::*;

const T: Duration = Duration::from_secs(10);

fn serve(scratch: &Scratch, body: &str) -> (Forkd, String, std::path::PathBuf) {
    let config = service_config(scratch, body);
    let forkd = Forkd::start(&config);
    let addr = bound_address(&forkd.log, "echo", "tcp://");
    let socket = scratch.file("forkd.run").join("control.sock");
    (forkd, addr, socket)
}

fn service_status(socket: &std::path::Path) -> serde_json::Value {
    status_json(socket)["services"][0].clone()
}

#[test]
fn request_timeout_cuts_a_client_that_stops_reading_its_replies() {
    let scratch = Scratch::new("request-timeout");
    let (forkd, addr, socket) = serve(
        &scratch,
        "listen = [\"tcp://127.0.0.1:0\"]\nhandler = \"echo\"\nrequest_timeout = \"1s\"",
    );
    let mut client = TcpStream::connect(&addr).unwrap();
    client
        .set_write_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    // Send without ever reading: the replies fill both socket buffers and
    // the server's write waits, until request_timeout.
    let chunk = vec![b'x'; 64 << 10];
    let started = Instant::now();
    while started.elapsed() < T {
        match client.write(&chunk) {
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
            Err(e) => panic!("the connection broke before its buffers filled: {e}"),
        }
    }
    let full = Instant::now();
    wait_until("the connection is cut and counted", T, || {
        service_status(&socket)["timeouts"] == 1
    });
    let cut = full.elapsed();
    assert!(
        cut >= Duration::from_millis(500),
        "cut {cut:?} after the buffers filled, before request_timeout"
    );
    forkd
        .log
        .wait_line("cut a connection at idle_timeout/request_timeout", T);
    // Only that client: the next one is served.
    echo_exchange(&mut tcp(&addr), b"next\n");
}

/// The listen(2) backlog of the TCP listener on `port`, as `ss` reports it
/// (Send-Q of a listening socket).
fn listen_backlog(port: u16) -> Option<u32> {
    let out = std::process::Command::new("ss")
        .args(["-Hltn", &format!("sport = :{port}")])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace().nth(2)?.parse().ok()
}

#[test]
fn backlog_sets_the_listen_queue() {
    if !have_tool("ss", "backlog_sets_the_listen_queue") {
        return;
    }
    let scratch = Scratch::new("backlog");
    let (_forkd, addr, _) = serve(
        &scratch,
        "listen = [\"tcp://127.0.0.1:0\"]\nhandler = \"echo\"\nbacklog = 77",
    );
    let port: u16 = addr.rsplit(':').next().unwrap().parse().unwrap();
    assert_eq!(listen_backlog(port), Some(77));
    let scratch = Scratch::new("backlog-default");
    let (_forkd, addr, _) = serve(
        &scratch,
        "listen = [\"tcp://127.0.0.1:0\"]\nhandler = \"echo\"",
    );
    let port: u16 = addr.rsplit(':').next().unwrap().parse().unwrap();
    let somaxconn: u32 = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(listen_backlog(port), Some(4096.min(somaxconn)));
}

/// TCP_NODELAY on the server's end of `client`, read from the worker that
/// holds it (pidfd_getfd(2) takes a copy of its descriptor).
fn server_nodelay(worker: i32, client: &TcpStream) -> Option<bool> {
    // SAFETY: plain syscalls; every returned fd is checked and owned.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, worker, 0) };
    if pidfd < 0 {
        return None;
    }
    // SAFETY: a fresh descriptor.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd as i32) };
    let ours = (client.peer_addr().ok()?, client.local_addr().ok()?);
    for entry in std::fs::read_dir(format!("/proc/{worker}/fd")).ok()? {
        let target: i32 = entry.ok()?.file_name().to_str()?.parse().ok()?;
        // SAFETY: as above.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), target, 0) };
        if fd < 0 {
            continue;
        }
        // SAFETY: a fresh descriptor, a copy of the worker's.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        let stream = TcpStream::from(fd);
        if (stream.local_addr().ok(), stream.peer_addr().ok()) == (Some(ours.0), Some(ours.1)) {
            return stream.nodelay().ok();
        }
    }
    None
}

fn nodelay_of_a_prefork_connection(setting: &str) -> bool {
    let scratch = Scratch::new("nodelay");
    let (forkd, addr, socket) = serve(
        &scratch,
        &format!("listen = [\"tcp://127.0.0.1:0\"]\nmode = \"prefork\"\nworkers = 1\nhandler = \"echo\"\n{setting}"),
    );
    let mut client = tcp(&addr);
    echo_exchange(&mut client, b"hello\n");
    let worker = service_status(&socket)["workers"][0]["pid"]
        .as_i64()
        .unwrap() as i32;
    let nodelay = server_nodelay(worker, &client).expect("the worker holds the connection");
    drop(forkd);
    nodelay
}

#[test]
fn tcp_nodelay_is_set_on_accepted_connections_unless_turned_off() {
    if !running_as_root(
        "tcp_nodelay_is_set_on_accepted_connections_unless_turned_off",
        "take a copy of a worker's socket with pidfd_getfd(2)",
    ) {
        return;
    }
    assert!(nodelay_of_a_prefork_connection(""), "default: on");
    assert!(!nodelay_of_a_prefork_connection("tcp_nodelay = false"));
}

#[test]
fn an_ipv6_listener_serves_ipv6_clients() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        skip(
            "an_ipv6_listener_serves_ipv6_clients",
            "::1 cannot be bound here",
        );
        return;
    }
    for mode in ["fork", "prefork", "event"] {
        let scratch = Scratch::new(&format!("ipv6-{mode}"));
        let (_forkd, addr, _) = serve(
            &scratch,
            &format!("listen = [\"tcp://[::1]:0\"]\nmode = \"{mode}\"\nhandler = \"echo\""),
        );
        assert!(addr.starts_with("[::1]:"), "{addr}");
        let mut client = tcp(&addr);
        echo_exchange(&mut client, format!("over ipv6 in {mode}\n").as_bytes());
    }
}

#[test]
fn an_exec_programs_stderr_reaches_forkds_log() {
    let scratch = Scratch::new("exec-stderr");
    let (forkd, addr, _) = serve(
        &scratch,
        "listen = [\"tcp://127.0.0.1:0\"]\nhandler = \"exec\"\ncommand = [\"/bin/sh\", \"-c\", \"echo complaint from $TCPREMOTEIP >&2; cat\"]",
    );
    let mut client = tcp(&addr);
    client.write_all(b"ping\n").unwrap();
    let mut got = [0u8; 5];
    client.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"ping\n");
    // The program writes to forkd's own stderr (inetd's way): the line is
    // there as the program wrote it.
    let line = forkd.log.wait_line("complaint from 127.0.0.1", T);
    assert_eq!(line, "complaint from 127.0.0.1");
}

#[test]
fn status_counts_live_connections_refusals_and_accepts() {
    for mode in ["fork", "prefork", "event"] {
        let scratch = Scratch::new(&format!("counters-{mode}"));
        let (_forkd, addr, socket) = serve(
            &scratch,
            &format!("listen = [\"tcp://127.0.0.1:0\"]\nmode = \"{mode}\"\nworkers = 4\nhandler = \"echo\"\nper_ip = 2"),
        );
        let mut a = tcp(&addr);
        let mut b = tcp(&addr);
        echo_exchange(&mut a, b"a\n");
        echo_exchange(&mut b, b"b\n");
        wait_until("two live connections", T, || {
            service_status(&socket)["connections"] == 2
        });
        let mut c = tcp(&addr);
        let _ = c.write_all(b"c\n");
        let mut buf = [0u8; 4];
        assert!(
            matches!(c.read(&mut buf), Ok(0) | Err(_)),
            "{mode}: the third was served"
        );
        wait_until("the refusal is counted", T, || {
            service_status(&socket)["refused"] == 1
        });
        drop((a, b));
        wait_until("no live connection left, two accepted", T, || {
            let s = service_status(&socket);
            s["connections"] == 0 && s["accepted"] == 2
        });
        let table = forkctl(&socket, &["status", "echo"]);
        assert!(table.stdout.contains("echo"), "{}", table.stdout);
    }
}

#[test]
fn refusals_are_logged_once_then_summarised_every_10s() {
    let scratch = Scratch::new("refusal-summary");
    let (forkd, addr, _) = serve(
        &scratch,
        "listen = [\"tcp://127.0.0.1:0\"]\nhandler = \"echo\"\nper_ip = 1",
    );
    let mut held = tcp(&addr);
    echo_exchange(&mut held, b"the one allowed\n");
    let refuse = || {
        let mut c = tcp(&addr);
        let _ = c.write_all(b"x\n");
        let mut buf = [0u8; 4];
        assert!(matches!(c.read(&mut buf), Ok(0) | Err(_)), "was served");
    };
    refuse();
    let first = forkd
        .log
        .wait_line("refused a connection: per_ip limit reached", T);
    assert!(first.contains("summarised every 10s"), "{first}");
    for _ in 0..5 {
        refuse();
    }
    let summary = forkd
        .log
        .wait_line("x5 in the last 10s", Duration::from_secs(15));
    assert!(summary.contains("per_ip limit reached"), "{summary}");
    assert_eq!(
        forkd.log.count("per_ip limit reached"),
        2,
        "six refusals, two lines"
    );
}
