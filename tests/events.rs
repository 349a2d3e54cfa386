//! `forkctl events` through the real binaries: a failing program's start,
//! exit, back-off and FATAL in order with increasing sequence numbers; a
//! planned (dry run), an applied and a rejected reload; a `per_ip`
//! refusal summarised; and `events -f` printing an event that happens
//! while it follows.

mod common;

use std::path::Path;
use std::time::Duration;

use common::follower::Follower;
use common::{
    bound_address, forkctl, instance_states, refused, start_with_control, tcp, wait_until, Scratch,
};

const T: Duration = Duration::from_secs(10);

/// Every kept event, from `events --json`.
fn events(socket: &Path) -> Vec<serde_json::Value> {
    let out = forkctl(socket, &["--json", "events"]);
    assert_eq!(out.code, 0, "{out:?}");
    out.stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect()
}

fn kinds_of(events: &[serde_json::Value], subject: &str) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["subject"] == subject)
        .map(|e| e["kind"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_failing_program_starts_exits_backs_off_and_goes_fatal_in_order() {
    let dir = Scratch::new("events-fatal");
    let (_forkd, socket) = start_with_control(
        &dir,
        r#"
[[program]]
name = "crasher"
command = ["/bin/sh", "-c", "exit 3"]
restart = "always"
backoff_initial = "20ms"
backoff_max = "100ms"
start_retries = 2
"#,
    );
    wait_until("a fatal event", T, || {
        kinds_of(&events(&socket), "crasher#0").contains(&"fatal".to_string())
    });
    let all = events(&socket);
    let seqs: Vec<u64> = all.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    assert_eq!(
        kinds_of(&all, "crasher#0"),
        [
            "started", "exited", "backoff", "started", "exited", "backoff", "started", "exited",
            "fatal"
        ],
        "{all:?}"
    );
    let exited = all.iter().find(|e| e["kind"] == "exited").unwrap();
    assert_eq!(exited["how"], "exited with code 3", "{exited}");
    assert!(exited["pid"].as_i64().unwrap() > 0);
    let backoff = all.iter().find(|e| e["kind"] == "backoff").unwrap();
    assert!(backoff["delay"].is_string(), "{backoff}");
    assert!(all[0]["time"].as_str().unwrap().ends_with('Z'));

    // The text form: SEQ TIME KIND SUBJECT DETAIL.
    let text = forkctl(&socket, &["events"]).stdout;
    let fatal = text.lines().find(|l| l.contains(" fatal ")).unwrap();
    let fields: Vec<&str> = fatal.splitn(5, ' ').collect();
    assert!(fields[0].parse::<u64>().is_ok(), "{fatal}");
    assert!(fields[1].ends_with('Z'), "{fatal}");
    assert_eq!(&fields[2..4], ["fatal", "crasher#0"], "{fatal}");
}

#[test]
fn reloads_applied_and_rejected_are_events() {
    let dir = Scratch::new("events-reload");
    let (forkd, socket) = start_with_control(
        &dir,
        r#"
[[program]]
name = "sleeper"
command = ["sleep", "1000"]
"#,
    );
    assert_eq!(forkctl(&socket, &["reload", "--dry-run"]).code, 0);
    assert_eq!(forkctl(&socket, &["reload"]).code, 0);
    let good = std::fs::read_to_string(&forkd.config).unwrap();
    std::fs::write(&forkd.config, format!("{good}\n[[program]]\nname = 3\n")).unwrap();
    assert_eq!(forkctl(&socket, &["reload"]).code, 1);
    let all = events(&socket);
    let reloads: Vec<&str> = all
        .iter()
        .filter(|e| e["subject"] == "config")
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        reloads,
        ["reload_planned", "reload_applied", "reload_rejected"],
        "{all:?}"
    );
    let rejected = all.iter().find(|e| e["kind"] == "reload_rejected").unwrap();
    assert!(rejected["errors"].as_u64().unwrap() >= 1, "{rejected}");
}

/// Refusals reach the stream as the log summarises them: the first at
/// once, with its count. Event mode, so the count comes from the workers'
/// scoreboard rather than the supervisor's own accept.
#[test]
fn per_ip_refusals_are_summarised_as_events() {
    let dir = Scratch::new("events-refusals");
    let (forkd, socket) = start_with_control(
        &dir,
        r#"
[[service]]
name = "guarded"
listen = ["tcp://127.0.0.1:0"]
mode = "event"
workers = 1
handler = "echo"
per_ip = 1
"#,
    );
    let addr = bound_address(&forkd.log, "guarded", "tcp://");
    let mut held = tcp(&addr);
    std::io::Write::write_all(&mut held, b"held\n").unwrap();
    let mut got = [0u8; 5];
    std::io::Read::read_exact(&mut held, &mut got).expect("the first is served");
    assert!(refused(&mut tcp(&addr)), "the second was served");
    wait_until("a summary event", T, || {
        kinds_of(&events(&socket), "service guarded").contains(&"summary".to_string())
    });
    let all = events(&socket);
    let summary = all.iter().find(|e| e["kind"] == "summary").unwrap();
    assert_eq!(summary["count"], 1, "{summary}");
    assert!(
        summary["what"].as_str().unwrap().contains("per_ip"),
        "{summary}"
    );
    let text = forkctl(&socket, &["events"]).stdout;
    assert!(
        text.lines()
            .any(|l| l.contains(" summary service guarded refused a connection")),
        "{text}"
    );
    drop(held);
}

/// A killed worker, of a service or of a pool, reads as what happened:
/// started, exited, and started again with a new pid (its replacement).
#[test]
fn a_replaced_worker_is_an_exit_then_a_start() {
    let dir = Scratch::new("events-worker");
    let (_forkd, socket) = start_with_control(
        &dir,
        r#"
[[service]]
name = "web"
listen = ["tcp://127.0.0.1:0"]
mode = "prefork"
workers = 1
handler = "echo"

[[pool]]
name = "upper"
worker = "builtin:upper"
workers = 1
"#,
    );
    let pid_of = |e: &serde_json::Value| e["pid"].as_i64().unwrap();
    for subject in ["service web#0", "pool upper#0"] {
        let mut first = 0;
        wait_until("the worker's start", T, || {
            let all = events(&socket);
            all.iter()
                .find(|e| e["subject"] == subject)
                .map(|e| first = pid_of(e))
                .is_some()
        });
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(first as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        wait_until("the replacement's start", T, || {
            kinds_of(&events(&socket), subject).len() >= 3
        });
        let all = events(&socket);
        let mine: Vec<&serde_json::Value> =
            all.iter().filter(|e| e["subject"] == subject).collect();
        assert_eq!(
            kinds_of(&all, subject)[..3],
            ["worker_started", "worker_exited", "worker_started"],
            "{subject}: {all:?}"
        );
        assert_eq!(pid_of(mine[0]), first);
        assert_eq!(pid_of(mine[1]), first);
        assert_eq!(mine[1]["how"], "killed by SIGKILL", "{:?}", mine[1]);
        assert_ne!(pid_of(mine[2]), first, "{subject}: a new process");
    }
}

#[test]
fn events_follow_prints_an_event_that_happens_while_it_follows() {
    let dir = Scratch::new("events-follow");
    let (_forkd, socket) = start_with_control(
        &dir,
        r#"
[[program]]
name = "victim"
command = ["sleep", "1000"]
"#,
    );
    let mut pid = 0;
    wait_until("victim runs", T, || {
        match instance_states(&socket, "victim").first().cloned() {
            Some((state, Some(p))) if state == "running" => {
                pid = p;
                true
            }
            _ => false,
        }
    });
    let mut follower = Follower::start(&socket, &["events", "-f"]);
    let next = |f: &Follower| f.next_line("events -f");
    let first = next(&follower);
    assert!(
        first.contains(" started victim#0 ") && first.contains(&format!("pid {pid}")),
        "{first}"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let exited = next(&follower);
    assert!(
        exited.contains(" exited victim#0 killed by SIGKILL"),
        "{exited}"
    );
    assert!(
        follower.child.try_wait().unwrap().is_none(),
        "still follows"
    );
    follower.child.kill().unwrap();
    follower.child.wait().unwrap();
}
