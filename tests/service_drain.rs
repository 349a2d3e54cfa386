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
