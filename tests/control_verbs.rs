//! forkctl's options and targets that scripts lean on: `FORKD_SOCKET`,
//! `--no-wait`, `all`, `status NAME`, a successful `reload`, and several
//! forkctl clients at once.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

const T: Duration = Duration::from_secs(10);

const PROGRAMS: &str = r#"
[[program]]
name = "web"
command = ["/bin/sleep", "1000"]
instances = 2

[[program]]
name = "cron"
command = ["/bin/sleep", "1001"]
"#;

fn running(socket: &std::path::Path, program: &str) -> usize {
    instance_states(socket, program)
        .iter()
        .filter(|(state, _)| state == "running")
        .count()
}

#[test]
fn forkd_socket_names_the_daemon_when_no_flag_does() {
    let dir = Scratch::new("ctl-env");
    let (_forkd, socket) = start_with_control(&dir, PROGRAMS);
    wait_until("web up", T, || running(&socket, "web") == 2);
    let out = Command::new(env!("CARGO_BIN_EXE_forkctl"))
        .args(["--json", "status"])
        .env("FORKD_SOCKET", &socket)
        .env_remove("RUNTIME_DIRECTORY")
        .env_remove("XDG_RUNTIME_DIR")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["programs"][0]["name"], "web");
    // A socket that is not there: exit 3, naming the path.
    let missing = dir.file("nobody-here.sock");
    let out = Command::new(env!("CARGO_BIN_EXE_forkctl"))
        .arg("status")
        .env("FORKD_SOCKET", &missing)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains(&missing.display().to_string()));
}

#[test]
fn status_name_shows_only_that_program() {
    let dir = Scratch::new("ctl-status-name");
    let (_forkd, socket) = start_with_control(&dir, PROGRAMS);
    wait_until("both up", T, || {
        running(&socket, "web") == 2 && running(&socket, "cron") == 1
    });
    let table = forkctl(&socket, &["status", "cron"]);
    assert_eq!(table.code, 0, "{table:?}");
    assert!(table.stdout.contains("cron"), "{}", table.stdout);
    assert!(!table.stdout.contains("web"), "{}", table.stdout);
    let json = forkctl(&socket, &["--json", "status", "web"]);
    let json: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    let names: Vec<&str> = json["programs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["web"]);
    let unknown = forkctl(&socket, &["status", "nothing"]);
    assert_eq!(unknown.code, 1, "{unknown:?}");
}

#[test]
fn stop_all_stops_every_program_and_start_all_brings_them_back() {
    let dir = Scratch::new("ctl-all");
    let (_forkd, socket) = start_with_control(&dir, PROGRAMS);
    wait_until("both up", T, || {
        running(&socket, "web") == 2 && running(&socket, "cron") == 1
    });
    let stop = forkctl(&socket, &["stop", "all"]);
    assert_eq!(stop.code, 0, "{stop:?}");
    assert_eq!((running(&socket, "web"), running(&socket, "cron")), (0, 0));
    let start = forkctl(&socket, &["start", "all"]);
    assert_eq!(start.code, 0, "{start:?}");
    assert_eq!((running(&socket, "web"), running(&socket, "cron")), (2, 1));
}

#[test]
fn no_wait_returns_before_the_program_has_stopped() {
    let dir = Scratch::new("ctl-no-wait");
    // A program that takes its time to stop: SIGTERM is trapped, and it
    // exits a second later.
    let (_forkd, socket) = start_with_control(
        &dir,
        r#"
[[program]]
name = "slow"
command = ["/bin/sh", "-c", "trap 'sleep 1; exit 0' TERM; while :; do sleep 0.1; done"]
stop_timeout = "10s"
"#,
    );
    wait_until("slow up", T, || running(&socket, "slow") == 1);
    let stop = forkctl(&socket, &["stop", "--no-wait", "slow"]);
    assert_eq!(stop.code, 0, "{stop:?}");
    let (state, _) = instance_states(&socket, "slow").remove(0);
    assert_eq!(state, "stopping", "forkctl returned at once");
    wait_until("slow stopped by itself", T, || {
        instance_states(&socket, "slow")[0].0 == "stopped"
    });
}

#[test]
fn a_successful_reload_reports_what_it_changed() {
    let dir = Scratch::new("ctl-reload");
    let (forkd, socket) = start_with_control(&dir, PROGRAMS);
    wait_until("web up", T, || running(&socket, "web") == 2);
    let config = forkd.config.clone();
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        format!("{text}\n[[program]]\nname = \"added\"\ncommand = [\"/bin/sleep\", \"1002\"]\n"),
    )
    .unwrap();
    let reload = forkctl(&socket, &["reload"]);
    assert_eq!(reload.code, 0, "{reload:?}");
    assert!(reload.stdout.contains("added"), "{}", reload.stdout);
    wait_until("the added program runs", T, || {
        running(&socket, "added") == 1
    });
    forkd.log.wait_line("reloaded ", T);
}

#[test]
fn many_forkctl_clients_at_once_are_all_answered() {
    let dir = Scratch::new("ctl-concurrent");
    let (_forkd, socket) = start_with_control(&dir, PROGRAMS);
    wait_until("web up", T, || running(&socket, "web") == 2);
    let answered = concurrently(12, |_| {
        (0..5)
            .filter(|_| {
                let out = forkctl(&socket, &["--json", "status"]);
                out.code == 0 && out.stdout.contains("\"web\"")
            })
            .count()
    });
    assert_eq!(answered, 60, "every status request was answered");
}
