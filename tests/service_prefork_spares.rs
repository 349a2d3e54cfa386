//! prefork with `min_spare`/`max_spare`: the supervisor reads the idle
//! count from the scoreboard once a second, starts workers below
//! `min_spare` idle ones (up to `max_workers`) and retires idle workers
//! above `max_spare` (one per tick), like Apache's spare-server upkeep.

mod common;

use std::time::Duration;

use common::*;

#[test]
fn idle_workers_above_max_spare_are_retired() {
    let scratch = Scratch::new("spares");
    let config = service_config(
        &scratch,
        "listen = [\"tcp://127.0.0.1:0\"]\nmode = \"prefork\"\nworkers = 4\nmin_spare = 1\nmax_spare = 2\nmax_workers = 8\nhandler = \"echo\"",
    );
    let forkd = Forkd::start(&config);
    let addr = bound_address(&forkd.log, "echo", "tcp://");
    forkd
        .log
        .wait_line("worker #3 started", Duration::from_secs(5));
    forkd
        .log
        .wait_count("(max_spare 2); retiring worker", 2, Duration::from_secs(10));
    wait_until("two workers remain", Duration::from_secs(5), || {
        children(forkd.pid()).len() == 2
    });
    echo_exchange(&mut tcp(&addr), b"still served\n");
    assert_eq!(
        forkd.log.count("replacing it"),
        0,
        "retired workers are not replaced"
    );
}

#[test]
fn busy_workers_grow_the_pool_to_min_spare_idle_but_never_past_max_workers() {
    let scratch = Scratch::new("spares-grow");
    let config = service_config(
        &scratch,
        "listen = [\"tcp://127.0.0.1:0\"]\nmode = \"prefork\"\nworkers = 1\nmin_spare = 2\nmax_spare = 4\nmax_workers = 4\nhandler = \"echo\"",
    );
    let forkd = Forkd::start(&config);
    let addr = bound_address(&forkd.log, "echo", "tcp://");
    let socket = scratch.file("forkd.run").join("control.sock");
    let workers = || {
        status_json(&socket)["services"][0]["workers"]
            .as_array()
            .unwrap()
            .clone()
    };
    let count = |state: &str| workers().iter().filter(|w| w["state"] == state).count();
    // From one worker up to min_spare idle ones.
    wait_until("two idle workers", Duration::from_secs(10), || {
        count("idle") >= 2
    });
    // Keep three busy: the pool grows to max_workers (4), not to 3 + 2.
    let mut held: Vec<_> = (0..3).map(|_| tcp(&addr)).collect();
    for (i, s) in held.iter_mut().enumerate() {
        echo_exchange(s, format!("held {i}\n").as_bytes());
    }
    wait_until("three busy, four workers", Duration::from_secs(10), || {
        count("busy") == 3 && workers().len() == 4
    });
    // Watched over two upkeep ticks (one a second): never past the cap.
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_secs(2) {
        assert!(workers().len() <= 4, "more than max_workers");
        pause();
    }
    assert_eq!(children(forkd.pid()).len(), 4);
    drop(held);
}
