//! prefork with `min_spare`/`max_spare`: the supervisor reads the idle
//! count from the scoreboard once a second and retires idle workers above
//! `max_spare` (one per tick), like Apache's spare-server upkeep.

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
