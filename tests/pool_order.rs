//! Start order across programs and pools: a pool with `after` holds its
//! workers (no worker process, status `waiting for db`) while jobs sent to
//! it queue, and starts them once the program is ready; a program with a
//! pool in its `after` starts once the pool's workers serve; shutdown
//! stops the pool's workers (after their jobs) before the program it
//! lists; a cycle through
//! a program and a pool is refused at its place.

mod common;

use std::time::Duration;

use common::pool::{forkctl_call, pool_status, running_workers};
use common::{
    check_config, children, first_instance, free_port, start_with_control, status_json, wait_until,
    Scratch,
};

const T: Duration = Duration::from_secs(20);

/// `gate.py GATE PORT`: waits for the file GATE, then listens on PORT
/// (its `ready`), then runs until SIGTERM.
const GATE: &str = r#"
import os, signal, socket, sys, time
gate, port = sys.argv[1], int(sys.argv[2])
signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
while not os.path.exists(gate):
    time.sleep(0.02)
l = socket.socket()
l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind(("127.0.0.1", port))
l.listen(16)
while True:
    signal.pause()
"#;

/// The `[[program]]` "db", ready once the file it returns exists (then it
/// listens on its port).
fn gated_db(dir: &Scratch) -> (String, std::path::PathBuf) {
    let script = dir.write("gate.py", GATE);
    let gate = dir.file("db-go");
    let port = free_port();
    let db = format!(
        "[[program]]\nname = \"db\"\ncommand = [\"python3\", \"{}\", \"{}\", \"{port}\"]\nready = \"tcp://127.0.0.1:{port}\"\n",
        script.display(),
        gate.display(),
    );
    (db, gate)
}

