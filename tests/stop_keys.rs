//! How a program is stopped, key by key: `[daemon] stop_timeout` is the
//! grace period of every program that sets none, and `stop_signal` is what
//! the program's process group receives first.

mod common;

use std::time::Duration;

use common::{forkctl, output_of, start_with_control, Forkd, Scratch};
use nix::sys::signal::Signal;

const T: Duration = Duration::from_secs(10);

/// A program that ignores SIGTERM and prints its pid; `extra` adds keys.
fn stubborn(name: &str, extra: &str) -> String {
    format!(
        r#"
[[program]]
name = "{name}"
command = ["/bin/sh", "-c", "trap '' TERM; echo $$; while :; do sleep 0.1; done"]
{extra}
"#
    )
}

/// Milliseconds since the epoch of a plain log line's leading UTC
/// timestamp (`2026-11-22T21:22:01.123Z forkd[42]: ...`).
fn logged_at_ms(line: &str) -> i64 {
    let stamp = line.split_whitespace().next().expect("a timestamp");
    let number = |range: std::ops::Range<usize>| -> i64 {
        stamp
            .get(range)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("not a log timestamp: {line}"))
    };
    let (y, m, d) = (number(0..4), number(5..7), number(8..10));
    let ms_of_day =
        ((number(11..13) * 60 + number(14..16)) * 60 + number(17..19)) * 1000 + number(20..23);
    // days from civil (proleptic Gregorian), as forkd's logger counts them.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    days * 86_400_000 + ms_of_day
}

/// How long after `start_line` the line `end_line` was logged, by forkd's
/// own timestamps: the time forkd took, not the time the test thread saw.
fn between(start_line: &str, end_line: &str) -> Duration {
    let ms = logged_at_ms(end_line) - logged_at_ms(start_line);
    Duration::from_millis(u64::try_from(ms).expect("lines logged in order"))
}

#[test]
fn a_program_without_stop_timeout_is_killed_after_the_daemons_stop_timeout() {
    let dir = Scratch::new("stop-inherit");
    let config = dir.write(
        "forkd.toml",
        &format!(
            "[daemon]\nstop_timeout = \"1s\"\n{}{}",
            stubborn("inherits", ""),
            // Its own key wins over [daemon]'s, and proves the two differ.
            stubborn("overrides", "stop_timeout = \"4s\"")
        ),
    );
    let mut forkd = Forkd::start(&config);
    for name in ["inherits", "overrides"] {
        let line = forkd.log.wait_line(&format!("{name}#0: "), T);
        let pid: i32 = output_of(&line, &format!("{name}#0"))
            .trim()
            .parse()
            .unwrap();
        assert!(common::alive(pid), "{name} runs");
    }
    forkd.signal(Signal::SIGTERM);
    assert_eq!(forkd.wait_exit(Duration::from_secs(15)), Some(0));
    forkd.log.wait_line("forkd stopped", T);
    let stop = forkd.log.wait_line("SIGTERM: stopping every program", T);
    let inherits = forkd.log.wait_line("inherits#0 (pid", T);
    let overrides = forkd.log.wait_line("overrides#0 (pid", T);
    assert!(inherits.contains("killed by SIGKILL"), "{inherits}");
    assert!(overrides.contains("killed by SIGKILL"), "{overrides}");

    let inherited = between(&stop, &inherits);
    assert!(
        inherited >= Duration::from_millis(990),
        "SIGKILL {inherited:?} after the stop, before [daemon] stop_timeout (1s)"
    );
    assert!(
        inherited < Duration::from_secs(3),
        "SIGKILL {inherited:?} after the stop: [daemon] stop_timeout (1s) was not inherited"
    );
    let own = between(&stop, &overrides);
    assert!(
        own >= Duration::from_millis(3990) && own < Duration::from_secs(7),
        "SIGKILL {own:?} after the stop; the program's own stop_timeout is 4s"
    );
}

#[test]
fn stop_signal_is_what_a_stopping_program_receives() {
    let dir = Scratch::new("stop-signal");
    let mark = dir.file("caught");
    let (forkd, socket) = start_with_control(
        &dir,
        &format!(
            r#"
[[program]]
name = "graceful"
command = ["/bin/sh", "-c", "trap 'echo USR1 > \"$MARK\"; exit 0' USR1; trap 'echo TERM > \"$MARK\"; exit 0' TERM; echo ready; sleep 1000 & wait"]
stop_signal = "USR1"
stop_timeout = "30s"
env = {{ MARK = "{}" }}
"#,
            mark.display()
        ),
    );
    // The traps are set before "ready" is printed.
    forkd.log.wait_line("graceful#0: ready", T);
    // Well inside stop_timeout: only the signal itself can stop it this fast.
    let stop = forkctl(&socket, &["--timeout", "10s", "stop", "graceful"]);
    assert_eq!(stop.code, 0, "{stop:?}");
    assert_eq!(
        std::fs::read_to_string(&mark).expect("the trap wrote its mark"),
        "USR1\n"
    );
    let exit = forkd.log.wait_line("graceful#0 (pid", T);
    assert!(
        exit.contains("exited with code 0"),
        "the trap's own exit, not a SIGKILL: {exit}"
    );
}
