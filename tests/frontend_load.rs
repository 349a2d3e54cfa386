//! The front end under the load a real deployment sends: every connection
//! from one address (a reverse proxy, a load balancer, a local load test),
//! with the defaults a user gets. No limit is switched off here; the tests
//! of `per_ip` set that one key and nothing else.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;

/// Bounds of every load loop, whatever the server does.
const MAX_TIME: Duration = Duration::from_secs(60);

/// A service named "echo" in `mode` with `handler` and nothing else set
/// but `extra`; returns forkd and the bound TCP address.
fn serve(scratch: &Scratch, mode: &str, handler: &str, extra: &str) -> (Forkd, String) {
    let config = service_config(
        scratch,
        &format!(
            "listen = [\"tcp://127.0.0.1:0\"]\nmode = \"{mode}\"\nhandler = \"{handler}\"\n{extra}"
        ),
    );
    let forkd = Forkd::start(&config);
    let addr = bound_address(&forkd.log, "echo", "tcp://");
    (forkd, addr)
}

/// One connection: connect, one line, the reply, close.
fn exchange(addr: &str, msg: &str, upper: bool) -> Result<(), String> {
    let mut s = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(msg.as_bytes())
        .map_err(|e| format!("send: {e}"))?;
    let mut got = vec![0u8; msg.len()];
    s.read_exact(&mut got).map_err(|e| format!("reply: {e}"))?;
    let want = if upper {
        msg.to_ascii_uppercase()
    } else {
        msg.to_string()
    };
    if got != want.as_bytes() {
        return Err(format!("wrong reply {:?}", String::from_utf8_lossy(&got)));
    }
    Ok(())
}

/// `clients` threads each make `each` connections one after another;
/// returns the failures (empty: every connection was answered).
fn load(addr: &str, clients: usize, each: usize, upper: bool) -> Vec<String> {
    let started = Instant::now();
    std::thread::scope(|scope| {
        let threads: Vec<_> = (0..clients)
            .map(|c| {
                scope.spawn(move || {
                    let mut errors = Vec::new();
                    for i in 0..each {
                        if started.elapsed() > MAX_TIME {
                            errors.push(format!("client {c}: out of time at {i}"));
                            break;
                        }
                        let msg = format!("client {c} connection {i}\n");
                        if let Err(e) = exchange(addr, &msg, upper) {
                            errors.push(format!("client {c} connection {i}: {e}"));
                        }
                    }
                    errors
                })
            })
            .collect();
        threads
            .into_iter()
            .flat_map(|t| t.join().expect("client thread"))
            .collect()
    })
}

fn assert_all_answered(what: &str, errors: &[String], total: usize) {
    assert!(
        errors.is_empty(),
        "{what}: {} of {total} connections failed, e.g. {:?}",
        errors.len(),
        &errors[..errors.len().min(5)]
    );
}

/// 3,200 connections from 127.0.0.1, 32 at a time, at the defaults.
fn defaults_serve_32_clients_from_one_address(mode: &str, handler: &str, extra: &str) {
    let scratch = Scratch::new(&format!("load-{mode}-{handler}"));
    let (forkd, addr) = serve(&scratch, mode, handler, extra);
    let errors = load(&addr, 32, 100, handler == "echo");
    assert_all_answered(&format!("{mode}/{handler}"), &errors, 3200);
    assert_eq!(forkd.log.count("refused"), 0, "{mode}: nothing was refused");
    wait_no_zombies(forkd.pid());
}

#[test]
fn fork_mode_at_the_defaults_answers_3200_connections_from_one_address_at_c32() {
    defaults_serve_32_clients_from_one_address("fork", "echo", "");
}

#[test]
fn prefork_mode_at_the_defaults_answers_3200_connections_from_one_address_at_c32() {
    defaults_serve_32_clients_from_one_address("prefork", "echo", "");
}

#[test]
fn event_mode_at_the_defaults_answers_3200_connections_from_one_address_at_c32() {
    defaults_serve_32_clients_from_one_address("event", "echo", "");
}

#[test]
fn exec_mode_at_the_defaults_answers_3200_connections_from_one_address_at_c32() {
    defaults_serve_32_clients_from_one_address("fork", "exec", "command = [\"/bin/cat\"]");
}

