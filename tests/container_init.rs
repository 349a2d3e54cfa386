//! forkd as the init of a container: PID 1 of a new PID namespace
//! (`unshare --pid --fork --mount-proc`, as root). The kernel delivers no
//! signal to a namespace's PID 1 for which it has no handler, and every
//! orphan of the namespace is re-parented to it: forkd must still stop on
//! SIGTERM, reap every orphan, and recover a killed child by its restart
//! policy; its exit status (0 after a requested stop) is what the runtime
//! sees, passed on by `unshare`.

mod common;

use std::time::Duration;

use common::*;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const TEST: &str = "container_init";
const T: Duration = Duration::from_secs(10);

#[test]
fn forkd_as_pid_1_reaps_orphans_recovers_a_killed_child_and_stops_on_sigterm() {
    if !running_as_root(TEST, "make a PID namespace") || !have_tool("unshare", TEST) {
        return;
    }
    let scratch = Scratch::new("pid1");
    let marks = scratch.file("marks");
    std::fs::create_dir(&marks).unwrap();
    // Five grandchildren that leave their session and outlive their
    // parent: orphans of the namespace, re-parented to its PID 1.
    let orphaner = format!(
        "for i in 1 2 3 4 5; do (setsid sh -c 'touch {}/$0' $i &); done; exec /bin/sleep 1001",
        marks.display()
    );
    let config = scratch.write(
        "forkd.toml",
        &format!(
            r#"[daemon]
control_socket = "{}"

[[program]]
name = "orphaner"
command = ["/bin/sh", "-c", "{orphaner}"]

[[program]]
name = "worker"
command = ["/bin/sleep", "1002"]
restart = "always"
backoff_initial = "10ms"
"#,
            scratch.file("control.sock").display()
        ),
    );
    // --kill-child: should the test die first, unshare's death takes
    // forkd (and with it the whole namespace) along.
    let mut forkd = start_forkd_under(
        &[
            "unshare",
            "--pid",
            "--fork",
            "--mount-proc",
            "--kill-child=SIGKILL",
        ],
        &config,
        &[],
    );
    let launcher = forkd.pid();
    let mut init = 0;
    wait_until("forkd, as PID 1 of the namespace", T, || {
        init = children(launcher).first().copied().unwrap_or(0);
        init != 0 && cmdline(init).contains("--config")
    });
    let ns_pid = |pid: i32| {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("NSpid:"))
            .and_then(|v| v.split_whitespace().last().map(str::to_string))
    };
    assert_eq!(ns_pid(init).as_deref(), Some("1"), "forkd is PID 1 inside");

    wait_until("the five orphans to have run", T, || {
        (1..=5).all(|i| marks.join(i.to_string()).exists())
    });
    wait_until("every orphan reaped", T, || zombies_below(init).is_empty());
    let socket = scratch.file("control.sock");
    let orphans_reaped = || {
        let text = forkctl(&socket, &["metrics"]).stdout;
        text.lines()
            .find_map(|l| l.strip_prefix("forkd_orphans_reaped_total "))
            .and_then(|v| v.parse::<f64>().ok())
    };
    wait_until("forkctl metrics counts the five orphans", T, || {
        orphans_reaped().is_some_and(|n| n >= 5.0)
    });

    wait_until("the worker", T, || {
        !children_running(init, "/bin/sleep 1002").is_empty()
    });
    let worker = children_running(init, "/bin/sleep 1002")[0];
    kill(Pid::from_raw(worker), Signal::SIGKILL).unwrap();
    wait_until(
        "the killed worker restarted",
        T,
        || matches!(children_running(init, "/bin/sleep 1002")[..], [new] if new != worker),
    );
    let tree = descendants(init);

    kill(Pid::from_raw(init), Signal::SIGTERM).unwrap();
    assert_eq!(
        forkd.wait_exit(T),
        Some(0),
        "a requested stop exits 0, through unshare"
    );
    assert!(
        tree.iter().all(|&pid| !alive(pid)),
        "every process of the namespace is gone"
    );
    let log = forkd.log.snapshot().join("\n");
    assert_eq!(forkd.log.count("panicked"), 0, "{log}");
}
