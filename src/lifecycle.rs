//! The life of one worker slot, as a pure state machine: the one lifecycle
//! behind every pool of forked workers (prefork and event workers of a
//! service, their datagram workers, and worker pools).
//!
//! A slot is wanted or not; a wanted slot holds a worker or waits to fork
//! one, after a back-off when its last worker died young. [`Slot::step`] is
//! one exhaustive `match (state, event)` that updates the slot and returns
//! what the caller must do. It forks nothing, signals nothing and reads no
//! clock: times come in with the events, so its tests feed events directly.
//! The back-off is the programs' one ([`Backoff`]: doubling, capped,
//! jittered), reset once a worker has lived `stable_after`.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::unistd::Pid;

use crate::process::Backoff;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Not wanted, no worker.
    Vacant,
    /// Wanted: fork a worker at `at` (now or after a back-off).
    Pending { at: Instant },
    /// A worker runs, forked at `since`.
    Running { pid: Pid, since: Instant },
    /// Its worker was told to go (drain, spare trimming, stop): it is not
    /// replaced when it exits.
    Retiring { pid: Pid },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// Keep a worker in this slot.
    Want { now: Instant },
    /// Stop wanting it; a running worker gets `signal` (again, on a second
    /// retire: SIGTERM then SIGKILL).
    Retire { signal: Signal },
    /// Time passed: a pending slot whose time has come forks.
    Tick { now: Instant },
    /// The fork succeeded.
    Spawned { pid: Pid, now: Instant },
    /// The fork failed.
    SpawnFailed { now: Instant },
    /// The worker was reaped. `recycled`: it exited by design after its
    /// quota of work (`max_requests`), which is no failure.
    Exited { now: Instant, recycled: bool },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    None,
    /// Fork a worker into this slot now, then report `Spawned` or
    /// `SpawnFailed`.
    Spawn,
    /// Send this signal to the slot's worker.
    Signal(Pid, Signal),
    /// The worker is gone and is replaced after `delay` (zero: at once);
    /// `young` when it died before `stable_after` (a fast failure).
    Replace {
        delay: Duration,
        young: bool,
    },
    /// The fork failed; tried again after `delay`.
    Retry {
        delay: Duration,
    },
    /// The worker is gone and the slot stays empty.
    Vacated,
}

/// What a slot's restart policy needs.
#[derive(Debug, Clone)]
pub struct Policy {
    /// A worker that lived this long did not fail fast.
    pub stable_after: Duration,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
}

/// One slot and its history.
#[derive(Debug, Clone)]
pub struct Slot {
    pub state: State,
    /// Fast failures (and failed forks) in a row.
    pub failures: u32,
    stable_after: Duration,
    backoff: Backoff,
}

impl Slot {
    /// A vacant slot; `seed` varies the jitter between slots.
    pub fn new(policy: &Policy, seed: u64) -> Slot {
        Slot {
            state: State::Vacant,
            failures: 0,
            stable_after: policy.stable_after,
            backoff: Backoff::new(policy.backoff_initial, policy.backoff_max, seed),
        }
    }

    /// The worker's pid, if one runs.
    pub fn pid(&self) -> Option<Pid> {
        match self.state {
            State::Running { pid, .. } | State::Retiring { pid } => Some(pid),
            State::Vacant | State::Pending { .. } => None,
        }
    }

    /// Whether the slot should hold a worker (running or on its way).
    pub fn is_wanted(&self) -> bool {
        matches!(self.state, State::Pending { .. } | State::Running { .. })
    }

    /// When a pending slot forks next.
    pub fn deadline(&self) -> Option<Instant> {
        match self.state {
            State::Pending { at } => Some(at),
            _ => None,
        }
    }