/// True if the server closed `s` without answering (EOF or reset).
fn refused(s: &mut TcpStream) -> bool {
    let _ = s.write_all(b"anyone?\n");
    let mut buf = [0u8; 16];
    match s.read(&mut buf) {
        Ok(0) => true,
        Err(e) => matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::BrokenPipe),
        Ok(_) => false,
    }
}

/// `per_ip = 8`: a client that never holds more than 7 open is never
/// refused, however fast it reconnects; with 8 held open the 9th is
/// refused, and a place freed by the client is usable at once.
fn per_ip_counts_open_connections_exactly(mode: &str, handler: &str, extra: &str) {
    let scratch = Scratch::new(&format!("per-ip-{mode}-{handler}"));
    let (forkd, addr) = serve(&scratch, mode, handler, &format!("per_ip = 8\n{extra}"));
    let upper = handler == "echo";
    let errors = load(&addr, 7, 450, upper);
    assert_all_answered(
        &format!("{mode}/{handler} at c=7, per_ip = 8"),
        &errors,
        3150,
    );
    assert_eq!(forkd.log.count("per_ip limit reached"), 0);

    let mut held: Vec<TcpStream> = (0..8).map(|_| tcp(&addr)).collect();
    for (i, s) in held.iter_mut().enumerate() {
        let msg = format!("held {i}\n");
        s.write_all(msg.as_bytes()).unwrap();
        let mut got = vec![0u8; msg.len()];
        s.read_exact(&mut got).expect("each of the 8 is served");
    }
    let mut ninth = tcp(&addr);
    assert!(
        refused(&mut ninth),
        "{mode}: a 9th connection held open was served"
    );
    forkd
        .log
        .wait_line("per_ip limit reached", Duration::from_secs(5));
    let socket = scratch.file("forkd.run").join("control.sock");
    wait_until(
        "forkctl status counts the refusal",
        Duration::from_secs(5),
        || status_json(&socket)["services"][0]["refused"] == 1,
    );
    // The client closes one: the next is served at once, even before the
    // server side has noticed the close.
    drop(held.pop());
    exchange(&addr, "after a close\n", upper).expect("served after a close");
    drop(held);
    wait_no_zombies(forkd.pid());
}

#[test]
fn fork_mode_per_ip_counts_open_connections_exactly() {
    per_ip_counts_open_connections_exactly("fork", "echo", "");
}

#[test]
fn prefork_mode_per_ip_counts_open_connections_exactly() {
    // One connection per worker: room for the 8 held open and the 9th.
    per_ip_counts_open_connections_exactly("prefork", "echo", "workers = 10");
}

#[test]
fn event_mode_per_ip_holds_across_two_workers() {
    per_ip_counts_open_connections_exactly("event", "echo", "workers = 2");
}

#[test]
fn exec_mode_per_ip_counts_open_connections_exactly() {
    per_ip_counts_open_connections_exactly("fork", "exec", "command = [\"/bin/cat\"]");
}

/// Resident memory of a process, in KiB.
fn rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

#[test]
fn event_mode_at_the_defaults_holds_10000_idle_connections_from_one_address() {
    const IDLE: usize = 10_000;
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    // The test holds both ends' client side: it needs the descriptors.
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    let want = (IDLE as u64) + 1000;
    if hard < want {
        skip(
            "event_mode_at_the_defaults_holds_10000_idle_connections_from_one_address",
            &format!("the RLIMIT_NOFILE hard limit {hard} is below {want}; raise it (ulimit -Hn)"),
        );
        return;
    }
    setrlimit(Resource::RLIMIT_NOFILE, want.max(hard.min(1 << 20)), hard).unwrap();
    let scratch = Scratch::new("event-idle");
    let (forkd, addr) = serve(&scratch, "event", "echo", "");
    let mut conns = Vec::with_capacity(IDLE);
    let started = Instant::now();
    for _ in 0..IDLE {
        assert!(
            started.elapsed() < MAX_TIME,
            "out of time opening connections"
        );
        conns.push(tcp(&addr));
    }
    // Every one of them answers, the first opened as well as the last.
    for (i, s) in conns.iter_mut().enumerate() {
        let msg = format!("idle {i}\n");
        s.write_all(msg.as_bytes()).unwrap();
        let mut got = vec![0u8; msg.len()];
        s.read_exact(&mut got)
            .unwrap_or_else(|e| panic!("connection {i} of {IDLE} did not answer: {e}"));
        assert_eq!(got, msg.to_ascii_uppercase().as_bytes());
    }
    let status = status_json(&scratch.file("forkd.run").join("control.sock"));
    assert_eq!(status["services"][0]["connections"], IDLE as u64);
    let workers: Vec<i32> = children(forkd.pid());
    let total: u64 = rss_kib(forkd.pid()) + workers.iter().map(|w| rss_kib(*w)).sum::<u64>();
    // Written past libtest's capture, so the figure shows in every run.
    use std::io::Write as _;
    let _ = writeln!(
        std::io::stderr().lock(),
        "{IDLE} idle connections: forkd {} KiB, {} workers {} KiB, {:.1} MiB in all",
        rss_kib(forkd.pid()),
        workers.len(),
        total - rss_kib(forkd.pid()),
        total as f64 / 1024.0
    );
    assert_eq!(forkd.log.count("refused"), 0);
}

