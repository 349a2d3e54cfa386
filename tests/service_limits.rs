//! Limits in every mode: `max_connections` makes further clients wait in
//! the backlog, `per_ip` refuses with a close (and says so in the log,
//! once), and `idle_timeout` cuts a silent client.

mod common;

use std::io::{ErrorKind, Read};
use std::time::{Duration, Instant};

use common::*;

fn start(mode: &str, limits: &str) -> (Scratch, Forkd, String) {
    let scratch = Scratch::new(&format!("limits-{mode}"));
    let workers = if mode == "event" { 1 } else { 4 };
    let config = service_config(
        &scratch,
        &format!("listen = [\"tcp://127.0.0.1:0\"]\nmode = \"{mode}\"\nworkers = {workers}\nhandler = \"echo\"\n{limits}"),
    );
    let forkd = Forkd::start(&config);
    let addr = bound_address(&forkd.log, "echo", "tcp://");
    (scratch, forkd, addr)
}

/// True if nothing arrives on `s` within `within` (the client is waiting).
fn stays_silent(s: &mut std::net::TcpStream, within: Duration) -> bool {
    s.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 16];
    let silent = matches!(s.read(&mut buf), Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut));
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    silent
}

fn max_connections_holds_extra_clients_in_the_backlog(mode: &str) {
    let (_scratch, _forkd, addr) = start(mode, "max_connections = 2");
    let mut a = tcp(&addr);
    let mut b = tcp(&addr);
    echo_exchange(&mut a, b"first\n");
    echo_exchange(&mut b, b"second\n");
    let mut c = tcp(&addr);
    use std::io::Write;
    c.write_all(b"third\n").unwrap();
    assert!(
        stays_silent(&mut c, Duration::from_millis(300)),
        "{mode}: a third client was served beyond max_connections = 2"
    );
    drop(a);
    let mut got = [0u8; 6];
    c.read_exact(&mut got)
        .expect("served once a place was free");
    assert_eq!(&got, b"THIRD\n");
    echo_exchange(&mut b, b"still here\n");
}

fn per_ip_refuses_with_a_close(mode: &str) {
    let (_scratch, forkd, addr) = start(mode, "per_ip = 2");
    let mut a = tcp(&addr);
    let mut b = tcp(&addr);
    echo_exchange(&mut a, b"one\n");
    echo_exchange(&mut b, b"two\n");
    let mut c = tcp(&addr);
    assert!(
        closed_by_server(&mut c),
        "{mode}: a third connection from one IP was not refused"
    );
    forkd.log.wait_line(
        "refused a connection: per_ip limit reached",
        Duration::from_secs(5),
    );
    drop(a);
    // The place is free again (bounded retries: the release is asynchronous).
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut d = tcp(&addr);
        use std::io::Write;
        d.write_all(b"x").unwrap();
        let mut one = [0u8; 1];
        if d.read(&mut one).is_ok_and(|n| n == 1) {
            assert_eq!(&one, b"X");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{mode}: per_ip place never freed"
        );
        pause();
    }
}

fn idle_client_is_cut_at_idle_timeout(mode: &str) {
    let (_scratch, forkd, addr) = start(mode, "idle_timeout = \"300ms\"");
    let mut a = tcp(&addr);
    // Timed from before the last request: the server's idle clock starts
    // when it reads it, which is later, so the cut is at least 300 ms on.
    let started = Instant::now();
    echo_exchange(&mut a, b"hello\n");
    assert!(closed_by_server(&mut a), "{mode}: idle client was not cut");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(295),
        "{mode}: cut too early ({waited:?})"
    );
    assert!(
        waited < Duration::from_secs(3),
        "{mode}: cut too late ({waited:?})"
    );
    forkd
        .log
        .wait_line("cut a connection at idle_timeout", Duration::from_secs(5));
}

#[test]
fn fork_max_connections_holds_extra_clients_in_the_backlog() {
    max_connections_holds_extra_clients_in_the_backlog("fork");
}

#[test]
fn prefork_max_connections_holds_extra_clients_in_the_backlog() {
    max_connections_holds_extra_clients_in_the_backlog("prefork");
}

#[test]
fn event_max_connections_holds_extra_clients_in_the_backlog() {
    max_connections_holds_extra_clients_in_the_backlog("event");
}

#[test]
fn fork_per_ip_refuses_with_a_close() {
    per_ip_refuses_with_a_close("fork");
}

#[test]
fn prefork_per_ip_refuses_with_a_close() {
    per_ip_refuses_with_a_close("prefork");
}

#[test]
fn event_per_ip_refuses_with_a_close() {
    per_ip_refuses_with_a_close("event");
}

#[test]
fn fork_idle_client_is_cut_at_idle_timeout() {
    idle_client_is_cut_at_idle_timeout("fork");
}

#[test]
fn prefork_idle_client_is_cut_at_idle_timeout() {
    idle_client_is_cut_at_idle_timeout("prefork");
}

#[test]
fn event_idle_client_is_cut_at_idle_timeout() {
    idle_client_is_cut_at_idle_timeout("event");
}
