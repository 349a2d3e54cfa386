//! Stopping forkd (SIGTERM) closes the listeners first, lets open
//! connections finish within `drain_timeout`, then stops what is left; forkd
//! exits only after every service process is reaped.

mod common;

use std::time::{Duration, Instant};

use common::*;
use nix::sys::signal::Signal;

fn start(mode: &str, drain: &str) -> (Scratch, Forkd, String) {
    let scratch = Scratch::new(&format!("drain-{mode}"));
    let config = service_config(
        &scratch,
        &format!("listen = [\"tcp://127.0.0.1:0\"]\nmode = \"{mode}\"\nworkers = 2\nhandler = \"echo\"\ndrain_timeout = \"{drain}\""),
    );
    let forkd = Forkd::start(&config);
    let addr = bound_address(&forkd.log, "echo", "tcp://");
    (scratch, forkd, addr)
}

fn open_connection_finishes_after_sigterm(mode: &str) {
    let (_s, mut forkd, addr) = start(mode, "10s");
    let mut client = tcp(&addr);
    echo_exchange(&mut client, b"before stop\n");
    let processes = descendants(forkd.pid());
    forkd.signal(Signal::SIGTERM);
    forkd
        .log
        .wait_line("listeners closed", Duration::from_secs(5));
    wait_until(
        "the port refuses new clients",
        Duration::from_secs(5),
        || std::net::TcpStream::connect(&addr).is_err(),
    );
    echo_exchange(&mut client, b"still served while draining\n");
    drop(client);
    assert_eq!(forkd.wait_exit(Duration::from_secs(5)), Some(0), "{mode}");
    for pid in processes {
        assert!(!alive(pid), "{mode}: pid {pid} outlived forkd");
    }
}

#[test]
fn fork_connection_finishes_after_sigterm() {
    open_connection_finishes_after_sigterm("fork");
}

#[test]
fn prefork_connection_finishes_after_sigterm() {
    open_connection_finishes_after_sigterm("prefork");
}

#[test]
fn event_connection_finishes_after_sigterm() {
    open_connection_finishes_after_sigterm("event");
}

#[test]
fn connections_are_stopped_when_drain_timeout_passes() {
    for mode in ["fork", "prefork", "event"] {
        let (_s, mut forkd, addr) = start(mode, "300ms");
        let mut client = tcp(&addr);
        echo_exchange(&mut client, b"idle after this\n");
        let processes = descendants(forkd.pid());
        let stopped = Instant::now();
        forkd.signal(Signal::SIGTERM);
        assert_eq!(forkd.wait_exit(Duration::from_secs(5)), Some(0), "{mode}");
        assert!(
            stopped.elapsed() >= Duration::from_millis(250),
            "{mode}: did not wait for the drain"
        );
        forkd
            .log
            .wait_line("drain_timeout passed", Duration::from_secs(1));
        for pid in processes {
            assert!(!alive(pid), "{mode}: pid {pid} outlived forkd");
        }
    }
}

#[test]
fn a_reload_that_replaces_a_service_stops_connections_left_at_drain_timeout() {
    for mode in ["fork", "prefork", "event"] {
        let scratch = Scratch::new(&format!("drain-reload-{mode}"));
        let body = |workers: u32| {
            format!("listen = [\"tcp://127.0.0.1:0\"]\nmode = \"{mode}\"\nworkers = {workers}\nhandler = \"echo\"\ndrain_timeout = \"1s\"")
        };
        let config = service_config(&scratch, &body(2));
        let forkd = Forkd::start(&config);
        let addr = bound_address(&forkd.log, "echo", "tcp://");
        let mut held = tcp(&addr);
        echo_exchange(&mut held, b"held across the reload\n");
        service_config(&scratch, &body(3));
        forkd.signal(Signal::SIGHUP);
        forkd
            .log
            .wait_line("reload: echo changed", Duration::from_secs(5));
        // New clients are served by the new service at once.
        echo_exchange(&mut tcp(&addr), b"new client\n");
        let line = forkd
            .log
            .wait_line("drain_timeout passed", Duration::from_secs(10));
        assert!(line.contains("echo"), "{mode}: {line}");
        // The connection held across the reload is closed now.
        let mut buf = [0u8; 8];
        use std::io::Read;
        held.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        assert!(
            matches!(held.read(&mut buf), Ok(0) | Err(_)),
            "{mode}: the connection outlived drain_timeout"
        );
        forkd
            .log
            .wait_line("every old process is down", Duration::from_secs(10));
        wait_no_zombies(forkd.pid());
    }
}

