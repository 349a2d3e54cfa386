//! Start order gated on readiness: `after` holds a program until the
//! programs it names are ready (`ready = "notify"`, a TCP port that
//! accepts, or `started` for `ready_after`); shutdown stops dependents
//! first; a cycle or an unknown name in `after` is refused at its place.

mod common;

use std::time::Duration;

use common::{
    check_config, first_instance, free_port, log_time, start_with_control_env, status_json,
    wait_until, NotifyReceiver, Scratch,
};

const T: Duration = Duration::from_secs(20);

/// `stage.py NAME KIND GATE STOPS`: waits for the file GATE, then becomes
/// ready its way (KIND `notify`: READY=1 on its NOTIFY_SOCKET, recorded in
/// NAME.notify; `tcp:PORT`: listens; `-`: nothing), then runs until
/// SIGTERM, when it appends NAME to STOPS (web slowly, so a stop that did
/// not wait for it would be seen). STOPS.NAME.up says its handler is set.
const STAGE: &str = r#"
import os, signal, socket, sys, time
name, kind, gate, stops = sys.argv[1:5]
def term(*_):
    if name == "web":
        time.sleep(0.5)
    with open(stops, "a") as f:
        f.write(name + "\n")
    os._exit(0)
signal.signal(signal.SIGTERM, term)
open(stops + "." + name + ".up", "w").close()
while gate != "-" and not os.path.exists(gate):
    time.sleep(0.02)
if kind == "notify":
    addr = os.environ["NOTIFY_SOCKET"]
    with open(stops + "." + name + ".notify", "w") as f:
        f.write(addr)
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.sendto(b"STATUS=warming up\nREADY=1", addr)
elif kind.startswith("tcp:"):
    l = socket.socket()
    l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    l.bind(("127.0.0.1", int(kind[4:])))
    l.listen(16)
while True:
    signal.pause()
"#;

fn program(name: &str, kind: &str, gate: &str, extra: &str, dir: &Scratch) -> String {
    format!(
        "[[program]]\nname = \"{name}\"\ncommand = [\"python3\", \"{}\", \"{name}\", \"{kind}\", \"{gate}\", \"{}\"]\n{extra}\n",
        dir.file("stage.py").display(),
        dir.file("stops").display(),
    )
}

#[test]
fn after_waits_for_notify_tcp_and_started_readiness_and_shutdown_stops_dependents_first() {
    if !common::have_tool("python3", "start_order") {
        return;
    }
    let dir = Scratch::new("start-order");
    dir.write("stage.py", STAGE);
    let port = free_port();
    let (db_go, cache_go) = (dir.file("db-go"), dir.file("cache-go"));
    let body = [
        program("web", "-", "-", "after = [\"api\"]", &dir),
        program(
            "api",
            "-",
            "-",
            "after = [\"cache\"]\nready_after = \"1s\"",
            &dir,
        ),
        program(
            "cache",
            &format!("tcp:{port}"),
            cache_go.to_str().unwrap(),
            &format!("after = [\"db\"]\nready = \"tcp://127.0.0.1:{port}\""),
            &dir,
        ),
        program(
            "db",
            "notify",
            db_go.to_str().unwrap(),
            "ready = \"notify\"",
            &dir,
        ),
    ]
    .concat();
    // forkd runs under a systemd of its own: db must get forkd's socket
    // for it, never this one.
    let systemd = NotifyReceiver::bind(&dir);
    let (mut forkd, socket) = start_with_control_env(&dir, &body, &[systemd.env()]);

    wait_until("db runs and cache waits for it", T, || {
        let s = status_json(&socket);
        first_instance(&s, "db")["state"] == "running"
            && first_instance(&s, "cache")["state"] == "waiting"
    });
    let s = status_json(&socket);
    assert_eq!(
        first_instance(&s, "cache")["waiting_for"],
        serde_json::json!(["db"])
    );
    assert_eq!(
        first_instance(&s, "api")["detail"],
        "waiting for cache",
        "{s}"
    );
    assert_eq!(first_instance(&s, "db")["ready"], false, "{s}");
    let text = common::forkctl(&socket, &["status"]).stdout;
    assert!(text.contains("waiting for db"), "{text}");

    std::fs::write(&db_go, "").unwrap();
    forkd.log.wait_line("db#0 is ready (READY=1)", T);
    let db = first_instance(&status_json(&socket), "db");
    assert_eq!(db["ready"], true, "{db}");
    assert_eq!(db["notify_status"], "warming up", "{db}");
    let given = std::fs::read_to_string(dir.file("stops.db.notify")).unwrap();
    assert!(
        given.starts_with("@forkd/"),
        "db's own NOTIFY_SOCKET: {given}"
    );
    assert_ne!(given, systemd.path.to_str().unwrap());
    wait_until("cache runs, api still waits", T, || {
        let s = status_json(&socket);
        first_instance(&s, "cache")["state"] == "running"
            && first_instance(&s, "api")["state"] == "waiting"
    });

    std::fs::write(&cache_go, "").unwrap();
    forkd.log.wait_line(
        &format!("cache#0 is ready (tcp://127.0.0.1:{port} accepts)"),
        T,
    );
    let api_started = forkd.log.wait_line("api#0 started", T);
    let api_ready = forkd.log.wait_line("api#0 is ready (up for 1.0s)", T);
    let web_started = forkd.log.wait_line("web#0 started", T);
    assert!(log_time(&api_ready) >= log_time(&api_started) + Duration::from_millis(990));
    assert!(log_time(&web_started) >= log_time(&api_ready));
    let lines = forkd.log.snapshot();
    let at = |needle: &str| lines.iter().position(|l| l.contains(needle)).unwrap();
    assert!(at("db#0 is ready") < at("cache#0 started"), "{lines:#?}");
    assert!(at("cache#0 is ready") < at("api#0 started"), "{lines:#?}");
    wait_until("every stage handles SIGTERM", T, || {
        ["web", "api", "cache", "db"]
            .iter()
            .all(|n| dir.file(&format!("stops.{n}.up")).exists())
    });

    forkd.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(forkd.wait_exit(T), Some(0));
    let stops = std::fs::read_to_string(dir.file("stops")).unwrap();
    assert_eq!(
        stops,
        "web\napi\ncache\ndb\n",
        "dependents stop first: {:#?}",
        forkd.log.snapshot()
    );
}

