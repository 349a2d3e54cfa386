//! `forkctl metrics`: forkd's figures in the Prometheus text exposition
//! format, checked by value after known events (a restart, served
//! connections, pool jobs) and by `promtool check metrics` (Debian package
//! prometheus; skipped with the reason when it is missing). Read-only.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const T: Duration = Duration::from_secs(10);

const CONFIG: &str = r#"
[[program]]
name = "api"
command = ["/bin/sleep", "1000"]
backoff_initial = "50ms"

[[pool]]
name = "upper"
worker = "builtin:upper"
workers = 2

[[service]]
name = "echo"
listen = ["tcp://127.0.0.1:0"]
mode = "prefork"
workers = 2
handler = "echo"

# The one knob set here, to see a refusal counted by its reason.
[[service]]
name = "guarded"
listen = ["tcp://127.0.0.1:0"]
handler = "echo"
per_ip = 1
"#;

/// The value of the sample line `series` (name and labels, exactly).
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
}

fn metrics(socket: &std::path::Path) -> String {
    let out = forkctl(socket, &["metrics"]);
    assert_eq!(out.code, 0, "{out:?}");
    out.stdout
}

#[test]
fn metrics_count_restarts_connections_and_jobs() {
    let dir = Scratch::new("metrics");
    let (forkd, socket) = start_with_control(&dir, CONFIG);
    let addr = bound_address(&forkd.log, "echo", "tcp://");
    wait_until("api runs", T, || {
        instance_states(&socket, "api")[0].0 == "running"
    });
    let text = metrics(&socket);
    let api = r#"{program="api",instance="0"}"#;
    assert_eq!(
        value(&text, &format!("forkd_program_up{api}")),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        value(&text, &format!("forkd_program_restarts_total{api}")),
        Some(0.0)
    );
    assert_eq!(
        value(
            &text,
            r#"forkd_program_state{program="api",instance="0",state="running"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        value(&text, r#"forkd_reloads_total{result="ok"}"#),
        Some(0.0)
    );
    assert!(
        value(&text, "forkd_open_fds").is_some_and(|n| n > 3.0),
        "{text}"
    );
    assert!(value(&text, "forkd_resident_memory_bytes").is_some_and(|b| b > 0.0));
    assert!(
        value(&text, "forkd_children").is_some_and(|n| n >= 5.0),
        "{text}"
    );
    assert!(text.contains("# TYPE forkd_pool_job_duration_seconds histogram\n"));

    // A crash is restarted: the counter moves, the last exit is recorded.
    let pid = instance_states(&socket, "api")[0].1.unwrap();
    kill(Pid::from_raw(pid as i32), Signal::SIGKILL).unwrap();
    wait_until("api restarted", T, || {
        value(
            &metrics(&socket),
            &format!("forkd_program_restarts_total{api}"),
        ) == Some(1.0)
    });

    for _ in 0..3 {
        exchange(&addr, "hello\n", true).unwrap();
    }
    wait_until("3 connections counted", T, || {
        value(
            &metrics(&socket),
            r#"forkd_service_accepted_total{service="echo"}"#,
        ) == Some(3.0)
    });
    // forkd reaped the killed instance and turns its loop.
    let text = metrics(&socket);
    assert!(
        value(&text, "forkd_zombies_reaped_total").is_some_and(|n| n >= 1.0),
        "{text}"
    );
    assert_eq!(value(&text, "forkd_orphans_reaped_total"), Some(0.0));
    assert!(value(&text, "forkd_loop_iterations_total").is_some_and(|n| n >= 1.0));

    // per_ip = 1: a second connection from the same address while the
    // first is open is refused, and counted under its reason.
    let guarded = bound_address(&forkd.log, "guarded", "tcp://");
    let mut held = tcp(&guarded);
    held.write_all(b"held\n").unwrap();
    let mut got = [0u8; 5];
    std::io::Read::read_exact(&mut held, &mut got).expect("the first is served");
    assert!(refused(&mut tcp(&guarded)), "the second was served");
    let per_ip = r#"forkd_service_refused_total{service="guarded",reason="per_ip"}"#;
    wait_until("the refusal counted", T, || {
        value(&metrics(&socket), per_ip) == Some(1.0)
    });
    assert_eq!(
        value(
            &metrics(&socket),
            r#"forkd_service_refused_total{service="guarded",reason="fd_limit"}"#
        ),
        Some(0.0)
    );
    drop(held);

    for _ in 0..2 {
        assert_eq!(call(&socket, "upper", b"abc"), "ABC");
    }
    let text = metrics(&socket);
    assert_eq!(
        value(&text, r#"forkd_pool_jobs_done_total{pool="upper"}"#),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        value(
            &text,
            r#"forkd_pool_job_duration_seconds_bucket{pool="upper",le="+Inf"}"#
        ),
        Some(2.0)
    );
    assert_eq!(
        value(
            &text,
            r#"forkd_pool_job_duration_seconds_count{pool="upper"}"#
        ),
        Some(2.0)
    );
    assert_eq!(
        value(
            &text,
            r#"forkd_service_workers{service="echo",state="idle"}"#
        )
        .zip(value(
            &text,
            r#"forkd_service_workers{service="echo",state="busy"}"#
        ))
        .map(|(idle, busy)| idle + busy),
        Some(2.0),
        "{text}"
    );

    let json: serde_json::Value =
        serde_json::from_str(&forkctl(&socket, &["--json", "metrics"]).stdout).unwrap();
    assert_eq!(json["ok"], true);
    assert!(json["text"]
        .as_str()
        .unwrap()
        .starts_with("# HELP forkd_info "));

    // One reload applied, one rejected (the old config keeps running).
    assert_eq!(forkctl(&socket, &["reload"]).code, 0);
    let good = std::fs::read_to_string(&forkd.config).unwrap();
    std::fs::write(&forkd.config, format!("{good}\n[[program]]\nname = 3\n")).unwrap();
    assert_eq!(forkctl(&socket, &["reload"]).code, 1);
    let text = metrics(&socket);
    assert_eq!(
        value(&text, r#"forkd_reloads_total{result="ok"}"#),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        value(&text, r#"forkd_reloads_total{result="failed"}"#),
        Some(1.0)
    );
    assert!(value(&text, "forkd_last_reload_timestamp_seconds").is_some_and(|t| t > 1.7e9));

    promtool_is_clean(&text, "metrics_count_restarts_connections_and_jobs");
}

/// `forkctl call POOL` with `payload` on stdin; its stdout.
fn call(socket: &std::path::Path, pool: &str, payload: &[u8]) -> String {
    let mut child = Command::new(FORKCTL)
        .arg("--socket")
        .arg(socket)
        .args(["call", pool])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(payload).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// `promtool check metrics` reads the exposition on stdin and lists every
/// problem (lint included); it exits 0 only when there is none.
fn promtool_is_clean(text: &str, test: &str) {
    if !have_tool("promtool", test) {
        return;
    }
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
