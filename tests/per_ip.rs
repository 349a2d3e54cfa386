//! `per_ip` counts the connections a client holds open, exactly, in every
//! mode: a client below its limit is never refused however fast it
//! reconnects, the (N+1)th connection it holds open is, and the count holds
//! across a reload.
//!
//! These tests run one at a time (`SERIAL`): a socket this process closes
//! while another of its threads forks (to start forkd or forkctl) stays
//! open in that child until it execs, so the client would really hold one
//! more connection open than it means to, and forkd would rightly count it.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Mutex;
use std::time::Duration;

use common::*;

static SERIAL: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
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
    let _serial = one_at_a_time();
    per_ip_counts_open_connections_exactly("fork", "echo", "");
}

#[test]
fn prefork_mode_per_ip_counts_open_connections_exactly() {
    let _serial = one_at_a_time();
    // One connection per worker: room for the 8 held open and the 9th.
    per_ip_counts_open_connections_exactly("prefork", "echo", "workers = 10");
}

#[test]
fn event_mode_per_ip_holds_across_two_workers() {
    let _serial = one_at_a_time();
    per_ip_counts_open_connections_exactly("event", "echo", "workers = 2");
}

#[test]
fn exec_mode_per_ip_counts_open_connections_exactly() {
    let _serial = one_at_a_time();
    per_ip_counts_open_connections_exactly("fork", "exec", "command = [\"/bin/cat\"]");
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
    let _serial = one_at_a_time();
    per_ip_holds_across_a_reload("fork");
}

#[test]
fn prefork_mode_per_ip_holds_across_a_reload() {
    let _serial = one_at_a_time();
    per_ip_holds_across_a_reload("prefork");
}

#[test]
fn event_mode_per_ip_holds_across_a_reload() {
    let _serial = one_at_a_time();
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
    let _serial = one_at_a_time();
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
