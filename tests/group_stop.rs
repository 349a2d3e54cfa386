//! Stopping a program stops all of it: when the main process exits on its
//! own, what it left in its process group gets `stop_signal`, SIGKILL at
//! `stop_timeout`, and is reaped; the restart waits for that.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{log_time, proc_stat, wait_no_zombies, wait_until, Forkd, KillOnDrop, Scratch};

/// Reads a pid a program wrote (through a rename, so never half-written).
fn pid_in(path: &Path) -> i32 {
    wait_until(
        &format!("{}", path.display()),
        Duration::from_secs(10),
        || path.exists(),
    );
    std::fs::read_to_string(path)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// A leader that starts two members of its group, one that dies of
/// SIGTERM and one that ignores it, writes their pids, then exits 3.
fn crashing_leader(dir: &Scratch, restart: &str) -> String {
    let d = dir.path.display();
    format!(
        r#"
[[program]]
name = "leader"
command = ["/bin/sh", "-c", """
n=$(cat {d}/runs 2>/dev/null || echo 0); echo $((n+1)) > {d}/runs
if [ "$n" != 0 ]; then exec sleep 1000; fi
sleep 1000 & echo $! > {d}/soft.tmp; mv {d}/soft.tmp {d}/soft
(trap '' TERM; exec sleep 1000) & echo $! > {d}/hard.tmp; mv {d}/hard.tmp {d}/hard
exit 3
"""]
restart = "{restart}"
backoff_initial = "0s"
backoff_max = "0s"
stop_timeout = "1s"
"#
    )
}

#[test]
fn a_crashed_leaders_group_is_stopped_within_stop_timeout_and_reaped() {
    let dir = Scratch::new("group-crash");
    let forkd = Forkd::start(&dir.write("forkd.toml", &crashing_leader(&dir, "never")));
    let soft = pid_in(&dir.file("soft"));
    let hard = pid_in(&dir.file("hard"));
    let _guards = (KillOnDrop::new(soft), KillOnDrop::new(hard));
    forkd
        .log
        .wait_line("leader#0 (pid", Duration::from_secs(10));
    let swept = forkd
        .log
        .wait_line("left processes behind", Duration::from_secs(10));
    assert!(swept.contains("sending SIGTERM"), "{swept}");
    let seen = Instant::now();
    // stop_timeout (1 s) + 1 s, from when the test saw the sweep begin.
    wait_until(
        "both members gone and reaped",
        Duration::from_secs(2),
        || proc_stat(soft).is_none() && proc_stat(hard).is_none(),
    );
    assert!(seen.elapsed() < Duration::from_secs(2));
    let killed = forkd.log.wait_line(
        "outlived its main process: sending SIGKILL",
        Duration::from_secs(5),
    );
    let took = log_time(&killed).saturating_sub(log_time(&swept));
    assert!(
        took >= Duration::from_millis(999),
        "SIGKILL came early: {took:?}"
    );
    wait_no_zombies(forkd.pid());
}

#[test]
fn a_restart_waits_for_the_old_group_to_be_killed() {
    let dir = Scratch::new("group-restart");
    let forkd = Forkd::start(&dir.write("forkd.toml", &crashing_leader(&dir, "on-failure")));
    let soft = pid_in(&dir.file("soft"));
    let hard = pid_in(&dir.file("hard"));
    let _guards = (KillOnDrop::new(soft), KillOnDrop::new(hard));
    let killed = forkd.log.wait_line(
        "outlived its main process: sending SIGKILL",
        Duration::from_secs(10),
    );
    forkd
        .log
        .wait_count("leader#0 started", 2, Duration::from_secs(10));
    let second = forkd
        .log
        .snapshot()
        .into_iter()
        .filter(|l| l.contains("leader#0 started"))
        .nth(1)
        .unwrap();
    assert!(
        log_time(&second) >= log_time(&killed),
        "restarted before the old group was killed: {second} / {killed}"
    );
    wait_until("old members reaped", Duration::from_secs(5), || {
        proc_stat(soft).is_none() && proc_stat(hard).is_none()
    });
    wait_no_zombies(forkd.pid());
}
