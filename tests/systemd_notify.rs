//! sd_notify as systemd sees it: a real datagram socket bound by the test
//! stands in for systemd's NOTIFY_SOCKET.

mod common;

use std::time::Duration;

use forkd::systemd::monotonic_usec;

use common::{children_running, notify_value, Forkd, NotifyReceiver, Scratch};
use nix::sys::signal::Signal;

const T: Duration = Duration::from_secs(10);

const TWO_SLEEPERS: &str = r#"
[[program]]
name = "a"
command = ["/bin/sleep", "1001"]

[[program]]
name = "b"
command = ["/bin/sleep", "1002"]
"#;

/// The lifecycle keys of a message (READY, RELOADING, STOPPING), in order.
fn lifecycle(message: &str) -> Vec<&str> {
    message
        .lines()
        .filter(|l| matches!(*l, "READY=1" | "RELOADING=1" | "STOPPING=1"))
        .collect()
}

#[test]
fn notifies_ready_then_reloading_ready_on_sighup_then_stopping_on_sigterm() {
    let dir = Scratch::new("notify-seq");
    let mut notify = NotifyReceiver::bind(&dir);
    let mut forkd = Forkd::start_with(&dir.write("forkd.toml", TWO_SLEEPERS), &[], &[notify.env()]);

    let ready = notify.wait_line("READY=1", T);
    assert_eq!(
        notify_value(&ready, "STATUS"),
        Some("2 programs, 0 pools, 0 services; 0 failing"),
        "{ready:?}"
    );
    assert_eq!(children_running(forkd.pid(), "/bin/sleep 1001").len(), 1);
    assert_eq!(children_running(forkd.pid(), "/bin/sleep 1002").len(), 1);

    let before = monotonic_usec();
    forkd.signal(Signal::SIGHUP);
    let reloading = notify.wait_line("RELOADING=1", T);
    let stamp: u64 = notify_value(&reloading, "MONOTONIC_USEC")
        .expect("MONOTONIC_USEC with RELOADING=1")
        .parse()
        .expect("a number of microseconds");
    assert!(
        stamp >= before && stamp <= monotonic_usec(),
        "MONOTONIC_USEC={stamp} is not CLOCK_MONOTONIC now ({before}..)"
    );
    notify.wait_line("READY=1", T);

    forkd.signal(Signal::SIGTERM);
    notify.wait_line("STOPPING=1", T);
    assert_eq!(forkd.wait_exit(T), Some(0));

    let sequence: Vec<&str> = notify
        .received
        .iter()
        .flat_map(|(_, m)| lifecycle(m))
        .collect();
    assert_eq!(
        sequence,
        ["READY=1", "RELOADING=1", "READY=1", "STOPPING=1"]
    );
}

#[test]
fn watchdog_is_petted_at_half_of_watchdog_usec() {
    let dir = Scratch::new("watchdog");
    let mut notify = NotifyReceiver::bind(&dir);
    let _forkd = Forkd::start_with(
        &dir.write("forkd.toml", TWO_SLEEPERS),
        &[],
        &[notify.env(), ("WATCHDOG_USEC", "400000")],
    );
    notify.wait_line("READY=1", T);
    // Count the pets sent over two seconds: ~10 at one per 200 ms. Counting
    // datagrams (queued ones included) rather than timing their arrival
    // keeps a descheduled test thread from skewing the result; the loose
    // bounds still tell "about every 200 ms" from a busy loop or silence.
    let window = std::time::Instant::now() + Duration::from_secs(2);
    let mut pets = 0;
    while let Some(left) = window.checked_duration_since(std::time::Instant::now()) {
        if let Some(message) = notify.recv(left) {
            pets += usize::from(message.lines().any(|l| l == "WATCHDOG=1"));
        }
    }
    assert!(
        (5..=16).contains(&pets),
        "{pets} watchdog pets in 2 s (expected ~10)"
    );
}

#[test]
fn a_watchdog_meant_for_another_pid_is_not_petted() {
    let dir = Scratch::new("watchdog-pid");
    let mut notify = NotifyReceiver::bind(&dir);
    let _forkd = Forkd::start_with(
        &dir.write("forkd.toml", TWO_SLEEPERS),
        &[],
        &[
            notify.env(),
            ("WATCHDOG_USEC", "100000"),
            ("WATCHDOG_PID", "1"),
        ],
    );
    notify.wait_line("READY=1", T);
    // Ten intervals' worth of silence.
    while let Some(message) = notify.recv(Duration::from_secs(1)) {
        assert!(!message.contains("WATCHDOG=1"), "petted: {message:?}");
    }
}

