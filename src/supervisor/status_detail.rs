//! Why an instance is down and what happens next, in the operator's words:
//! `backoff (attempt 3 of 5, next in 4.2s; last: exit 3)`,
//! `fatal since 10:02:11 (5 fast failures; last: killed by SIGSEGV)`,
//! `waiting for db`. The `status` reply carries it as `detail` beside the
//! fields it is made of; `forkctl status` prints it in the STATE column.

use std::time::Instant;

use serde_json::{json, Value};

use super::instance::{Ended, Instance, State};
use crate::logging::human_duration;
use crate::process::ExitKind;

/// The fields behind the detail, to merge into an instance's JSON:
/// `attempts`, `max_attempts`, `next_attempt_in_ms`, `fatal_since`,
/// `waiting_for`, `ready` (this run passed its `ready` check),
/// `notify_status` (its last `STATUS=`), `detail`.
pub(super) fn fields(
    inst: &Instance,
    start_retries: u32,
    waiting_for: &[(String, State)],
    now: Instant,
) -> Value {
    let names: Vec<&str> = waiting_for.iter().map(|(n, _)| n.as_str()).collect();
    let next_in = inst
        .deadline
        .filter(|_| matches!(inst.state, State::Backoff | State::Fatal))
        .map(|d| d.saturating_duration_since(now));
    let fatal_since = inst
        .fatal_since
        .filter(|_| inst.state == State::Fatal)
        .map(crate::logging::utc_timestamp);
    json!({
        "attempts": inst.failures,
        "max_attempts": start_retries,
        "next_attempt_in_ms": next_in.map(|d| d.as_millis() as u64),
        "fatal_since": fatal_since,
        "waiting_for": names,
        "ready": inst.ready,
        "notify_status": inst.notify_status,
        "detail": detail(inst, start_retries, waiting_for, now),
    })
}

/// The sentence, or `None` when the state says it all (running, stopped).
/// `waiting_for` pairs each unready dependency with the state of its first
/// unready instance: one that is down or backing off is named with its
/// state (`waiting for db (fatal)`).
pub(super) fn detail(
    inst: &Instance,
    start_retries: u32,
    waiting_for: &[(String, State)],
    now: Instant,
) -> Option<String> {
    let next_in = inst
        .deadline
        .map(|d| human_duration(d.saturating_duration_since(now)));
    let last = inst.last_exit.as_ref().map(|(ended, _)| short_last(ended));
    let last = last.map_or(String::new(), |l| format!("; last: {l}"));
    match inst.state {
        State::Waiting => {
            let names: Vec<String> = waiting_for
                .iter()
                .map(|(name, state)| match state {
                    // On its way up (or held itself): the name says it.
                    State::Running | State::Waiting | State::Stopping => name.clone(),
                    down => format!("{name} ({})", down.as_str()),
                })
                .collect();
            Some(format!("waiting for {}", names.join(", ")))
        }
        State::Backoff => {
            let next = next_in.unwrap_or_else(|| "0ms".into());
            let attempt = if inst.failures > 0 {
                format!("attempt {} of {start_retries}, ", inst.failures)
            } else {
                String::new()
            };
            Some(format!("backoff ({attempt}next in {next}{last})"))
        }
        State::Fatal => {
            let since = inst
                .fatal_since
                .map(crate::logging::utc_timestamp)
                .map_or(String::new(), |t| {
                    format!(" since {}", t.get(11..19).unwrap_or(&t))
                });
            let failures =
                crate::logging::count(inst.failures as usize, "fast failure", "fast failures");
            let retry = next_in.map_or(String::new(), |n| format!("; retry in {n}"));
            Some(format!("fatal{since} ({failures}{last}{retry})"))
        }
        State::Exited => inst
            .last_exit
            .as_ref()
            .map(|(e, _)| format!("exited ({})", short_last(e))),
        State::Stopped | State::Running | State::Stopping => None,
    }
}

/// `exit 3`, `killed by SIGSEGV`, or why the spawn failed.
fn short_last(ended: &Ended) -> String {
    match ended {
        Ended::Exit(ExitKind::Code(c)) => format!("exit {c}"),
        Ended::Exit(exit @ ExitKind::Signal(_)) => exit.to_string(),
        Ended::SpawnFailed(why) => why.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    #[test]
    fn backoff_and_fatal_say_why_and_what_next() {
        let now = Instant::now();
        let mut inst = Instance {
            state: State::Backoff,
            failures: 3,
            deadline: Some(now + Duration::from_millis(4200)),
            last_exit: Some((Ended::Exit(ExitKind::Code(3)), SystemTime::now())),
            ..Instance::default()
        };
        assert_eq!(
            detail(&inst, 5, &[], now).unwrap(),
            "backoff (attempt 3 of 5, next in 4.2s; last: exit 3)"
        );
        inst.state = State::Fatal;
        inst.failures = 6;
        inst.deadline = None;
        inst.fatal_since = Some(SystemTime::UNIX_EPOCH + Duration::from_secs(10 * 3600 + 131));
        inst.last_exit = Some((
            Ended::Exit(ExitKind::Signal(libc::SIGSEGV)),
            SystemTime::now(),
        ));
        assert_eq!(
            detail(&inst, 5, &[], now).unwrap(),
            "fatal since 10:02:11 (6 fast failures; last: killed by SIGSEGV)"
        );
        let fields = fields(&inst, 5, &[], now);
        let held = Instance {
            state: State::Waiting,
            ..Instance::default()
        };
        let deps = [
            ("db".to_string(), State::Fatal),
            ("cache".to_string(), State::Running),
        ];
        assert_eq!(
            detail(&held, 5, &deps, now).unwrap(),
            "waiting for db (fatal), cache"
        );
        assert_eq!(fields["fatal_since"], "1970-01-01T10:02:11.000Z");
        assert_eq!(fields["next_attempt_in_ms"], Value::Null);
    }
}