#[test]
fn a_cycle_in_after_is_refused_with_its_position() {
    let dir = Scratch::new("order-cycle");
    let config = dir.write(
        "forkd.toml",
        r#"[[program]]
name = "a"
command = ["/bin/true"]
after = ["b"]

[[program]]
name = "b"
command = ["/bin/true"]
after = ["a"]
"#,
    );
    let (code, stderr) = check_config(&config);
    assert_eq!(code, Some(1), "{stderr}");
    let expected = format!("{}:9:10: start order cycle: a → b → a", config.display());
    assert!(stderr.contains(&expected), "{stderr}");
}

#[test]
fn an_unknown_name_in_after_is_refused_with_its_position() {
    let dir = Scratch::new("order-unknown");
    let config = dir.write(
        "forkd.toml",
        "[[program]]\nname = \"api\"\ncommand = [\"/bin/true\"]\nafter = [\"bd\"]\n",
    );
    let (code, stderr) = check_config(&config);
    assert_eq!(code, Some(1), "{stderr}");
    let expected = format!(
        "{}:4:10: after names \"bd\", which is no [[program]]",
        config.display()
    );
    assert!(stderr.contains(&expected), "{stderr}");
}

#[test]
fn stopping_a_dependency_alone_does_not_wait_for_its_running_dependents() {
    let dir = Scratch::new("order-stop-one");
    let (_forkd, socket) = common::start_with_control(
        &dir,
        r#"
[[program]]
name = "db"
command = ["sleep", "600"]
ready_after = "0s"

[[program]]
name = "api"
command = ["sleep", "600"]
after = ["db"]
"#,
    );
    wait_until("api runs", T, || {
        first_instance(&status_json(&socket), "api")["state"] == "running"
    });
    let out = common::forkctl(&socket, &["stop", "db"]);
    assert_eq!(out.code, 0, "{out:?}");
    let s = status_json(&socket);
    assert_eq!(first_instance(&s, "db")["state"], "stopped", "{s}");
    assert_eq!(first_instance(&s, "api")["state"], "running", "{s}");
}

#[test]
fn a_dependent_of_a_fatal_program_keeps_waiting_and_says_so() {
    let dir = Scratch::new("order-fatal");
    let (_forkd, socket) = common::start_with_control(
        &dir,
        r#"
[[program]]
name = "db"
command = ["/bin/sh", "-c", "exit 1"]
start_retries = 0

[[program]]
name = "api"
command = ["sleep", "600"]
after = ["db"]
"#,
    );
    wait_until("db goes FATAL", T, || {
        first_instance(&status_json(&socket), "db")["state"] == "fatal"
    });
    let api = first_instance(&status_json(&socket), "api");
    assert_eq!(api["state"], "waiting", "{api}");
    assert_eq!(api["detail"], "waiting for db (fatal)", "{api}");
    assert!(api["pid"].is_null(), "{api}");
}

#[test]
fn a_one_shot_job_that_exited_successfully_lets_its_dependents_start() {
    let dir = Scratch::new("order-oneshot");
    let (forkd, socket) = common::start_with_control(
        &dir,
        r#"
[[program]]
name = "migrate"
command = ["/bin/sh", "-c", "exit 0"]
restart = "on-failure"

[[program]]
name = "api"
command = ["sleep", "600"]
after = ["migrate"]
"#,
    );
    wait_until("api runs after the migration", T, || {
        first_instance(&status_json(&socket), "api")["state"] == "running"
    });
    let lines = forkd.log.snapshot();
    let at = |needle: &str| lines.iter().position(|l| l.contains(needle)).unwrap();
    assert!(
        at("migrate#0 stays down") < at("api#0 started"),
        "{lines:#?}"
    );
}
