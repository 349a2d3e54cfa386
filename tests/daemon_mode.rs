//! `--daemon`: the double fork, the locked pidfile, and a launcher that
//! returns only once the daemon is up.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{alive, proc_stat, wait_until, Scratch, FORKD};

#[test]
fn daemon_detaches_holds_a_locked_pidfile_and_a_second_one_refuses() {
    let dir = Scratch::new("daemon");
    let config = dir.write(
        "forkd.toml",
        r#"
[[program]]
name = "sleeper"
command = ["/bin/sleep", "1000"]
"#,
    );
    let pidfile = dir.file("forkd.pid");
    let launch = || {
        Command::new(FORKD)
            .args(["--daemon", "--pidfile"])
            .arg(&pidfile)
            .arg("--config")
            .arg(&config)
            .env("RUNTIME_DIRECTORY", &dir.path)
            .output()
            .expect("run forkd --daemon")
    };
    let first = launch();
    assert!(first.status.success(), "{first:?}");
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .expect("pidfile written before the launcher returned")
        .trim()
        .parse()
        .unwrap();
    let _guard = common::KillOnDrop(pid);
    assert!(alive(pid));
    let (_, ppid) = proc_stat(pid).unwrap();
    assert_ne!(
        ppid,
        std::process::id() as i32,
        "detached from the launcher"
    );
    wait_until("the program started", Duration::from_secs(10), || {
        common::children(pid).len() == 1
    });

    let second = launch();
    assert_eq!(second.status.code(), Some(1));
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(err.contains(&pidfile.display().to_string()), "{err}");
    assert!(err.contains(&format!("pid {pid}")), "{err}");

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    wait_until(
        "daemon gone and pidfile removed",
        Duration::from_secs(10),
        || !alive(pid) && !pidfile.exists(),
    );
}

#[test]
fn a_daemon_that_cannot_start_makes_the_launcher_fail() {
    let dir = Scratch::new("daemon-fail");
    let config = dir.write(
        "forkd.toml",
        "[daemon]\nlog_file = \"/nonexistent-dir/forkd.log\"\n",
    );
    let out = Command::new(FORKD)
        .args(["--daemon", "--pidfile"])
        .arg(dir.file("forkd.pid"))
        .arg("--config")
        .arg(&config)
        .env("RUNTIME_DIRECTORY", &dir.path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent-dir/forkd.log"), "{err}");
}
