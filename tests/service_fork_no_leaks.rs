//! 5,000 connections in fork mode leave no zombie and no leaked fd in
//! forkd: every per-connection child is reaped and the parent's copy of
//! every connection is closed (trap 15).

mod common;

use std::time::Duration;

use common::*;

#[test]
fn five_thousand_fork_connections_leave_no_zombie_and_no_fd() {
    let scratch = Scratch::new("fork-leaks");
    let config = service_config(
        &scratch,
        "listen = [\"tcp://127.0.0.1:0\"]\nmode = \"fork\"\nhandler = \"echo\"\nmax_connections = 64\nper_ip = 0",
    );
    let forkd = Forkd::start(&config);
    let addr = bound_address(&forkd.log, "echo", "tcp://");
    echo_exchange(&mut tcp(&addr), b"warm up\n");
    wait_until(
        "the warm-up child is reaped",
        Duration::from_secs(5),
        || children(forkd.pid()).is_empty(),
    );
    let baseline = fd_count(forkd.pid());
    let served = concurrently(8, |t| {
        for i in 0..625 {
            echo_exchange(
                &mut tcp(&addr),
                format!("client {t} connection {i}\n").as_bytes(),
            );
        }
        625
    });
    assert_eq!(served, 5000);
    wait_until(
        "every connection child is reaped",
        Duration::from_secs(10),
        || children(forkd.pid()).is_empty(),
    );
    common::wait_no_zombies(forkd.pid());
    wait_until(
        "forkd's fd count is back to its baseline",
        Duration::from_secs(5),
        || fd_count(forkd.pid()) == baseline,
    );
}
