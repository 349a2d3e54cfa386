//! `forkctl status` shows each service's counters and its workers, and
//! follows a prefork worker's replacement.

mod common;

use std::time::Duration;

use common::{
    bound_address, echo_exchange, forkctl, start_with_control, status_json, tcp, wait_until,
    Scratch,
};

const PREFORK: &str = r#"
[[service]]
name = "echo"
listen = ["tcp://127.0.0.1:0"]
mode = "prefork"
workers = 2
handler = "echo"
"#;

fn worker_pids(socket: &std::path::Path) -> Vec<i64> {
    let status = status_json(socket);
    status["services"][0]["workers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|w| w["pid"].as_i64())
        .collect()
}

#[test]
fn status_shows_service_counters_and_a_replaced_worker() {
    let dir = Scratch::new("svc-status");
    let (forkd, socket) = start_with_control(&dir, PREFORK);
    let addr = bound_address(&forkd.log, "echo", "tcp://");
    for _ in 0..3 {
        echo_exchange(&mut tcp(&addr), b"status check\n");
    }
    wait_until("3 connections counted", Duration::from_secs(10), || {
        status_json(&socket)["services"][0]["accepted"].as_u64() == Some(3)
    });
    let status = status_json(&socket);
    let service = &status["services"][0];
    assert_eq!(service["name"], "echo");
    assert_eq!(service["mode"], "prefork");
    assert_eq!(service["listen"][0], format!("tcp://{addr}"));
    assert_eq!(service["workers"].as_array().unwrap().len(), 2);

    let table = forkctl(&socket, &["status"]);
    assert_eq!(table.code, 0, "{table:?}");
    assert!(table.stdout.contains("SERVICE"), "{}", table.stdout);
    assert!(
        table.stdout.contains(&format!("tcp://{addr}")),
        "{}",
        table.stdout
    );

    let before = worker_pids(&socket);
    assert_eq!(before.len(), 2);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(before[0] as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    wait_until(
        "the killed worker replaced",
        Duration::from_secs(10),
        || {
            let now = worker_pids(&socket);
            now.len() == 2 && !now.contains(&before[0]) && now.contains(&before[1])
        },
    );
    echo_exchange(&mut tcp(&addr), b"still served\n");
}
