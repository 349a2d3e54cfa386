//! Programs that daemonize themselves (`pidfile`): the process forkd
//! started double-forks and exits; forkd adopts the daemon it names in the
//! pidfile and supervises it as the instance's main process.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{
    forkctl, instance_states, proc_stat, start_with_control, wait_no_zombies, wait_until,
    KillOnDrop, Scratch,
};

/// The classic double fork: a subshell starts the daemon in a session of
/// its own and exits, the launcher exits 0, the daemon writes its pid.
fn daemonizing(dir: &Scratch, extra: &str) -> String {
    let pidfile = dir.file("daemon.pid");
    let p = pidfile.display();
    let command = common::daemonizing_command(&pidfile);
    format!(
        r#"
[[program]]
name = "daemon"
{command}
pidfile = "{p}"
restart = "always"
backoff_initial = "0s"
backoff_max = "0s"
{extra}
"#
    )
}

/// The pid of `daemon#0` once forkd has adopted one other than `not`.
fn adopted(socket: &Path, not: Option<i64>) -> i32 {
    let mut pid = None;
    wait_until("a daemon adopted", Duration::from_secs(10), || {
        let (state, now) = instance_states(socket, "daemon").remove(0);
        pid = now;
        state == "running"
            && now.is_some()
            && now != not
            && Some(now.unwrap() as i32) == pidfile_pid(socket)
    });
    pid.unwrap() as i32
}

fn pidfile_pid(socket: &Path) -> Option<i32> {
    let pidfile = socket.parent().unwrap().join("daemon.pid");
    std::fs::read_to_string(pidfile).ok()?.trim().parse().ok()
}

#[test]
fn a_double_forked_daemon_is_supervised_through_its_pidfile() {
    let dir = Scratch::new("pidfile");
    let (forkd, socket) = start_with_control(&dir, &daemonizing(&dir, ""));
    let first = adopted(&socket, None);
    let _guard = KillOnDrop::new(first);
    // Adopted: forkd is its parent now, so forkd reaps it.
    assert_eq!(proc_stat(first).map(|(_, ppid)| ppid), Some(forkd.pid()));
    forkd.log.wait_line(
        &format!("daemon#0: daemon pid {first} adopted"),
        Duration::from_secs(5),
    );

    // Killed: restarted, through a new launcher and a new daemon.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(first),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let second = adopted(&socket, Some(i64::from(first)));
    let _guard2 = KillOnDrop::new(second);
    wait_until("the killed daemon reaped", Duration::from_secs(5), || {
        proc_stat(first).is_none()
    });
    assert!(
        forkd
            .log
            .count(&format!("daemon#0 (pid {first}) killed by SIGKILL"))
            == 1
    );

    // Stopped: gone, and nothing is left behind.
    let out = forkctl(&socket, &["stop", "daemon"]);
    assert_eq!(out.code, 0, "{out:?}");
    wait_until(
        "the daemon stopped and reaped",
        Duration::from_secs(10),
        || proc_stat(second).is_none(),
    );
    assert_eq!(instance_states(&socket, "daemon")[0].0, "stopped");
    let pidfile = dir.file("daemon.pid");
    wait_until("the stale pidfile removed", Duration::from_secs(5), || {
        !pidfile.exists()
    });
    wait_no_zombies(forkd.pid());
}

#[test]
fn a_pidfile_that_never_appears_fails_the_start() {
    let dir = Scratch::new("pidfile-missing");
    let pidfile = dir.file("never.pid");
    let body = format!(
        r#"
[[program]]
name = "quiet"
command = ["/bin/sh", "-c", "exit 0"]
pidfile = "{}"
start_timeout = "300ms"
start_retries = 1
backoff_initial = "0s"
backoff_max = "0s"
"#,
        pidfile.display()
    );
    let (forkd, socket) = start_with_control(&dir, &body);
    let line = forkd
        .log
        .wait_line("quiet#0: start failed", Duration::from_secs(10));
    assert!(
        line.contains("no daemon pid within start_timeout (300ms)")
            && line.contains("was not written"),
        "{line}"
    );
    // A failed start counts for the back-off: two of them go FATAL.
    forkd
        .log
        .wait_line("giving up (FATAL)", Duration::from_secs(10));
    assert_eq!(instance_states(&socket, "quiet")[0].0, "fatal");
    wait_no_zombies(forkd.pid());
}

#[test]
fn a_pidfile_naming_a_foreign_process_fails_the_start() {
    let dir = Scratch::new("pidfile-foreign");
    let pidfile = dir.file("foreign.pid");
    // This test's own pid: alive, and not below forkd.
    let body = format!(
        r#"
[[program]]
name = "liar"
command = ["/bin/sh", "-c", "echo {} > {}; exit 0"]
pidfile = "{}"
restart = "never"
start_retries = 0
"#,
        std::process::id(),
        pidfile.display(),
        pidfile.display()
    );
    let (forkd, socket) = start_with_control(&dir, &body);
    let line = forkd
        .log
        .wait_line("liar#0: start failed", Duration::from_secs(10));
    assert!(line.contains("is not a descendant of forkd"), "{line}");
    wait_until("the instance down", Duration::from_secs(5), || {
        instance_states(&socket, "liar")[0].0 != "running"
    });
    assert!(common::alive(std::process::id() as i32));
}
