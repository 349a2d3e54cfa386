//! `forkctl health`: exit 0 once every autostart program runs and is
//! ready, every pool has a worker and every service listens with its
//! workers; exit 1 naming what is wrong as soon as one is not, and 0 again
//! when it comes back. Read-only: a `control_read_group` member may ask.

mod common;

use std::time::Duration;

use common::*;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const T: Duration = Duration::from_secs(10);

const CONFIG: &str = r#"
[[program]]
name = "api"
command = ["/bin/sleep", "1000"]
ready_after = "200ms"

[[program]]
name = "flaky"
command = ["/bin/sleep", "1001"]
restart = "never"
ready_after = "200ms"

[[program]]
name = "manual"
command = ["/bin/sleep", "1002"]
autostart = false

[[pool]]
name = "upper"
worker = "builtin:upper"

[[service]]
name = "echo"
listen = ["tcp://127.0.0.1:0"]
mode = "event"
workers = 1
handler = "echo"
"#;

#[test]
fn health_follows_what_should_run_and_says_why_not() {
    let dir = Scratch::new("health");
    let (_forkd, socket) = start_with_control(&dir, CONFIG);
    wait_until("healthy", T, || forkctl(&socket, &["health"]).code == 0);
    let out = forkctl(&socket, &["health"]);
    assert_eq!(
        out.stdout, "healthy\n",
        "a program not autostarted is no reason"
    );
    let json: serde_json::Value =
        serde_json::from_str(&forkctl(&socket, &["--json", "health"]).stdout).unwrap();
    assert_eq!(json["healthy"], true, "{json}");
    assert_eq!(json["reasons"], serde_json::json!([]));

    let flaky = first_instance(&status_json(&socket), "flaky")["pid"]
        .as_i64()
        .unwrap();
    kill(Pid::from_raw(flaky as i32), Signal::SIGKILL).unwrap();
    wait_until("unhealthy", T, || forkctl(&socket, &["health"]).code == 1);
    let out = forkctl(&socket, &["health"]);
    assert!(
        out.stdout.starts_with("unhealthy: flaky#0 is "),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("SIGKILL"),
        "the reason says how it ended: {}",
        out.stdout
    );

    assert_eq!(forkctl(&socket, &["start", "flaky"]).code, 0);
    wait_until("healthy again", T, || {
        forkctl(&socket, &["health"]).code == 0
    });
    assert_eq!(forkctl(&socket, &["stop", "flaky"]).code, 0);
    assert_eq!(
        forkctl(&socket, &["health"]).code,
        0,
        "a program the operator stopped is no reason"
    );
}

/// A reload that replaces a service is no reason: the old one drains by
/// design while its successor serves, and a load balancer asking
/// `/healthz` (or `forkctl health`) must not take the host out for it.
#[test]
fn a_service_draining_after_a_reload_replaced_it_is_no_reason() {
    let dir = Scratch::new("health-reload");
    let body = |workers: u32| {
        format!("[[service]]\nname = \"echo\"\nlisten = [\"tcp://127.0.0.1:0\"]\nmode = \"event\"\nworkers = {workers}\nhandler = \"echo\"\ndrain_timeout = \"60s\"\n")
    };
    let (forkd, socket) = start_with_control(&dir, &body(1));
    let addr = bound_address(&forkd.log, "echo", "tcp://");
    wait_until("healthy", T, || forkctl(&socket, &["health"]).code == 0);
    // A client that stays keeps the old service draining.
    let mut held = tcp(&addr);
    echo_exchange(&mut held, b"held across the reload\n");

    control_config(&dir, &body(2));
    forkd.signal(Signal::SIGHUP);
    forkd.log.wait_line("reload: echo changed", T);
    wait_until("healthy with the old service draining", T, || {
        forkctl(&socket, &["health"]).code == 0
    });
    echo_exchange(&mut held, b"still served by the old service\n");
    assert_eq!(
        forkd.log.count("every old process is down"),
        0,
        "the old service was still draining"
    );
}
