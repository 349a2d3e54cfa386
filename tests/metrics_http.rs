//! `[daemon] metrics_listen`: forkd serves `GET /metrics` (the text of
//! `forkctl metrics`) and `GET /healthz` (200, or 503 with the reasons)
//! over HTTP from its loop; a bad request gets 400, 404 or 405 and
//! disturbs nothing else. Loopback only.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::*;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const T: Duration = Duration::from_secs(10);

/// Sends `request` on a new connection and reads the whole reply (forkd
/// closes after it): (status code, head, body).
fn http(addr: &str, request: &[u8]) -> (u16, String, String) {
    let mut stream = TcpStream::connect(addr).expect("connect to metrics_listen");
    stream.set_read_timeout(Some(T)).unwrap();
    stream.write_all(request).unwrap();
    let mut reply = String::new();
    stream
        .read_to_string(&mut reply)
        .expect("a whole reply, then close");
    let (head, body) = reply.split_once("\r\n\r\n").expect("a head and a body");
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap();
    (status, head.to_string(), body.to_string())
}

fn get(addr: &str, path: &str) -> (u16, String, String) {
    let request = format!("GET {path} HTTP/1.1\r\nHost: forkd\r\n\r\n");
    http(addr, request.as_bytes())
}

#[test]
fn metrics_and_healthz_over_http_and_bad_requests_are_refused() {
    let dir = Scratch::new("metrics-http");
    let addr = format!("127.0.0.1:{}", free_port());
    let body = format!(
        r#"metrics_listen = "tcp://{addr}"

[[program]]
name = "flaky"
command = ["/bin/sleep", "1000"]
restart = "never"
ready_after = "200ms"
"#
    );
    let (forkd, socket) = start_with_control(&dir, &body);
    forkd.log.wait_line("metrics listening on http://", T);

    let (status, head, text) = get(&addr, "/metrics");
    assert_eq!(status, 200, "{head}");
    assert!(
        head.contains("Content-Type: text/plain; version=0.0.4"),
        "{head}"
    );
    assert!(head.contains("Connection: close"), "{head}");
    assert!(
        text.contains("forkd_program_up{program=\"flaky\",instance=\"0\"} 1\n"),
        "{text}"
    );

    wait_until("/healthz says healthy", T, || {
        get(&addr, "/healthz").0 == 200
    });
    assert_eq!(get(&addr, "/healthz").2, "{\"healthy\":true}\n");

    // A client that sends half a request holds one slot, no more.
    let mut idle = TcpStream::connect(&addr).unwrap();
    idle.write_all(b"GET /met").unwrap();

    let pid = instance_states(&socket, "flaky")[0].1.unwrap();
    kill(Pid::from_raw(pid as i32), Signal::SIGKILL).unwrap();
    wait_until("/healthz says 503", T, || get(&addr, "/healthz").0 == 503);
    let (_, _, health) = get(&addr, "/healthz");
    let health: serde_json::Value = serde_json::from_str(&health).unwrap();
    assert_eq!(health["healthy"], false);
    assert!(
        health["reasons"][0]
            .as_str()
            .is_some_and(|r| r.starts_with("flaky#0 is ")),
        "{health}"
    );

    let (status, head, _) = http(&addr, b"POST /metrics HTTP/1.1\r\nHost: forkd\r\n\r\n");
    assert_eq!(status, 405, "{head}");
    assert!(head.contains("Allow: GET"), "{head}");
    assert_eq!(get(&addr, "/nothing-here").0, 404);
    assert_eq!(http(&addr, b"\x01\x02 not http\r\n\r\n").0, 400);

    // Nothing else was disturbed.
    assert_eq!(get(&addr, "/metrics").0, 200);
    assert_eq!(forkctl(&socket, &["version"]).code, 0);
    drop(idle);
}

/// The status code of a GET, or `None` when forkd closed without one.
fn try_get(addr: &str, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(T)).unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: forkd\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply).ok()?;
    reply.split(' ').nth(1)?.parse().ok()
}

#[test]
fn metrics_connections_past_the_cap_are_closed_and_a_freed_slot_serves_again() {
    let dir = Scratch::new("metrics-http-cap");
    let addr = format!("127.0.0.1:{}", free_port());
    let body = format!("metrics_listen = \"tcp://{addr}\"\n");
    let (forkd, socket) = start_with_control(&dir, &body);
    forkd.log.wait_line("metrics listening on http://", T);
    let mut held: Vec<TcpStream> = (0..16)
        .map(|_| {
            let mut s = TcpStream::connect(&addr).unwrap();
            s.write_all(b"GET /metrics HTTP/1.1\r\n").unwrap();
            s
        })
        .collect();
    assert_eq!(
        try_get(&addr, "/metrics"),
        None,
        "a 17th is closed unanswered"
    );
    forkd.log.wait_line(
        "metrics_listen: 16 connections are open; closed a new one",
        T,
    );
    assert_eq!(
        forkctl(&socket, &["version"]).code,
        0,
        "the loop still serves"
    );

    // Finishing a held request answers it and frees its slot.
    held[0].write_all(b"\r\n").unwrap();
    held[0].set_read_timeout(Some(T)).unwrap();
    let mut reply = String::new();
    held[0].read_to_string(&mut reply).unwrap();
    assert!(reply.starts_with("HTTP/1.1 200 OK\r\n"), "{reply}");
    wait_until("a freed slot serves", T, || {
        try_get(&addr, "/metrics") == Some(200)
    });
    drop(held);
}

/// A program that goes FATAL makes `/healthz` 503, naming it; once the
/// cause is gone, `forkctl start` brings it back and `/healthz` is 200.
#[test]
fn healthz_is_503_while_a_program_is_fatal_and_200_after_forkctl_start() {
    let dir = Scratch::new("metrics-http-fatal");
    let addr = format!("127.0.0.1:{}", free_port());
    let marker = dir.file("may-run");
    let body = format!(
        r#"metrics_listen = "tcp://{addr}"

[[program]]
name = "needy"
command = ["/bin/sh", "-c", "test -e {} && exec sleep 1000; exit 3"]
backoff_initial = "20ms"
backoff_max = "50ms"
start_retries = 1
"#,
        marker.display()
    );
    let (forkd, socket) = start_with_control(&dir, &body);
    forkd.log.wait_line("metrics listening on http://", T);
    wait_until("needy is fatal", T, || {
        instance_states(&socket, "needy")[0].0 == "fatal"
    });
    let (status, _, health) = get(&addr, "/healthz");
    assert_eq!(status, 503, "{health}");
    let health: serde_json::Value = serde_json::from_str(&health).unwrap();
    let reason = health["reasons"][0].as_str().unwrap_or_default();
    assert!(
        reason.starts_with("needy#0 is ") && reason.contains("fatal"),
        "{health}"
    );

    std::fs::write(&marker, b"").unwrap();
    assert_eq!(forkctl(&socket, &["start", "needy"]).code, 0);
    wait_until("/healthz says 200 again", T, || {
        get(&addr, "/healthz").0 == 200
    });
    assert_eq!(get(&addr, "/healthz").2, "{\"healthy\":true}\n");
}