#[test]
fn a_bad_config_on_reload_keeps_the_old_programs_and_names_the_error() {
    let dir = Scratch::new("bad-reload");
    let mut notify = NotifyReceiver::bind(&dir);
    let config = dir.write("forkd.toml", TWO_SLEEPERS);
    let forkd = Forkd::start_with(&config, &[], &[notify.env()]);
    notify.wait_line("READY=1", T);
    let a = children_running(forkd.pid(), "/bin/sleep 1001");
    let b = children_running(forkd.pid(), "/bin/sleep 1002");
    assert_eq!((a.len(), b.len()), (1, 1));

    dir.write(
        "forkd.toml",
        &format!("{TWO_SLEEPERS}\n[[program]]\nname = \"c\"\ncommand = [\"/bin/true\"]\nrestrat = \"always\"\n"),
    );
    forkd.signal(Signal::SIGHUP);
    notify.wait_line("RELOADING=1", T);
    let ready = notify.wait_line("READY=1", T);
    let status = notify_value(&ready, "STATUS").expect("STATUS with READY=1");
    assert!(
        status.contains("last reload failed")
            && status.contains("forkd.toml:13:1: unknown key \"restrat\""),
        "STATUS should name the error: {status:?}"
    );
    forkd.log.wait_line("reload rejected", T);
    assert_eq!(children_running(forkd.pid(), "/bin/sleep 1001"), a);
    assert_eq!(children_running(forkd.pid(), "/bin/sleep 1002"), b);
    assert!(children_running(forkd.pid(), "/bin/true").is_empty());

    // Fixing the file clears the error from STATUS.
    dir.write("forkd.toml", TWO_SLEEPERS);
    forkd.signal(Signal::SIGHUP);
    notify.wait_line("RELOADING=1", T);
    let ready = notify.wait_line("READY=1", T);
    assert_eq!(
        notify_value(&ready, "STATUS"),
        Some("2 programs, 0 pools, 0 services; 0 failing")
    );
}

#[test]
fn a_bad_config_at_start_reports_errno_and_status() {
    let dir = Scratch::new("bad-start");
    let mut notify = NotifyReceiver::bind(&dir);
    let config = dir.write("forkd.toml", "[[program]]\nname = \"x\"\n");
    let mut forkd = Forkd::start_with(&config, &[], &[notify.env()]);
    let message = notify.wait_for("ERRNO=", T, |m| m.contains("ERRNO="));
    assert_eq!(notify_value(&message, "ERRNO"), Some("22"));
    let status = notify_value(&message, "STATUS").unwrap();
    assert!(status.starts_with("invalid configuration: "), "{status}");
    assert!(status.contains("forkd.toml"), "{status}");
    assert_eq!(forkd.wait_exit(T), Some(1));
}

#[test]
fn a_daemonized_forkd_tells_systemd_its_main_pid() {
    let dir = Scratch::new("notify-daemon");
    let mut notify = NotifyReceiver::bind(&dir);
    let config = dir.write("forkd.toml", TWO_SLEEPERS);
    let pidfile = dir.file("forkd.pid");
    let launcher = std::process::Command::new(common::FORKD)
        .args(["--daemon", "--pidfile"])
        .arg(&pidfile)
        .arg("--config")
        .arg(&config)
        .env(notify.env().0, notify.env().1)
        .output()
        .expect("run forkd --daemon");
    assert!(launcher.status.success(), "{launcher:?}");
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // Killed by pid (with its programs) even if an assertion fails.
    struct Guard(i32);
    impl Drop for Guard {
        fn drop(&mut self) {
            for p in common::descendants(self.0).into_iter().chain([self.0]) {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), Signal::SIGKILL);
            }
        }
    }
    let _guard = Guard(pid);
    let ready = notify.wait_line("READY=1", T);
    assert_eq!(
        notify_value(&ready, "MAINPID"),
        Some(pid.to_string().as_str())
    );
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGTERM).unwrap();
    notify.wait_line("STOPPING=1", T);
    common::wait_until("the daemon exits", T, || !common::alive(pid));
}