#[test]
fn a_pool_waits_for_its_program_and_a_program_for_its_pool() {
    if !common::have_tool("python3", "pool_order") {
        return;
    }
    let dir = Scratch::new("pool-order");
    let (db, gate) = gated_db(&dir);
    let body = format!(
        r#"{db}
[[pool]]
name = "upper"
workers = 2
worker = "builtin:upper"
after = ["db"]

[[pool]]
name = "slow"
workers = 1
worker = "builtin:sleep"
after = ["db"]

[[program]]
name = "web"
command = ["sleep", "600"]
after = ["upper"]
"#
    );
    let (mut forkd, socket) = start_with_control(&dir, &body);

    wait_until("db runs, the pool and web wait", T, || {
        let s = status_json(&socket);
        first_instance(&s, "db")["state"] == "running"
            && first_instance(&s, "web")["state"] == "waiting"
            && pool_status(&socket, "upper")["state"] == "waiting"
    });
    let pool = pool_status(&socket, "upper");
    assert_eq!(pool["waiting_for"], serde_json::json!(["db"]), "{pool}");
    assert_eq!(pool["detail"], "waiting for db", "{pool}");
    assert_eq!(pool["workers"], serde_json::json!([]), "{pool}");
    let web = first_instance(&status_json(&socket), "web");
    assert_eq!(web["detail"], "waiting for upper", "{web}");
    let text = common::forkctl(&socket, &["status"]).stdout;
    assert!(text.contains("waiting for db"), "{text}");
    assert!(text.contains("waiting for upper"), "{text}");
    let db_pid = first_instance(&status_json(&socket), "db")["pid"]
        .as_i64()
        .unwrap() as i32;
    assert_eq!(children(forkd.pid()), [db_pid], "only db runs");

    // A job sent now queues, and is answered once the workers come.
    let caller = {
        let socket = socket.clone();
        std::thread::spawn(move || forkctl_call(&socket, "upper", b"early job"))
    };
    wait_until("the job is queued", T, || {
        pool_status(&socket, "upper")["queued"] == 1
    });
    assert!(!caller.is_finished(), "the job waits for a worker");

    std::fs::write(&gate, "").unwrap();
    let (code, out, err) = caller.join().unwrap();
    assert_eq!((code, out.as_slice()), (0, &b"EARLY JOB"[..]), "{err}");
    wait_until("the pool's workers run and web starts", T, || {
        running_workers(&socket, "upper").len() == 2
            && first_instance(&status_json(&socket), "web")["state"] == "running"
    });
    assert_eq!(
        pool_status(&socket, "upper")["waiting_for"],
        serde_json::json!([])
    );
    let lines = forkd.log.snapshot();
    let at = |needle: &str| {
        lines
            .iter()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no {needle:?} in {lines:#?}"))
    };
    assert!(at("db#0 is ready") < at("pool \"upper\" worker #0 started"));
    assert!(at("pool \"upper\" worker #1 started") < at("web#0 started"));

    // Shutdown: a worker of slow finishes its job first, and db (which
    // exits at once on SIGTERM) is stopped only after it.
    wait_until("slow's worker runs", T, || {
        running_workers(&socket, "slow").len() == 1
    });
    let job = {
        let socket = socket.clone();
        std::thread::spawn(move || forkctl_call(&socket, "slow", b"700"))
    };
    wait_until("slow runs the job", T, || {
        pool_status(&socket, "slow")["in_flight"] == 1
    });
    forkd.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(forkd.wait_exit(T), Some(0));
    let (code, out, err) = job.join().unwrap();
    assert_eq!((code, out.as_slice()), (0, &b"700"[..]), "{err}");
    let lines = forkd.log.snapshot();
    let last_worker = lines
        .iter()
        .rposition(|l| l.contains("pool \"slow\" worker #0 (pid "))
        .expect("the worker's exit is logged");
    let db_exit = lines
        .iter()
        .position(|l| l.contains(&format!("db#0 (pid {db_pid})")))
        .expect("db's exit is logged");
    assert!(
        last_worker < db_exit,
        "the pool's workers stop before db: {lines:#?}"
    );
}

#[test]
fn a_reload_adds_after_in_place_and_gates_only_starts_from_then_on() {
    if !common::have_tool("python3", "pool_order") {
        return;
    }
    let dir = Scratch::new("pool-order-reload");
    let (db, gate) = gated_db(&dir);
    let upper = "[[pool]]\nname = \"upper\"\nworkers = 2\nworker = \"builtin:upper\"\n";
    let (_forkd, socket) = start_with_control(&dir, &format!("{db}\n{upper}"));
    wait_until("upper's workers run", T, || {
        running_workers(&socket, "upper").len() == 2
    });
    let pids = running_workers(&socket, "upper");

    let late =
        "[[pool]]\nname = \"late\"\nworkers = 1\nworker = \"builtin:echo\"\nafter = [\"db\"]\n";
    common::control_config(&dir, &format!("{db}\n{upper}after = [\"db\"]\n\n{late}"));
    let out = common::forkctl(&socket, &["reload"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout
            .contains("pool upper: changed: apply in place\n    after: [] → [\"db\"]"),
        "{out:?}"
    );
    // A running pool is not stopped by its new edge; a new pool waits.
    assert_eq!(running_workers(&socket, "upper"), pids);
    let upper = pool_status(&socket, "upper");
    assert_eq!(upper["state"], "running", "{upper}");
    let late = pool_status(&socket, "late");
    assert_eq!(late["state"], "waiting", "{late}");
    assert_eq!(late["waiting_for"], serde_json::json!(["db"]), "{late}");
    assert_eq!(late["workers"], serde_json::json!([]), "{late}");

    std::fs::write(&gate, "").unwrap();
    wait_until("late's worker runs once db is ready", T, || {
        running_workers(&socket, "late").len() == 1
    });
    assert_eq!(running_workers(&socket, "upper"), pids);
}

#[test]
fn a_cycle_through_a_program_and_a_pool_is_refused_with_its_position() {
    let dir = Scratch::new("pool-order-cycle");
    let config = dir.write(
        "forkd.toml",
        r#"[[program]]
name = "api"
command = ["/bin/true"]
after = ["upper"]

[[pool]]
name = "upper"
worker = "builtin:upper"
after = ["api"]
"#,
    );
    let (code, stderr) = check_config(&config);
    assert_eq!(code, Some(1), "{stderr}");
    let expected = format!(
        "{}:9:10: start order cycle: api → upper → api",
        config.display()
    );
    assert!(stderr.contains(&expected), "{stderr}");
}
