//! `stable_after`: an exit later than this after starting is not a fast
//! failure, so it resets the failure count and the back-off, and a program
//! that keeps running that long between failures never goes FATAL.

mod common;

use std::time::Duration;

use common::{instance_states, start_with_control, Scratch};

const T: Duration = Duration::from_secs(10);

/// Restart settings shared by both programs: FATAL on the third fast
/// failure in a row, a back-off starting at 100ms.
const POLICY: &str = r#"
stable_after = "1s"
start_retries = 2
backoff_initial = "100ms"
backoff_max = "10s"
"#;

/// (delay in ms, fast failure number) of each `NAME#0 restarting in ...`
/// line; the number is None after a stable run (logged at debug).
fn restarts(lines: &[String], name: &str) -> Vec<(u64, Option<u32>)> {
    let needle = format!("{name}#0 restarting in ");
    lines
        .iter()
        .filter_map(|l| Some(&l[l.find(&needle)? + needle.len()..]))
        .map(|rest| {
            let delay = rest.split_whitespace().next().unwrap();
            let ms = delay
                .strip_suffix("ms")
                .unwrap_or_else(|| panic!("a delay under 1s: {rest}"))
                .parse()
                .unwrap();
            let failure = rest
                .split("(fast failure ")
                .nth(1)
                .map(|n| n.split_whitespace().next().unwrap().parse().unwrap());
            (ms, failure)
        })
        .collect()
}

#[test]
fn stable_after_resets_the_backoff_and_the_failure_count() {
    let dir = Scratch::new("stable-after");
    let runs = dir.file("runs");
    // Every third run of "recovers" outlives stable_after before failing;
    // the others fail at once, as every run of "crashes" does.
    let (forkd, socket) = start_with_control(
        &dir,
        &format!(
            r#"log_level = "debug"

[[program]]
name = "recovers"
command = ["/bin/sh", "-c", "n=$(($(cat \"$RUNS\" 2>/dev/null || echo 0) + 1)); echo $n > \"$RUNS\"; [ $((n % 3)) -eq 0 ] && sleep 2; exit 1"]
env = {{ RUNS = "{}" }}
{POLICY}

[[program]]
name = "crashes"
command = ["/bin/sh", "-c", "exit 1"]
{POLICY}
"#,
            runs.display()
        ),
    );
    forkd.log.wait_line("crashes#0 failed 3 times in a row", T);
    // Fast, fast, stable, fast, fast: five failures, where three in a
    // row sent "crashes" to FATAL.
    forkd.log.wait_count("recovers#0 restarting in", 5, T);
    let seen = restarts(&forkd.log.snapshot(), "recovers");
    let counts: Vec<Option<u32>> = seen.iter().map(|&(_, n)| n).collect();
    assert_eq!(
        &counts[..5],
        [Some(1), Some(2), None, Some(1), Some(2)],
        "the run past stable_after resets the count: {seen:?}"
    );
    let delays: Vec<u64> = seen.iter().map(|&(ms, _)| ms).collect();
    // Jitter keeps each delay within [0.8, 1.0] of 100ms doubling.
    assert!((80..=100).contains(&delays[0]), "{delays:?}");
    assert!((160..=200).contains(&delays[1]), "{delays:?}");
    assert_eq!(delays[2], 0, "a restart after a stable run is immediate");
    assert!(
        (80..=100).contains(&delays[3]),
        "the back-off starts over at backoff_initial: {delays:?}"
    );
    assert_eq!(
        forkd.log.count("recovers#0 failed"),
        0,
        "recovers went FATAL"
    );
    assert_eq!(instance_states(&socket, "crashes")[0].0, "fatal");
    assert_ne!(instance_states(&socket, "recovers")[0].0, "fatal");
}
