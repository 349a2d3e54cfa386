//! `forkctl log NAME -f` through the real binaries: a line the program
//! writes because the test made it reaches forkctl's stdout, lines keep
//! coming in order without forkctl being run again, and when forkd stops
//! the follower says so and exits 0.

mod common;

use std::path::Path;
use std::time::Duration;

use common::follower::Follower;
use common::{instance_states, start_with_control, wait_until, Scratch};

const T: Duration = Duration::from_secs(10);

fn running(socket: &Path, program: &str) -> bool {
    instance_states(socket, program)
        .iter()
        .all(|(state, _)| state == "running")
}

/// A program that says it waits, then one line once `trigger` exists.
fn on_file(trigger: &Path) -> String {
    format!(
        r#"
[[program]]
name = "poker"
command = ["/bin/sh", "-c", "echo waiting; while [ ! -e {0} ]; do sleep 0.05; done; echo {0} appeared; exec sleep 1000"]
"#,
        trigger.display()
    )
}

#[test]
fn log_follow_prints_the_line_the_program_writes_when_asked_to() {
    let dir = Scratch::new("log-follow-trigger");
    let trigger = dir.file("trigger");
    let (forkd, socket) = start_with_control(&dir, &on_file(&trigger));
    forkd.log.wait_line("poker#0: waiting", T);
    let mut follower = Follower::start(&socket, &["log", "poker", "-f"]);
    assert_eq!(follower.next_line("the line already kept"), "waiting");
    std::fs::write(&trigger, "").unwrap();
    assert_eq!(
        follower.next_line("the line written after the file appeared"),
        format!("{} appeared", trigger.display())
    );
    // Still following until killed: forkctl does not end by itself.
    assert!(follower.child.try_wait().unwrap().is_none());
    follower.child.kill().unwrap();
    let status = follower.child.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGKILL)
    );
}

#[test]
fn log_follow_ends_with_status_0_when_forkd_stops() {
    let dir = Scratch::new("log-follow-stop");
    let trigger = dir.file("never");
    let (mut forkd, socket) = start_with_control(&dir, &on_file(&trigger));
    forkd.log.wait_line("poker#0: waiting", T);
    let mut follower = Follower::start(&socket, &["log", "poker", "--follow"]);
    assert_eq!(follower.next_line("the line already kept"), "waiting");
    forkd.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(forkd.wait_exit(T), Some(0));
    let (status, stderr) = follower.wait_exit(T);
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("forkd is gone; stopped following"),
        "{stderr}"
    );
}

#[test]
fn log_follow_prints_new_lines_in_order_without_being_run_again() {
    let dir = Scratch::new("ctl-log-follow");
    let (_forkd, socket) = start_with_control(
        &dir,
        r#"
[[program]]
name = "talker"
command = ["/bin/sh", "-c", "i=0; while :; do i=$((i+1)); echo line $i; sleep 0.1; done"]
"#,
    );
    wait_until("talker up", T, || running(&socket, "talker"));
    let follower = Follower::start(&socket, &["log", "talker", "-n", "1", "--follow"]);
    let number = |line: &str| -> u64 {
        line.strip_prefix("line ")
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("{line:?}"))
    };
    let mut last = number(&follower.next_line("the newest kept line"));
    for _ in 0..5 {
        let n = number(&follower.next_line("a new line"));
        assert_eq!(n, last + 1, "lines come in order, none lost");
        last = n;
    }
}
