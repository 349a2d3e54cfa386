//! 5,120 connections in fork mode, 32 at a time, leave no zombie and no leaked fd in
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
        "listen = [\"tcp://127.0.0.1:0\"]\nmode = \"fork\"\nhandler = \"echo\"",
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
    // 32 clients at once from one address, at the default limits.
    let served = concurrently(32, |t| {
        for i in 0..160 {
            echo_exchange(
                &mut tcp(&addr),
                format!("client {t} connection {i}\n").as_bytes(),
            );
        }
        160
    });
    assert_eq!(served, 5120);
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
