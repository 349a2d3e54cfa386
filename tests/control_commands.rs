//! forkctl against a running forkd: every command through the real
//! binary, each test with its own forkd and socket.

mod common;

use std::time::Duration;

use common::{
    alive, forkctl, instance_states, start_with_control, status_json, wait_until, Scratch,
};

const T: Duration = Duration::from_secs(10);

const TWO_SLEEPERS: &str = r#"
[[program]]
name = "web"
command = ["/bin/sleep", "1000"]
instances = 2
"#;

fn running_pids(socket: &std::path::Path, program: &str) -> Vec<i64> {
    instance_states(socket, program)
        .into_iter()
        .filter(|(state, _)| state == "running")
        .filter_map(|(_, pid)| pid)
        .collect()
}

fn wait_running(socket: &std::path::Path, program: &str, n: usize) -> Vec<i64> {
    wait_until(&format!("{n} {program} running"), T, || {
        running_pids(socket, program).len() == n
    });
    running_pids(socket, program)
}

#[test]
fn status_follows_stop_and_start() {
    let dir = Scratch::new("ctl-status");
    let (_forkd, socket) = start_with_control(&dir, TWO_SLEEPERS);
    let pids = wait_running(&socket, "web", 2);

    let table = forkctl(&socket, &["status"]);
    assert_eq!(table.code, 0, "{table:?}");
    assert!(table.stdout.starts_with("NAME"), "{}", table.stdout);
    assert!(table.stdout.contains("running"), "{}", table.stdout);
    assert!(table.stdout.contains(&pids[0].to_string()));

    let json = status_json(&socket);
    assert!(json["pools"].as_array().unwrap().is_empty());
    assert!(json["services"].is_array());
    assert_eq!(json["programs"][0]["state"], "running");
    assert_eq!(json["programs"][0]["instances"][1]["index"], 1);

    let stop = forkctl(&socket, &["stop", "web"]);
    assert_eq!(stop.code, 0, "{stop:?}");
    assert!(stop.stdout.contains("web#0: stopped"), "{}", stop.stdout);
    assert_eq!(
        instance_states(&socket, "web"),
        vec![("stopped".to_string(), None), ("stopped".to_string(), None)]
    );
    wait_until("old pids gone", T, || {
        pids.iter().all(|&p| !alive(p as i32))
    });

    let start = forkctl(&socket, &["start", "web:1"]);
    assert_eq!(start.code, 0, "{start:?}");
    assert!(
        start.stdout.contains("web#1: started (pid"),
        "{}",
        start.stdout
    );
    let states = instance_states(&socket, "web");
    assert_eq!(states[0], ("stopped".to_string(), None));
    assert_eq!(states[1].0, "running");
}

