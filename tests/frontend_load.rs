//! The front end under the load a real deployment sends: every connection
//! from one address (a reverse proxy, a load balancer, a local load test),
//! with the defaults a user gets. No limit is switched off here; `per_ip`
//! has its own file (`per_ip.rs`).

mod common;

use std::io::{Read, Write};
use std::time::Instant;

use common::*;

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
