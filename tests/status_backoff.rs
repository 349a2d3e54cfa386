//! Back-off you can see: `forkctl status` says why an instance is down and
//! what happens next, in text and JSON; `fatal_retry` brings a FATAL
//! program back without anyone typing `forkctl start`.

mod common;

use std::time::Duration;

use common::{first_instance, forkctl, start_with_control, status_json, wait_until, Scratch};

const T: Duration = Duration::from_secs(20);

fn status_row(socket: &std::path::Path, program: &str) -> String {
    let out = forkctl(socket, &["status", program]);
    assert_eq!(out.code, 0, "{out:?}");
    out.stdout
        .lines()
        .find(|l| l.starts_with(program))
        .unwrap_or_else(|| panic!("no row for {program}: {}", out.stdout))
        .to_string()
}

#[test]
fn a_backing_off_program_shows_its_attempt_next_delay_and_last_exit() {
    let dir = Scratch::new("status-backoff");
    let (_forkd, socket) = start_with_control(
        &dir,
        r#"
[[program]]
name = "flaky"
command = ["/bin/sh", "-c", "exit 3"]
restart = "always"
backoff_initial = "30s"
backoff_max = "30s"
start_retries = 5
"#,
    );
    wait_until("flaky backs off", T, || {
        first_instance(&status_json(&socket), "flaky")["state"] == "backoff"
    });
    let inst = first_instance(&status_json(&socket), "flaky");
    assert_eq!(inst["attempts"], 1, "{inst}");
    assert_eq!(inst["max_attempts"], 5, "{inst}");
    assert_eq!(inst["last_exit"]["code"], 3, "{inst}");
    let next = inst["next_attempt_in_ms"]
        .as_u64()
        .expect("next_attempt_in_ms");
    assert!((1_000..=30_000).contains(&next), "{inst}");
    let row = status_row(&socket, "flaky");
    assert!(row.contains("backoff (attempt 1 of 5, next in "), "{row}");
    assert!(row.contains("; last: exit 3)"), "{row}");
}

#[test]
fn a_fatal_program_shows_since_when_how_many_failures_and_the_last_signal() {
    let dir = Scratch::new("status-fatal");
    let (_forkd, socket) = start_with_control(
        &dir,
        r#"
[[program]]
name = "segv"
command = ["/bin/sh", "-c", "kill -SEGV $$"]
restart = "always"
backoff_initial = "10ms"
backoff_max = "20ms"
start_retries = 2
"#,
    );
    wait_until("segv goes FATAL", T, || {
        first_instance(&status_json(&socket), "segv")["state"] == "fatal"
    });
    let inst = first_instance(&status_json(&socket), "segv");
    assert_eq!(inst["attempts"], 3, "{inst}");
    assert_eq!(inst["last_exit"]["signal"], "SIGSEGV", "{inst}");
    assert!(
        inst["next_attempt_in_ms"].is_null(),
        "no retry without fatal_retry: {inst}"
    );
    let since = inst["fatal_since"].as_str().expect("fatal_since");
    assert!(since.ends_with('Z') && since.len() == 24, "{since}");
    let row = status_row(&socket, "segv");
    let clock = &since[11..19];
    assert!(
        row.contains(&format!(
            "fatal since {clock} (3 fast failures; last: killed by SIGSEGV)"
        )),
        "{row}"
    );
}

#[test]
fn fatal_retry_brings_a_fatal_program_back_once_it_can_run() {
    let dir = Scratch::new("fatal-retry");
    let flag = dir.file("may-run");
    let (forkd, socket) = start_with_control(
        &dir,
        &format!(
            r#"
[[program]]
name = "needy"
command = ["/bin/sh", "-c", "test -e {} && exec sleep 600; exit 4"]
restart = "always"
backoff_initial = "10ms"
backoff_max = "20ms"
start_retries = 1
fatal_retry = "1s"
"#,
            flag.display()
        ),
    );
    let fatal = forkd.log.wait_line("needy#0 failed 2 times in a row", T);
    assert!(
        fatal.contains("so does forkd after 1.0s (fatal_retry)"),
        "{fatal}"
    );
    forkd
        .log
        .wait_line("retrying FATAL program needy#0 after 1.0s", T);
    std::fs::write(&flag, "").unwrap();
    wait_until("needy runs again", T, || {
        let inst = first_instance(&status_json(&socket), "needy");
        inst["state"] == "running" && inst["pid"].is_i64()
    });
    let row = status_row(&socket, "needy");
    assert!(row.contains("running"), "{row}");
}
