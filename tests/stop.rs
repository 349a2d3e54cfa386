//! Stopping: stop_signal, then SIGKILL at stop_timeout; a second TERM
//! escalates; SIGQUIT kills at once.

mod common;

use std::time::{Duration, Instant};

use common::{alive, log_time, output_of, wait_until, Forkd, Scratch};
use nix::sys::signal::Signal;

/// A program that ignores SIGTERM, stopped with this `stop_timeout`.
fn stubborn(stop_timeout: &str) -> String {
    format!(
        r#"
[[program]]
name = "stubborn"
command = ["/bin/sh", "-c", "trap '' TERM; echo $$; while :; do sleep 0.1; done"]
stop_timeout = "{stop_timeout}"
"#
    )
}

fn start_stubborn(dir: &Scratch, stop_timeout: &str) -> (Forkd, i32) {
    let forkd = Forkd::start(&dir.write("forkd.toml", &stubborn(stop_timeout)));
    let line = forkd.log.wait_line("stubborn#0: ", Duration::from_secs(10));
    let pid: i32 = output_of(&line, "stubborn#0").trim().parse().unwrap();
    (forkd, pid)
}

#[test]
fn sigterm_kills_a_program_that_ignores_it_after_stop_timeout() {
    let dir = Scratch::new("stubborn");
    let (mut forkd, pid) = start_stubborn(&dir, "1s");
    forkd.signal(Signal::SIGTERM);
    assert_eq!(forkd.wait_exit(Duration::from_secs(10)), Some(0));
    // Measured between forkd's own log lines: from the stop to the kill.
    let stop = log_time(
        &forkd
            .log
            .wait_line("SIGTERM: stopping", Duration::from_secs(5)),
    );
    let kill = log_time(
        &forkd
            .log
            .wait_line("killed by SIGKILL", Duration::from_secs(5)),
    );
    let took = kill.saturating_sub(stop);
    assert!(
        took >= Duration::from_millis(999),
        "SIGKILL came early: {took:?}"
    );
    assert!(
        took < Duration::from_secs(3),
        "stop took {took:?} (stop_timeout is 1s)"
    );
    let line = forkd
        .log
        .wait_line("killed by SIGKILL", Duration::from_secs(5));
    // forkd sent that SIGKILL itself: no guess about the OOM killer.
    assert!(!line.contains("out of memory"), "{line}");
    assert!(line.contains("INFO"), "an expected kill is info: {line}");
    wait_until("program gone", Duration::from_secs(5), || !alive(pid));
}

#[test]
fn a_sigkill_forkd_did_not_send_is_a_warning_that_suggests_out_of_memory() {
    let dir = Scratch::new("oom-hint");
    let (forkd, pid) = start_stubborn(&dir, "30s");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL).unwrap();
    let line = forkd.log.wait_line(
        &format!("stubborn#0 (pid {pid}) killed by SIGKILL"),
        Duration::from_secs(5),
    );
    assert!(line.contains("(perhaps out of memory?)"), "{line}");
    assert!(line.contains("WARN"), "{line}");
}

#[test]
fn a_second_sigterm_escalates_to_sigkill_at_once() {
    let dir = Scratch::new("second-term");
    // A stop_timeout far beyond the bound below: only escalation is fast.
    let (mut forkd, pid) = start_stubborn(&dir, "30s");
    forkd.signal(Signal::SIGTERM);
    forkd
        .log
        .wait_line("stopping every program", Duration::from_secs(5));
    let sent = Instant::now();
    forkd.signal(Signal::SIGTERM);
    assert_eq!(forkd.wait_exit(Duration::from_secs(10)), Some(0));
    assert!(sent.elapsed() < Duration::from_secs(10), "no escalation");
    wait_until("program gone", Duration::from_secs(5), || !alive(pid));
}

#[test]
fn sigquit_kills_every_child_immediately() {
    let dir = Scratch::new("quit");
    let (mut forkd, pid) = start_stubborn(&dir, "30s");
    let sent = Instant::now();
    forkd.signal(Signal::SIGQUIT);
    assert_eq!(forkd.wait_exit(Duration::from_secs(20)), Some(0));
    assert!(
        sent.elapsed() < Duration::from_secs(10),
        "SIGQUIT waited for stop_timeout"
    );
    wait_until("program gone", Duration::from_secs(5), || !alive(pid));
}

#[test]
fn stopped_programs_are_not_respawned_during_shutdown() {
    let dir = Scratch::new("norespawn");
    let config = dir.write(
        "forkd.toml",
        r#"
[[program]]
name = "sleeper"
command = ["/bin/sleep", "1000"]
restart = "always"
instances = 3
"#,
    );
    let mut forkd = Forkd::start(&config);
    wait_until("3 sleepers", Duration::from_secs(10), || {
        common::children(forkd.pid()).len() == 3
    });
    forkd.signal(Signal::SIGINT);
    assert_eq!(forkd.wait_exit(Duration::from_secs(10)), Some(0));
    // The reader may lag forkd's exit: wait for the last line, then count.
    forkd.log.wait_line("forkd stopped", Duration::from_secs(5));
    assert_eq!(forkd.log.count("restarting"), 0);
    assert_eq!(forkd.log.count("killed by SIGTERM"), 3);
}
