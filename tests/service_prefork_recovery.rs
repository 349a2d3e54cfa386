//! A prefork worker SIGKILLed in the middle of a connection is reaped,
//! logged in the operator's words and replaced in the same scoreboard slot
//! by a new process; `max_requests` recycles a worker after N connections.

mod common;

use std::time::Duration;

use common::*;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// `service "echo" worker #I started (pid P)` → P, for every such line.
fn started_pids(log: &LogLines, index: usize) -> Vec<i32> {
    let tag = format!("service \"echo\" worker #{index} started (pid ");
    log.snapshot()
        .iter()
        .filter_map(|l| l.find(&tag).map(|at| &l[at + tag.len()..]))
        .map(|rest| rest.trim_end_matches(')').parse().unwrap())
        .collect()
}

#[test]
fn sigkilled_prefork_worker_is_replaced_in_its_slot() {
    let scratch = Scratch::new("prefork-kill");
    let config = service_config(
        &scratch,
        "listen = [\"tcp://127.0.0.1:0\"]\nmode = \"prefork\"\nworkers = 1\nhandler = \"echo\"",
    );
    let forkd = Forkd::start(&config);
    let addr = bound_address(&forkd.log, "echo", "tcp://");
    forkd
        .log
        .wait_line("worker #0 started", Duration::from_secs(5));
    let old = started_pids(&forkd.log, 0)[0];
    let mut client = tcp(&addr);
    echo_exchange(&mut client, b"mid connection\n");
    kill(Pid::from_raw(old), Signal::SIGKILL).unwrap();
    forkd.log.wait_line(
        &format!("worker #0 (pid {old}) killed by SIGKILL"),
        Duration::from_secs(5),
    );
    forkd
        .log
        .wait_count("worker #0 started", 2, Duration::from_secs(5));
    let new = started_pids(&forkd.log, 0)[1];
    assert_ne!(new, old);
    wait_until(
        "forkd's only child is the new worker",
        Duration::from_secs(5),
        || children(forkd.pid()) == vec![new],
    );
    let mut again = tcp(&addr);
    echo_exchange(&mut again, b"served by the replacement\n");
    common::wait_no_zombies(forkd.pid());
}

#[test]
fn every_killed_worker_of_a_pool_is_replaced() {
    let scratch = Scratch::new("prefork-kill-all");
    let config = service_config(
        &scratch,
        "listen = [\"tcp://127.0.0.1:0\"]\nmode = \"prefork\"\nworkers = 3\nhandler = \"echo\"",
    );
    let forkd = Forkd::start(&config);
    let addr = bound_address(&forkd.log, "echo", "tcp://");
    forkd
        .log
        .wait_line("worker #2 started", Duration::from_secs(5));
    let old: Vec<i32> = (0..3).map(|i| started_pids(&forkd.log, i)[0]).collect();
    for pid in &old {
        kill(Pid::from_raw(*pid), Signal::SIGKILL).unwrap();
    }
    for i in 0..3 {
        let tag = format!("worker #{i} started");
        forkd.log.wait_count(&tag, 2, Duration::from_secs(10));
    }
    wait_until("three new workers", Duration::from_secs(5), || {
        let now = children(forkd.pid());
        now.len() == 3 && now.iter().all(|p| !old.contains(p))
    });
    echo_exchange(&mut tcp(&addr), b"pool is back\n");
}

#[test]
fn max_requests_recycles_a_worker() {
    let scratch = Scratch::new("prefork-recycle");
    let config = service_config(
        &scratch,
        "listen = [\"tcp://127.0.0.1:0\"]\nmode = \"prefork\"\nworkers = 1\nmax_requests = 3\nhandler = \"echo\"",
    );
    let forkd = Forkd::start(&config);
    let addr = bound_address(&forkd.log, "echo", "tcp://");
    for i in 0..4 {
        echo_exchange(&mut tcp(&addr), format!("request {i}\n").as_bytes());
    }
    forkd.log.wait_line(
        "recycled after 3 connections (max_requests)",
        Duration::from_secs(5),
    );
    forkd
        .log
        .wait_count("worker #0 started", 2, Duration::from_secs(5));
}
