//! Reaping: forkd is the child subreaper, so orphans come back to it, and a
//! thousand short-lived children leave no zombie and no leaked fd.

mod common;

use std::time::Duration;

use common::{
    fd_count, output_of, proc_stat, start_forkd_under, wait_until, zombies_below, Forkd,
    KillOnDrop, Scratch,
};

#[test]
fn a_double_forked_grandchild_is_adopted_and_reaped_by_forkd() {
    let dir = Scratch::new("grandchild");
    let config = dir.write(
        "forkd.toml",
        r#"
[daemon]
log_level = "debug"

[[program]]
name = "parent"
# Out of the program's process group (forkd stops the group when the
# leader exits): the leader waits until the child leads a session of its own.
command = ["/bin/sh", "-c", """
setsid sleep 1000 & while [ "$(cut -d' ' -f6 /proc/$!/stat)" != $! ]; do :; done
echo $!; exit 0"""]
restart = "never"
"#,
    );
    let forkd = Forkd::start(&config);
    let line = forkd.log.wait_line("parent#0: ", Duration::from_secs(10));
    let grandchild: i32 = output_of(&line, "parent#0").trim().parse().unwrap();
    let _kill = KillOnDrop(grandchild);
    forkd
        .log
        .wait_line("parent#0 stays down", Duration::from_secs(10));
    // The orphan was adopted by forkd (the subreaper), not by init.
    wait_until(
        "the orphan adopted by forkd",
        Duration::from_secs(5),
        || proc_stat(grandchild).is_some_and(|(_, ppid)| ppid == forkd.pid()),
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(grandchild),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    forkd.log.wait_line(
        &format!("reaped orphan pid {grandchild}"),
        Duration::from_secs(10),
    );
    assert!(proc_stat(grandchild).is_none());
    common::wait_no_zombies(forkd.pid());
}

#[test]
fn a_thousand_short_lived_children_leave_no_zombie_and_no_leaked_fd() {
    let dir = Scratch::new("thousand");
    let program = |autostart: bool| {
        format!(
            r#"
[[program]]
name = "blink"
command = ["/bin/true"]
instances = 20
restart = "always"
backoff_initial = "0s"
backoff_max = "0s"
start_retries = 50
autostart = {autostart}
"#
        )
    };
    // Baseline: the same config, nothing started.
    let idle = Forkd::start(&dir.write("idle.toml", &program(false)));
    idle.log.wait_line("started", Duration::from_secs(10));
    let baseline = fd_count(idle.pid());

    let busy = Forkd::start(&dir.write("busy.toml", &program(true)));
    busy.log
        .wait_count("giving up (FATAL)", 20, Duration::from_secs(60));
    assert_eq!(busy.log.count("exited with code 0"), 20 * 51);
    wait_until("no zombie below forkd", Duration::from_secs(5), || {
        zombies_below(busy.pid()).is_empty() && common::children(busy.pid()).is_empty()
    });
    // Each instance keeps its stdout and stderr log pipes (both ends) for
    // its whole life, across restarts; nothing else may remain.
    let expected = baseline + 20 * 4;
    wait_until("fds back to the baseline", Duration::from_secs(5), || {
        fd_count(busy.pid()) == expected
    });
}

#[test]
fn exits_are_seen_when_forkd_was_started_with_sigchld_ignored() {
    // An ignored SIGCHLD survives exec: with it the kernel would reap every
    // child itself, and forkd's waitpid would never see an exit.
    let dir = Scratch::new("sigchld-ignored");
    let config = dir.write(
        "forkd.toml",
        r#"
[[program]]
name = "quits"
command = ["/bin/sh", "-c", "exit 3"]
restart = "never"
"#,
    );
    let ignoring = [
        "python3",
        "-c",
        "import os, signal, sys; signal.signal(signal.SIGCHLD, signal.SIG_IGN); \
         os.execvp(sys.argv[1], sys.argv[1:])",
    ];
    let forkd = start_forkd_under(&ignoring, &config, &[]);
    forkd
        .log
        .wait_line("quits#0 stays down", Duration::from_secs(10));
    assert_eq!(forkd.log.count("exited with code 3"), 1);
}