/// An event-mode `http` service drains without waiting out
/// `drain_timeout` for a keep-alive connection idle between requests (a
/// load balancer's pooled connection): that one closes at once, and one
/// in the middle of a request gets its reply, marked the last, first.
#[test]
fn an_event_http_drain_closes_idle_keepalive_connections_and_answers_the_one_in_hand() {
    use std::io::{Read, Write};
    if !have_tool(
        "ss",
        "an_event_http_drain_closes_idle_keepalive_connections",
    ) {
        return;
    }
    let scratch = Scratch::new("drain-http");
    let root = scratch.file("root");
    std::fs::create_dir(&root).unwrap();
    std::fs::write(root.join("index.html"), "hello\n").unwrap();
    let config = service_config(
        &scratch,
        &format!(
            "listen = [\"tcp://127.0.0.1:0\"]\nmode = \"event\"\nworkers = 1\nhandler = \"http\"\nroot = \"{}\"\ndrain_timeout = \"60s\"",
            root.display()
        ),
    );
    let mut forkd = Forkd::start(&config);
    let addr = bound_address(&forkd.log, "echo", "tcp://");
    let request = b"GET / HTTP/1.1\r\nHost: forkd\r\n\r\n";
    let reply_of = |s: &mut std::net::TcpStream| {
        let mut buf = [0u8; 4096];
        let n = s.read(&mut buf).expect("a reply");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };

    let mut idle = tcp(&addr);
    idle.write_all(request).unwrap();
    let first = reply_of(&mut idle);
    assert!(first.starts_with("HTTP/1.1 200 ") && !first.contains("Connection: close"));
    let mut in_hand = tcp(&addr);
    in_hand.write_all(request).unwrap();
    assert!(reply_of(&mut in_hand).starts_with("HTTP/1.1 200 "));
    in_hand.write_all(&request[..20]).unwrap();
    // The worker has read the half request before it is told to drain
    // (one still in the kernel's buffer is a race every HTTP server loses).
    wait_until("the half request read", Duration::from_secs(5), || {
        unread_by_server(&addr, 2) == Some(0)
    });

    forkd.signal(Signal::SIGTERM);
    forkd
        .log
        .wait_line("listeners closed", Duration::from_secs(5));
    let mut rest = [0u8; 64];
    assert_eq!(
        idle.read(&mut rest).expect("a close, not a reset"),
        0,
        "the idle keep-alive connection is closed at once"
    );
    in_hand.write_all(&request[20..]).unwrap();
    let last = reply_of(&mut in_hand);
    assert!(last.starts_with("HTTP/1.1 200 "), "{last}");
    assert!(last.contains("Connection: close\r\n"), "{last}");
    assert_eq!(in_hand.read(&mut rest).unwrap(), 0, "closed after it");
    assert_eq!(forkd.wait_exit(Duration::from_secs(10)), Some(0));
    assert_eq!(forkd.log.count("drain_timeout passed"), 0);
}

/// Bytes waiting unread in the server's sockets of `addr` (`ss`'s
/// Recv-Q, summed), or None if ss failed or lists fewer than `sockets`
/// of them (an empty listing must not read as "all read").
fn unread_by_server(addr: &str, sockets: usize) -> Option<u64> {
    let out = std::process::Command::new("ss")
        .args(["-tnH", "state", "established", "src", addr])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let queues: Option<Vec<u64>> = text
        .lines()
        .map(|l| l.split_whitespace().next()?.parse::<u64>().ok())
        .collect();
    queues
        .filter(|q| q.len() >= sockets)
        .map(|q| q.iter().sum())
}