/// Across a reload that replaces the service, connections the old one
/// still drains go on counting against their client.
fn per_ip_holds_across_a_reload(mode: &str) {
    let scratch = Scratch::new(&format!("per-ip-reload-{mode}"));
    let body = |workers: u32| format!("per_ip = 2\nworkers = {workers}");
    let (forkd, addr) = serve(&scratch, mode, "echo", &body(4));
    let mut held: Vec<TcpStream> = (0..2).map(|_| tcp(&addr)).collect();
    for s in held.iter_mut() {
        echo_exchange(s, b"held\n");
    }
    let config = forkd.config.clone();
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, text.replace("workers = 4", "workers = 5")).unwrap();
    forkd.signal(nix::sys::signal::Signal::SIGHUP);
    forkd
        .log
        .wait_line("reload: echo changed (workers", Duration::from_secs(5));
    let mut third = tcp(&addr);
    assert!(
        refused(&mut third),
        "{mode}: a third connection was served after the reload"
    );
    drop(held.pop());
    exchange(&addr, "after a close\n", true).expect("served after a close");
}

#[test]
fn fork_mode_per_ip_holds_across_a_reload() {
    per_ip_holds_across_a_reload("fork");
}

#[test]
fn prefork_mode_per_ip_holds_across_a_reload() {
    per_ip_holds_across_a_reload("prefork");
}

#[test]
fn event_mode_per_ip_holds_across_a_reload() {
    per_ip_holds_across_a_reload("event");
}

/// Waits until the kernel has delivered a client's FIN for the connection
/// from local `port`: the client's end is past FIN_WAIT1 (acked), so the
/// server's end is in CLOSE_WAIT.
fn wait_fin_delivered(port: u16) {
    let hex = format!(":{port:04X} ");
    wait_until(
        "the client's FIN reached the server",
        Duration::from_secs(5),
        || {
            let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
            table
                .lines()
                .filter(|l| {
                    l.split_whitespace()
                        .nth(1)
                        .is_some_and(|a| format!("{a} ").ends_with(&hex))
                })
                // Not ESTABLISHED (01) nor FIN_WAIT1 (04): our FIN was acked.
                .all(|l| !matches!(l.split_whitespace().nth(3), Some("01" | "04")))
        },
    );
}

#[test]
fn per_ip_does_not_count_a_connection_its_client_closed_while_the_server_still_holds_it() {
    // The program answers one line, then holds the socket without reading
    // it: it never notices that the client went away.
    let scratch = Scratch::new("per-ip-closed");
    let (_forkd, addr) = serve(
        &scratch,
        "fork",
        "exec",
        "per_ip = 2\ncommand = [\"/bin/sh\", \"-c\", \"head -n 1; exec sleep 30\"]",
    );
    let mut held: Vec<TcpStream> = (0..2).map(|_| tcp(&addr)).collect();
    for (i, s) in held.iter_mut().enumerate() {
        let msg = format!("held {i}\n");
        s.write_all(msg.as_bytes()).unwrap();
        let mut got = vec![0u8; msg.len()];
        s.read_exact(&mut got).expect("served");
    }
    let mut third = tcp(&addr);
    assert!(refused(&mut third), "a third one held open was served");
    let closed = held.pop().unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    wait_fin_delivered(port);
    exchange(&addr, "in the place the client freed\n", false)
        .expect("served although the server side still holds the closed one");
}