#[test]
fn restart_changes_the_pid() {
    let dir = Scratch::new("ctl-restart");
    let (_forkd, socket) = start_with_control(&dir, TWO_SLEEPERS);
    let before = wait_running(&socket, "web", 2);
    let out = forkctl(&socket, &["restart", "web"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("restarted (pid"), "{}", out.stdout);
    let after = running_pids(&socket, "web");
    assert_eq!(after.len(), 2);
    for pid in &after {
        assert!(!before.contains(pid), "{before:?} -> {after:?}");
    }
    for pid in before {
        wait_until("the old process is gone", T, || !alive(pid as i32));
    }
}

#[test]
fn scale_adds_and_removes_instances() {
    let dir = Scratch::new("ctl-scale");
    let (forkd, socket) = start_with_control(&dir, TWO_SLEEPERS);
    wait_running(&socket, "web", 2);
    let up = forkctl(&socket, &["scale", "web", "4"]);
    assert_eq!(up.code, 0, "{up:?}");
    let pids = wait_running(&socket, "web", 4);
    assert_eq!(common::children(forkd.pid()).len(), 4);

    let down = forkctl(&socket, &["scale", "web", "1"]);
    assert_eq!(down.code, 0, "{down:?}");
    wait_until("one instance left", T, || {
        instance_states(&socket, "web").len() == 1
    });
    assert_eq!(running_pids(&socket, "web"), vec![pids[0]]);
    wait_until("the removed instances exited", T, || {
        pids[1..].iter().all(|&p| !alive(p as i32))
    });
    forkd.log.wait_line("web scaled down to 1", T);

    let bad = forkctl(&socket, &["scale", "web", "0"]);
    assert_eq!(bad.code, 1, "{bad:?}");
    assert!(bad.stderr.contains("1 to"), "{}", bad.stderr);
}

#[test]
fn signal_reaches_the_program() {
    let dir = Scratch::new("ctl-signal");
    let (forkd, socket) = start_with_control(
        &dir,
        r#"
[[program]]
name = "trapper"
command = ["/bin/sh", "-c", "trap 'echo got USR1' USR1; echo ready; while :; do sleep 0.1; done"]
"#,
    );
    forkd.log.wait_line("trapper#0: ready", T);
    let out = forkctl(&socket, &["signal", "trapper", "USR1"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("sent SIGUSR1"), "{}", out.stdout);
    forkd.log.wait_line("trapper#0: got USR1", T);

    let bad = forkctl(&socket, &["signal", "trapper", "NOPE"]);
    assert_eq!(bad.code, 1);
    assert!(
        bad.stderr.contains("unknown signal \"NOPE\""),
        "{}",
        bad.stderr
    );
}

#[test]
fn log_returns_the_recent_output_lines() {
    let dir = Scratch::new("ctl-log");
    let (forkd, socket) = start_with_control(
        &dir,
        r#"
[[program]]
name = "counter"
command = ["/bin/sh", "-c", "for i in 1 2 3 4 5 6 7 8 9 10; do echo line $i; done; exec sleep 1000"]
"#,
    );
    forkd.log.wait_line("counter#0: line 10", T);
    let out = forkctl(&socket, &["log", "counter", "-n", "3"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.stdout, "line 8\nline 9\nline 10\n");
    // Naming the instance keeps the prefix forkd's own log has.
    let out = forkctl(&socket, &["log", "counter:0", "-n", "2"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.stdout, "counter#0: line 9\ncounter#0: line 10\n");
    let json = forkctl(&socket, &["--json", "log", "counter", "-n", "1"]);
    let reply: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(reply["instances"][0]["lines"][0]["seq"], 10);
    assert_eq!(reply["instances"][0]["lines"][0]["text"], "line 10");
}

#[test]
fn shutdown_stops_every_program_and_forkd() {
    let dir = Scratch::new("ctl-shutdown");
    let (mut forkd, socket) = start_with_control(&dir, TWO_SLEEPERS);
    let pids = wait_running(&socket, "web", 2);
    let out = forkctl(&socket, &["shutdown"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("forkd stopped"), "{}", out.stdout);
    assert_eq!(forkd.wait_exit(T), Some(0));
    for pid in pids {
        assert!(!alive(pid as i32), "pid {pid} survived the shutdown");
    }
    assert!(!socket.exists(), "the socket file is removed at exit");
    assert_eq!(forkd.log.count("killed by SIGTERM"), 2);
}

#[test]
fn an_unknown_name_exits_1_with_a_clear_message() {
    let dir = Scratch::new("ctl-unknown");
    let (_forkd, socket) = start_with_control(&dir, TWO_SLEEPERS);
    for args in [
        &["stop", "nope"][..],
        &["restart", "nope"],
        &["status", "nope"],
        &["start", "web:7"],
    ] {
        let out = forkctl(&socket, args);
        assert_eq!(out.code, 1, "{args:?}: {out:?}");
        assert!(
            out.stderr.contains("no program") || out.stderr.contains("no web:7"),
            "{args:?}: {}",
            out.stderr
        );
    }
    let out = forkctl(&socket, &["stop", "nope"]);
    assert!(out.stderr.contains("programs: web"), "{}", out.stderr);
}

#[test]
fn a_daemon_that_is_not_running_exits_3_naming_the_path() {
    let dir = Scratch::new("ctl-absent");
    let socket = dir.file("control.sock");
    let out = forkctl(&socket, &["status"]);
    assert_eq!(out.code, 3, "{out:?}");
    assert!(
        out.stderr.contains(&socket.display().to_string()),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("is forkd running?"), "{}", out.stderr);
}

#[test]
fn usage_errors_exit_2() {
    let dir = Scratch::new("ctl-usage");
    let out = forkctl(&dir.file("control.sock"), &["scale", "web"]);
    assert_eq!(out.code, 2, "{out:?}");
    let out = forkctl(&dir.file("control.sock"), &["frobnicate"]);
    assert_eq!(out.code, 2, "{out:?}");
}

#[test]
fn a_log_cursor_at_u64_max_is_answered_and_forkd_keeps_serving() {
    let dir = Scratch::new("ctl-log-cursor");
    let (forkd, socket) = start_with_control(
        &dir,
        r#"
[[program]]
name = "talk"
command = ["/bin/sh", "-c", "echo hello; exec sleep 1000"]
"#,
    );
    forkd.log.wait_line("talk#0: hello", T);
    // The cursor comes from the client; forkd must not do arithmetic on it
    // that can overflow (a debug build panics, a release build wraps).
    let request = br#"{"command":"log","name":"talk","after":{"0":18446744073709551615}}
"#;
    let replies = common::raw_control(&socket, request);
    assert_eq!(replies.len(), 1, "{replies:?}");
    let reply: serde_json::Value = serde_json::from_str(&replies[0]).unwrap();
    assert_eq!(reply["ok"], true, "{reply}");
    assert_eq!(reply["instances"][0]["missed"], 0, "{reply}");
    assert_eq!(reply["instances"][0]["lines"], serde_json::json!([]));
    assert!(alive(forkd.pid()), "forkd survived the request");
    assert_eq!(forkctl(&socket, &["status"]).code, 0);
}

#[test]
fn scaling_down_then_straight_back_up_runs_every_instance() {
    let dir = Scratch::new("ctl-scale-bounce");
    let (forkd, socket) = start_with_control(&dir, TWO_SLEEPERS);
    wait_running(&socket, "web", 2);
    assert_eq!(forkctl(&socket, &["scale", "web", "3"]).code, 0);
    let before = wait_running(&socket, "web", 3);
    // Both requests on one connection: the second is answered in the same
    // loop turn, while web#1 and web#2 are still stopping.
    let replies = common::raw_control(
        &socket,
        b"{\"command\":\"scale\",\"name\":\"web\",\"count\":1}\n\
          {\"command\":\"scale\",\"name\":\"web\",\"count\":3}\n",
    );
    assert_eq!(replies.len(), 2, "{replies:?}");
    assert!(
        replies.iter().all(|r| r.contains("\"ok\":true")),
        "{replies:?}"
    );
    let after = wait_running(&socket, "web", 3);
    assert_eq!(after[0], before[0], "web#0 was never stopped");
    assert!(!after[1..].contains(&before[1]) && !after[1..].contains(&before[2]));
    wait_until("the stopped instances were reaped", T, || {
        before[1..].iter().all(|&p| !alive(p as i32))
    });
    assert!(common::zombies_below(forkd.pid()).is_empty());
}

#[test]
fn scaling_down_closes_the_removed_instances_log_pipes() {
    let dir = Scratch::new("ctl-scale-fds");
    let (forkd, socket) = start_with_control(
        &dir,
        r#"
[[program]]
name = "web"
command = ["/bin/sleep", "1000"]
"#,
    );
    wait_running(&socket, "web", 1);
    // Each instance has a log pipe per stream: forkd holds both ends.
    let at_one = common::fd_count(forkd.pid());
    assert_eq!(forkctl(&socket, &["scale", "web", "10"]).code, 0);
    wait_running(&socket, "web", 10);
    assert!(common::fd_count(forkd.pid()) > at_one);
    assert_eq!(forkctl(&socket, &["scale", "web", "1"]).code, 0);
    forkd.log.wait_line("web scaled down to 1", T);
    wait_until("forkd's fd count is back to one instance's", T, || {
        common::fd_count(forkd.pid()) <= at_one
    });
}