    /// Applies `event` and returns what to do.
    pub fn step(&mut self, event: Event) -> Action {
        use Event as E;
        use State as S;
        match (self.state, event) {
            (S::Vacant, E::Want { now }) => {
                self.state = S::Pending { at: now };
                Action::None
            }
            (_, E::Want { .. }) => Action::None,

            (S::Pending { .. }, E::Retire { .. }) => {
                self.state = S::Vacant;
                Action::None
            }
            (S::Running { pid, .. } | S::Retiring { pid }, E::Retire { signal }) => {
                self.state = S::Retiring { pid };
                Action::Signal(pid, signal)
            }
            (S::Vacant, E::Retire { .. }) => Action::None,

            (S::Pending { at }, E::Tick { now }) if now >= at => Action::Spawn,
            (_, E::Tick { .. }) => Action::None,

            (S::Pending { .. }, E::Spawned { pid, now }) => {
                self.state = S::Running { pid, since: now };
                Action::None
            }
            (S::Pending { .. }, E::SpawnFailed { now }) => {
                self.failures = self.failures.saturating_add(1);
                let delay = self.backoff.delay(self.failures);
                self.state = S::Pending { at: now + delay };
                Action::Retry { delay }
            }
            // A spawn is only reported for the slot that asked for it.
            (_, E::Spawned { .. } | E::SpawnFailed { .. }) => Action::None,

            (S::Running { since, .. }, E::Exited { now, recycled }) => {
                let young = !recycled && now.duration_since(since) < self.stable_after;
                self.failures = if young {
                    self.failures.saturating_add(1)
                } else {
                    0
                };
                let delay = self.backoff.delay(self.failures);
                self.state = S::Pending { at: now + delay };
                Action::Replace { delay, young }
            }
            (S::Retiring { .. }, E::Exited { .. }) => {
                self.state = S::Vacant;
                Action::Vacated
            }
            (S::Vacant | S::Pending { .. }, E::Exited { .. }) => Action::None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: Policy = Policy {
        stable_after: Duration::from_secs(1),
        backoff_initial: Duration::from_millis(100),
        backoff_max: Duration::from_secs(5),
    };

    fn running(slot: &mut Slot, now: Instant, pid: i32) {
        assert_eq!(slot.step(Event::Want { now }), Action::None);
        assert_eq!(slot.step(Event::Tick { now }), Action::Spawn);
        let pid = Pid::from_raw(pid);
        assert_eq!(slot.step(Event::Spawned { pid, now }), Action::None);
        assert_eq!(slot.pid(), Some(pid));
    }

    #[test]
    fn a_wanted_slot_forks_at_once_and_runs() {
        let t0 = Instant::now();
        let mut slot = Slot::new(&POLICY, 1);
        assert!(!slot.is_wanted());
        assert_eq!(
            slot.step(Event::Tick { now: t0 }),
            Action::None,
            "vacant: nothing"
        );
        running(&mut slot, t0, 10);
        assert!(slot.is_wanted());
        assert_eq!(
            slot.step(Event::Want { now: t0 }),
            Action::None,
            "already wanted"
        );
    }

    #[test]
    fn young_deaths_back_off_with_jitter_and_a_stable_run_resets() {
        let t0 = Instant::now();
        let mut slot = Slot::new(&POLICY, 7);
        running(&mut slot, t0, 10);
        let mut delays = Vec::new();
        let mut now = t0;
        for pid in 11..15 {
            now += Duration::from_millis(10);
            let Action::Replace { delay, young: true } = slot.step(Event::Exited {
                now,
                recycled: false,
            }) else {
                panic!("a young death is a fast failure");
            };
            delays.push(delay);
            assert_eq!(
                slot.step(Event::Tick { now }),
                Action::None,
                "not before the delay"
            );
            now += delay;
            assert_eq!(slot.step(Event::Tick { now }), Action::Spawn);
            slot.step(Event::Spawned {
                pid: Pid::from_raw(pid),
                now,
            });
        }
        // 100, 200, 400, 800 ms, each scaled by a jitter in [0.8, 1.0].
        for (i, d) in delays.iter().enumerate() {
            let full = Duration::from_millis(100 << i);
            assert!(*d <= full && *d >= full.mul_f64(0.8), "{i}: {d:?}");
        }
        assert_eq!(slot.failures, 4);
        now += Duration::from_secs(2);
        assert_eq!(
            slot.step(Event::Exited {
                now,
                recycled: false
            }),
            Action::Replace {
                delay: Duration::ZERO,
                young: false
            }
        );
        assert_eq!(slot.failures, 0);
    }

    #[test]
    fn a_recycled_worker_is_replaced_at_once_however_young() {
        let t0 = Instant::now();
        let mut slot = Slot::new(&POLICY, 3);
        running(&mut slot, t0, 10);
        let now = t0 + Duration::from_millis(5);
        assert_eq!(
            slot.step(Event::Exited {
                now,
                recycled: true
            }),
            Action::Replace {
                delay: Duration::ZERO,
                young: false
            }
        );
    }

    #[test]
    fn a_retired_worker_is_signalled_escalated_and_not_replaced() {
        let t0 = Instant::now();
        let mut slot = Slot::new(&POLICY, 5);
        running(&mut slot, t0, 10);
        let pid = Pid::from_raw(10);
        assert_eq!(
            slot.step(Event::Retire {
                signal: Signal::SIGTERM
            }),
            Action::Signal(pid, Signal::SIGTERM)
        );
        assert!(!slot.is_wanted());
        assert_eq!(
            slot.step(Event::Retire {
                signal: Signal::SIGKILL
            }),
            Action::Signal(pid, Signal::SIGKILL)
        );
        assert_eq!(
            slot.step(Event::Exited {
                now: t0,
                recycled: false
            }),
            Action::Vacated
        );
        assert_eq!(slot.state, State::Vacant);
        // Retiring a slot still waiting to fork just cancels it.
        slot.step(Event::Want { now: t0 });
        assert_eq!(
            slot.step(Event::Retire {
                signal: Signal::SIGTERM
            }),
            Action::None
        );
        assert_eq!(slot.step(Event::Tick { now: t0 }), Action::None);
    }

    #[test]
    fn failed_forks_back_off_too() {
        let t0 = Instant::now();
        let mut slot = Slot::new(&POLICY, 9);
        slot.step(Event::Want { now: t0 });
        assert_eq!(slot.step(Event::Tick { now: t0 }), Action::Spawn);
        let Action::Retry { delay } = slot.step(Event::SpawnFailed { now: t0 }) else {
            panic!("a failed fork is retried");
        };
        assert!(delay >= Duration::from_millis(80));
        assert_eq!(slot.deadline(), Some(t0 + delay));
    }
}
