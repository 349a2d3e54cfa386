//! Restart policies: back-off that grows, FATAL after start_retries, and
//! `restart = "never"`.

mod common;

use std::time::Duration;

use common::{children, wait_until, Forkd, Scratch};

fn delays_ms(lines: &[String]) -> Vec<f64> {
    lines
        .iter()
        .filter_map(|l| l.split("restarting in ").nth(1))
        .map(|rest| {
            let d = rest.split_whitespace().next().unwrap();
            if let Some(ms) = d.strip_suffix("ms") {
                ms.parse::<f64>().unwrap()
            } else {
                d.strip_suffix('s').unwrap().parse::<f64>().unwrap() * 1000.0
            }
        })
        .collect()
}

#[test]
fn crash_loop_backs_off_with_growing_delays_then_goes_fatal_after_start_retries() {
    let dir = Scratch::new("crashloop");
    let config = dir.write(
        "forkd.toml",
        r#"
[[program]]
name = "crasher"
command = ["/bin/sh", "-c", "exit 3"]
restart = "always"
backoff_initial = "50ms"
backoff_max = "1s"
start_retries = 3
"#,
    );
    let forkd = Forkd::start(&config);
    forkd
        .log
        .wait_line("giving up (FATAL)", Duration::from_secs(10));
    let lines = forkd.log.snapshot();
    // One first start plus three retries, each exiting with code 3.
    assert_eq!(forkd.log.count("crasher#0 (pid"), 4, "{lines:#?}");
    // Every start, restarts too, is logged with its pid, the one its exit names.
    let starts: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("crasher#0 started (pid "))
        .collect();
    assert_eq!(starts.len(), 4, "{lines:#?}");
    for start in starts {
        let pid = start.rsplit("(pid ").next().unwrap().trim_end_matches(')');
        let exit = format!("crasher#0 (pid {pid}) exited with code 3");
        assert_eq!(forkd.log.count(&exit), 1, "{lines:#?}");
    }
    assert_eq!(forkd.log.count("exited with code 3"), 4);
    let delays = delays_ms(&lines);
    assert_eq!(delays.len(), 3, "{lines:#?}");
    assert!(
        delays.windows(2).all(|w| w[1] > w[0]),
        "delays must grow: {delays:?}"
    );
    assert!(delays[0] >= 40.0 && delays[2] <= 200.0, "{delays:?}");
    assert!(
        children(forkd.pid()).is_empty(),
        "a FATAL program has no process"
    );
}

#[test]
fn restart_never_leaves_an_exited_program_down() {
    let dir = Scratch::new("never");
    let config = dir.write(
        "forkd.toml",
        r#"
[[program]]
name = "once"
command = ["/bin/sh", "-c", "echo ran; exit 1"]
restart = "never"
"#,
    );
    let forkd = Forkd::start(&config);
    forkd
        .log
        .wait_line("once#0 stays down", Duration::from_secs(10));
    assert_eq!(forkd.log.count("exited with code 1"), 1);
    assert_eq!(forkd.log.count("restarting"), 0);
    wait_until("no child left", Duration::from_secs(5), || {
        children(forkd.pid()).is_empty()
    });
}

#[test]
fn on_failure_restarts_a_crash_but_not_a_clean_exit() {
    let dir = Scratch::new("onfailure");
    let config = dir.write(
        "forkd.toml",
        r#"
[[program]]
name = "clean"
command = ["/bin/true"]
restart = "on-failure"

[[program]]
name = "dirty"
command = ["/bin/false"]
restart = "on-failure"
backoff_initial = "10ms"
start_retries = 1
"#,
    );
    let forkd = Forkd::start(&config);
    forkd
        .log
        .wait_line("dirty#0 failed", Duration::from_secs(10));
    forkd
        .log
        .wait_line("clean#0 stays down", Duration::from_secs(10));
    assert_eq!(forkd.log.count("clean#0 (pid"), 1);
    assert_eq!(forkd.log.count("dirty#0 (pid"), 2);
}
