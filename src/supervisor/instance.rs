//! The life of one program instance as a pure state machine.
//!
//! States follow supervisord's (STOPPED, RUNNING, BACKOFF, STOPPING, EXITED,
//! FATAL); forkd knows that exec succeeded (the spawn reports it), so there
//! is no STARTING guesswork: an exit before `stable_after` counts as a fast
//! failure instead. [`step`] is one exhaustive `match (state, event)` that
//! updates the instance and returns what the supervisor must do. It forks
//! nothing and reads no clock, so its tests feed events directly.

use std::collections::VecDeque;
use std::time::{Duration, Instant, SystemTime};

use nix::unistd::Pid;

use crate::config::{ProgramConfig, RestartPolicy};
use crate::process::{Backoff, ExitKind};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Not running, by choice (never started, or stopped).
    Stopped,
    /// Wanted, but held back until the programs in its `after` are ready.
    Waiting,
    Running,
    /// Waiting out a restart delay.
    Backoff,
    /// Stop signal sent; waiting for the exit (SIGKILL at the deadline).
    Stopping,
    /// Exited and the restart policy says to leave it down.
    Exited,
    /// Failed `start_retries + 1` times in a row; stays down until started,
    /// or until `fatal_retry` has passed.
    Fatal,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Stopped => "stopped",
            State::Waiting => "waiting",
            State::Running => "running",
            State::Backoff => "backoff",
            State::Stopping => "stopping",
            State::Exited => "exited",
            State::Fatal => "fatal",
        }
    }

    /// True when no process exists and none is due on a timer (a waiting
    /// instance starts only once its `after` programs and pools are ready).
    pub fn is_down(self) -> bool {
        matches!(
            self,
            State::Stopped | State::Waiting | State::Exited | State::Fatal
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Operator or start-up wants it running.
    Start,
    /// Wanted running, but a program in its `after` is not ready yet: the
    /// supervisor sends `Start` once they all are.
    Hold,
    /// Operator or shutdown wants it stopped gracefully.
    Stop,
    /// Stop now with SIGKILL (second TERM, SIGQUIT).
    Kill,
    /// The spawn succeeded: the program was exec'd.
    Spawned(Pid),
    /// The spawn failed before the program ran: the reason, as the
    /// caller logged it (`exec failed: No such file or directory`).
    SpawnFailed(String),
    /// The process was reaped.
    Exited(ExitKind),
    /// The instance's deadline passed.
    Timer,
}

/// How an instance's last run ended, for `forkctl status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// The process was reaped.
    Exit(ExitKind),
    /// No process ran: the spawn failed, for this reason.
    SpawnFailed(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    None,
    Spawn,
    /// Send this signal to the process group.
    Signal(i32),
}

/// What the restart policy needs from a program's config.
#[derive(Debug, Clone)]
pub struct Policy {
    pub restart: RestartPolicy,
    pub stable_after: Duration,
    pub start_retries: u32,
    pub stop_signal: i32,
    pub stop_timeout: Duration,
    /// Retry a FATAL instance after this long, with a fresh count of
    /// `start_retries` (supervisord's users ask for it: supervisor#1509).
    pub fatal_retry: Option<Duration>,
}

impl From<&ProgramConfig> for Policy {
    fn from(c: &ProgramConfig) -> Policy {
        Policy {
            restart: c.restart,
            stable_after: c.stable_after,
            start_retries: c.start_retries,
            stop_signal: c.stop_signal,
            stop_timeout: c.stop_timeout,
            fatal_retry: c.fatal_retry,
        }
    }
}

/// One instance (`name#index`) of a program and its history.
#[derive(Debug, Clone)]
pub struct Instance {
    pub state: State,
    pub pid: Option<Pid>,
    pub started: Option<(Instant, SystemTime)>,
    /// Consecutive fast failures.
    pub failures: u32,
    /// Restarts scheduled by the policy since forkd started.
    pub restarts: u64,
    pub last_exit: Option<(Ended, SystemTime)>,
    /// When the next timer event is due (restart, SIGKILL, or the
    /// `fatal_retry` of a FATAL instance).
    pub deadline: Option<Instant>,
    /// When the instance went FATAL, for operators.
    pub fatal_since: Option<SystemTime>,
    /// The delay chosen for the pending restart, for operators.
    pub next_delay: Option<Duration>,
    /// Recent output lines, bounded by `[daemon] log_lines`.
    pub recent: VecDeque<String>,
    /// Sequence number of the newest line in `recent` (lines ever seen), so
    /// `forkctl log -f` can ask for what came after.
    pub recent_seq: u64,
    /// forkd sent this run SIGKILL itself (stop_timeout ran out, a second
    /// SIGTERM, SIGQUIT): its death by SIGKILL is then no surprise.
    pub killed: bool,
    /// This run passed its `ready` check (`readiness.rs` sets it): programs
    /// that list this one in `after` may start.
    pub ready: bool,
    /// The last `STATUS=` this run sent on its `NOTIFY_SOCKET`.
    pub notify_status: Option<String>,
}

impl Default for Instance {
    fn default() -> Instance {
        Instance {
            state: State::Stopped,
            pid: None,
            started: None,
            failures: 0,
            restarts: 0,
            last_exit: None,
            deadline: None,
            fatal_since: None,
            next_delay: None,
            recent: VecDeque::new(),
            recent_seq: 0,
            killed: false,
            ready: false,
            notify_status: None,
        }
    }
}

impl Instance {
    /// Keeps `line` in the ring of recent output that `forkctl log` reads,
    /// at most `keep` lines (0 keeps none, but the line still counts).
    pub fn remember(&mut self, line: String, keep: usize) {
        self.recent_seq += 1;
        if keep == 0 {
            return;
        }
        while self.recent.len() >= keep {
            self.recent.pop_front();
        }
        self.recent.push_back(line);
    }

    /// Ready for the programs that list it in `after`: this run passed its
    /// `ready` check, or it exited successfully and its restart policy
    /// leaves it down (a one-shot job such as a migration has done its work).
    pub fn counts_as_ready(&self) -> bool {
        self.ready
            || (self.state == State::Exited
                && matches!(&self.last_exit, Some((Ended::Exit(e), _)) if e.success()))
    }

    /// Whether `exit` is one forkd asked for: a success, or any exit while
    /// stopping except a SIGKILL that forkd had not sent (someone else's,
    /// the OOM killer's, during the stop_timeout).
    pub fn expects(&self, exit: ExitKind) -> bool {
        exit.success()
            || (self.state == State::Stopping
                && (self.killed || exit != ExitKind::Signal(libc::SIGKILL)))
    }
}

/// Applies `event` to `inst` and returns what to do. `now` is the loop's
/// clock, `backoff` the program's delay generator.
pub fn step(
    inst: &mut Instance,
    policy: &Policy,
    backoff: &mut Backoff,
    event: Event,
    now: Instant,
) -> Action {
    use State::*;
    match (inst.state, event) {
        (Stopped | Exited | Fatal | Backoff, Event::Hold) => {
            inst.state = Waiting;
            inst.failures = 0;
            inst.deadline = None;
            inst.next_delay = None;
            inst.fatal_since = None;
            Action::None
        }
        (Stopped | Waiting | Exited | Fatal | Backoff, Event::Start) => {
            if inst.state != Backoff {
                inst.failures = 0;
            }
            inst.deadline = None;
            Action::Spawn
        }
        (Backoff, Event::Timer) => {
            inst.deadline = None;
            Action::Spawn
        }
        // Only a `fatal_retry` arms a FATAL instance's timer: a new round
        // of `start_retries` fast failures begins.
        (Fatal, Event::Timer) if policy.fatal_retry.is_some() => {
            inst.failures = 0;
            inst.deadline = None;
            Action::Spawn
        }
        (_, Event::Spawned(pid)) => {
            inst.state = Running;
            inst.ready = false;
            inst.notify_status = None;
            inst.pid = Some(pid);
            inst.killed = false;
            inst.started = Some((now, SystemTime::now()));
            inst.deadline = None;
            inst.next_delay = None;
            inst.fatal_since = None;
            Action::None
        }
        (_, Event::SpawnFailed(reason)) => {
            inst.started = Some((now, SystemTime::now()));
            inst.last_exit = Some((Ended::SpawnFailed(reason), SystemTime::now()));
            after_failure(inst, policy, backoff, true, true, now)
        }
        (Running, Event::Exited(exit)) => {
            inst.ready = false;
            let uptime = inst.started.map(|(at, _)| now - at).unwrap_or_default();
            inst.pid = None;
            inst.last_exit = Some((Ended::Exit(exit), SystemTime::now()));
            let restart = match policy.restart {
                RestartPolicy::Always => true,
                RestartPolicy::OnFailure => !exit.success(),
                RestartPolicy::Never => false,
            };
            after_failure(
                inst,
                policy,
                backoff,
                uptime < policy.stable_after,
                restart,
                now,
            )
        }
        (Stopping, Event::Exited(exit)) => {
            inst.state = Stopped;
            inst.ready = false;
            inst.pid = None;
            inst.deadline = None;
            inst.last_exit = Some((Ended::Exit(exit), SystemTime::now()));
            Action::None
        }
        (Running, Event::Stop) => {
            inst.state = Stopping;
            inst.deadline = Some(now + policy.stop_timeout);
            Action::Signal(policy.stop_signal)
        }
        (Running | Stopping, Event::Kill) | (Stopping, Event::Timer) => {
            inst.state = Stopping;
            inst.deadline = None;
            inst.killed = true;
            Action::Signal(libc::SIGKILL)
        }
        (Backoff | Fatal | Waiting, Event::Stop | Event::Kill) => {
            inst.fatal_since = None;
            inst.state = Stopped;
            inst.deadline = None;
            inst.next_delay = None;
            Action::None
        }
        // Already where the event would take it, or a stale timer/exit.
        (Running | Stopping, Event::Start | Event::Hold)
        | (Waiting, Event::Hold | Event::Timer)
        | (Stopping, Event::Stop)
        | (Stopped | Exited, Event::Stop | Event::Kill | Event::Timer)
        | (Fatal, Event::Timer)
        | (Running, Event::Timer)
        | (Stopped | Waiting | Exited | Fatal | Backoff, Event::Exited(_)) => Action::None,
    }
}

/// After an exit (or a failed spawn) that the stop path did not ask for:
/// count a fast failure, then restart after a delay, give up, or stay down.
fn after_failure(
    inst: &mut Instance,
    policy: &Policy,
    backoff: &mut Backoff,
    fast: bool,
    restart: bool,
    now: Instant,
) -> Action {
    inst.failures = if fast {
        inst.failures.saturating_add(1)
    } else {
        0
    };
    inst.pid = None;
    if !restart {
        inst.state = State::Exited;
    } else if inst.failures > policy.start_retries {
        inst.state = State::Fatal;
        inst.fatal_since = Some(SystemTime::now());
        inst.deadline = policy.fatal_retry.map(|d| now + d);
        inst.next_delay = policy.fatal_retry;
    } else {
        let delay = backoff.delay(inst.failures);
        inst.state = State::Backoff;
        inst.deadline = Some(now + delay);
        inst.next_delay = Some(delay);
        inst.restarts += 1;
    }
    Action::None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(restart: RestartPolicy, retries: u32) -> Policy {
        Policy {
            restart,
            stable_after: Duration::from_secs(10),
            start_retries: retries,
            stop_signal: libc::SIGTERM,
            stop_timeout: Duration::from_secs(5),
            fatal_retry: None,
        }
    }

    fn running(inst: &mut Instance, p: &Policy, b: &mut Backoff, now: Instant) {
        assert_eq!(step(inst, p, b, Event::Start, now), Action::Spawn);
        step(inst, p, b, Event::Spawned(Pid::from_raw(100)), now);
        assert_eq!(inst.state, State::Running);
    }

    #[test]
    fn fast_crashes_back_off_then_go_fatal_after_start_retries() {
        let p = policy(RestartPolicy::Always, 2);
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1), 1);
        let mut inst = Instance::default();
        let now = Instant::now();
        running(&mut inst, &p, &mut b, now);
        let mut delays = Vec::new();
        for _ in 0..2 {
            step(&mut inst, &p, &mut b, Event::Exited(ExitKind::Code(1)), now);
            assert_eq!(inst.state, State::Backoff);
            delays.push(inst.next_delay.unwrap());
            assert_eq!(
                step(&mut inst, &p, &mut b, Event::Timer, now),
                Action::Spawn
            );
            step(
                &mut inst,
                &p,
                &mut b,
                Event::Spawned(Pid::from_raw(101)),
                now,
            );
        }
        assert!(delays[1] > delays[0], "delays grow: {delays:?}");
        step(&mut inst, &p, &mut b, Event::Exited(ExitKind::Code(1)), now);
        assert_eq!(inst.state, State::Fatal);
        assert_eq!(inst.restarts, 2);
    }

    #[test]
    fn a_stable_run_resets_the_failure_count() {
        let p = policy(RestartPolicy::Always, 1);
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1), 1);
        let mut inst = Instance::default();
        let start = Instant::now();
        running(&mut inst, &p, &mut b, start);
        step(
            &mut inst,
            &p,
            &mut b,
            Event::Exited(ExitKind::Code(1)),
            start,
        );
        assert_eq!(inst.failures, 1);
        step(&mut inst, &p, &mut b, Event::Timer, start);
        step(
            &mut inst,
            &p,
            &mut b,
            Event::Spawned(Pid::from_raw(7)),
            start,
        );
        let later = start + Duration::from_secs(11);
        step(
            &mut inst,
            &p,
            &mut b,
            Event::Exited(ExitKind::Code(1)),
            later,
        );
        assert_eq!((inst.state, inst.failures), (State::Backoff, 0));
        assert_eq!(inst.next_delay, Some(Duration::ZERO));
    }

    #[test]
    fn restart_policies_decide_on_the_exit_status() {
        let mut b = Backoff::new(Duration::ZERO, Duration::ZERO, 1);
        let now = Instant::now();
        for (restart, exit, expected) in [
            (RestartPolicy::Never, ExitKind::Code(1), State::Exited),
            (RestartPolicy::OnFailure, ExitKind::Code(0), State::Exited),
            (
                RestartPolicy::OnFailure,
                ExitKind::Signal(9),
                State::Backoff,
            ),
            (RestartPolicy::Always, ExitKind::Code(0), State::Backoff),
        ] {
            let p = policy(restart, 5);
            let mut inst = Instance::default();
            running(&mut inst, &p, &mut b, now);
            step(&mut inst, &p, &mut b, Event::Exited(exit), now);
            assert_eq!(inst.state, expected, "{restart:?} after {exit}");
        }
    }

    #[test]
    fn stop_signals_then_kills_at_the_deadline_and_never_respawns() {
        let p = policy(RestartPolicy::Always, 5);
        let mut b = Backoff::new(Duration::ZERO, Duration::ZERO, 1);
        let mut inst = Instance::default();
        let now = Instant::now();
        running(&mut inst, &p, &mut b, now);
        assert_eq!(
            step(&mut inst, &p, &mut b, Event::Stop, now),
            Action::Signal(libc::SIGTERM)
        );
        assert_eq!(inst.deadline, Some(now + p.stop_timeout));
        let sigkill = ExitKind::Signal(libc::SIGKILL);
        assert!(!inst.expects(sigkill), "forkd has sent only SIGTERM");
        assert!(inst.expects(ExitKind::Signal(libc::SIGTERM)));
        assert_eq!(
            step(&mut inst, &p, &mut b, Event::Timer, now),
            Action::Signal(libc::SIGKILL)
        );
        assert!(inst.expects(sigkill), "forkd sent SIGKILL itself");
        step(
            &mut inst,
            &p,
            &mut b,
            Event::Exited(ExitKind::Signal(9)),
            now,
        );
        assert_eq!(inst.state, State::Stopped);
        assert_eq!(step(&mut inst, &p, &mut b, Event::Timer, now), Action::None);
    }

    #[test]
    fn stopping_a_pending_restart_cancels_it() {
        let p = policy(RestartPolicy::Always, 5);
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(1), 1);
        let mut inst = Instance::default();
        let now = Instant::now();
        running(&mut inst, &p, &mut b, now);
        step(&mut inst, &p, &mut b, Event::Exited(ExitKind::Code(3)), now);
        assert_eq!(inst.state, State::Backoff);
        step(&mut inst, &p, &mut b, Event::Stop, now);
        assert_eq!((inst.state, inst.deadline), (State::Stopped, None));
    }

    #[test]
    fn a_failed_spawn_counts_as_a_fast_failure() {
        let p = policy(RestartPolicy::Always, 0);
        let mut b = Backoff::new(Duration::ZERO, Duration::ZERO, 1);
        let mut inst = Instance::default();
        let now = Instant::now();
        step(&mut inst, &p, &mut b, Event::Start, now);
        let why = "exec failed: No such file or directory".to_string();
        step(&mut inst, &p, &mut b, Event::SpawnFailed(why.clone()), now);
        assert_eq!(inst.state, State::Fatal);
        assert!(matches!(&inst.last_exit, Some((Ended::SpawnFailed(w), _)) if *w == why));
    }

    #[test]
    fn fatal_retry_starts_a_new_round_after_its_delay_and_stop_cancels_it() {
        let mut p = policy(RestartPolicy::Always, 0);
        let mut b = Backoff::new(Duration::ZERO, Duration::ZERO, 1);
        let now = Instant::now();
        let mut plain = Instance::default();
        running(&mut plain, &p, &mut b, now);
        step(
            &mut plain,
            &p,
            &mut b,
            Event::Exited(ExitKind::Code(1)),
            now,
        );
        assert_eq!((plain.state, plain.deadline), (State::Fatal, None));
        assert!(plain.fatal_since.is_some());
        assert_eq!(
            step(&mut plain, &p, &mut b, Event::Timer, now),
            Action::None
        );

        p.fatal_retry = Some(Duration::from_secs(300));
        let mut inst = Instance::default();
        running(&mut inst, &p, &mut b, now);
        step(&mut inst, &p, &mut b, Event::Exited(ExitKind::Code(1)), now);
        assert_eq!(inst.state, State::Fatal);
        assert_eq!(inst.deadline, Some(now + Duration::from_secs(300)));
        assert_eq!(
            step(&mut inst, &p, &mut b, Event::Timer, now),
            Action::Spawn
        );
        assert_eq!(inst.failures, 0);
        step(&mut inst, &p, &mut b, Event::Spawned(Pid::from_raw(9)), now);
        assert_eq!((inst.state, inst.fatal_since), (State::Running, None));

        step(&mut inst, &p, &mut b, Event::Exited(ExitKind::Code(1)), now);
        step(&mut inst, &p, &mut b, Event::Stop, now);
        assert_eq!((inst.state, inst.deadline), (State::Stopped, None));
    }

    #[test]
    fn a_held_start_waits_until_started_and_a_stop_cancels_it() {
        let p = policy(RestartPolicy::Always, 5);
        let mut b = Backoff::new(Duration::ZERO, Duration::ZERO, 1);
        let now = Instant::now();
        let mut inst = Instance::default();
        assert_eq!(step(&mut inst, &p, &mut b, Event::Hold, now), Action::None);
        assert_eq!(inst.state, State::Waiting);
        assert_eq!(step(&mut inst, &p, &mut b, Event::Timer, now), Action::None);
        assert_eq!(
            step(&mut inst, &p, &mut b, Event::Start, now),
            Action::Spawn
        );
        step(&mut inst, &p, &mut b, Event::Spawned(Pid::from_raw(5)), now);
        assert_eq!((inst.state, inst.ready), (State::Running, false));
        let mut held = Instance::default();
        step(&mut held, &p, &mut b, Event::Hold, now);
        step(&mut held, &p, &mut b, Event::Stop, now);
        assert_eq!(held.state, State::Stopped);
    }
}
