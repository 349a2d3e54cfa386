//! Start order between programs (`after`), built on readiness
//! (`readiness.rs`).
//!
//! A start of a program whose `after` programs are not all ready is held
//! (the instance waits, `waiting for db`) and carried out once they are; a
//! dependency that never gets ready (or goes FATAL) keeps it waiting, as
//! systemd and s6-rc do. Only starts are held: a restart after a crash is
//! not, and a running program stays up when a dependency fails later. A
//! stop of several programs (shutdown, `forkctl stop all`) stops a program
//! only once every program being stopped that lists it in `after` has no
//! process left (each within its own stop_timeout, then SIGKILL).

use std::time::Instant;

use super::instance::{Event, Instance, State};
use super::{Program, Supervisor};

/// Programs whose stop waits for their dependents.
#[derive(Debug, Default)]
pub(super) struct StopOrder {
    held: Vec<String>,
}

impl Supervisor {
    /// Each turn: probes and `ready_after` timers, then held starts whose
    /// dependencies became ready, then stops whose dependents are gone.
    pub(super) fn order_reconcile(&mut self, now: Instant) {
        self.check_readiness(now);
        if self.shutdown.is_none() {
            self.start_waiting();
        }
        self.stop_after_dependents();
    }

    /// Names in program `p`'s `after` that are not ready (in order).
    pub(super) fn unready_dependencies(&self, p: usize) -> Vec<String> {
        self.unready_dependencies_of(&self.programs[p])
    }

    pub(super) fn unready_dependencies_of(&self, program: &Program) -> Vec<String> {
        program
            .config
            .after
            .iter()
            .filter(|name| {
                self.programs
                    .iter()
                    .find(|q| &q.config.name == *name)
                    .is_some_and(|q| !q.instances.iter().all(Instance::counts_as_ready))
            })
            .cloned()
            .collect()
    }

    /// The state of the first instance of program `name` that is not ready.
    pub(super) fn dependency_state(&self, name: &str) -> State {
        self.programs
            .iter()
            .find(|q| q.config.name == name)
            .and_then(|q| q.instances.iter().find(|i| !i.counts_as_ready()))
            .map_or(State::Stopped, |i| i.state)
    }

    /// Carries out held starts whose `after` programs are all ready.
    fn start_waiting(&mut self) {
        for p in 0..self.programs.len() {
            let waiting = self.programs[p]
                .instances
                .iter()
                .any(|i| i.state == State::Waiting);
            if waiting && self.unready_dependencies(p).is_empty() {
                let name = self.programs[p].config.name.clone();
                for index in 0..self.programs[p].instances.len() {
                    if self.programs[p].instances[index].state == State::Waiting {
                        self.apply(&name, index, Event::Start);
                    }
                }
            }
        }
    }

    /// Stops `names` dependents first: a program that another running
    /// program lists in `after` is stopped once that one has no process.
    pub(super) fn stop_in_order(&mut self, names: Vec<String>) {
        for name in names {
            if !self.stop_order.held.contains(&name) {
                self.stop_order.held.push(name);
            }
        }
        self.stop_after_dependents();
    }

    /// Whether program `name`'s stop is held for its dependents (its
    /// pending restarts then stop instead).
    pub(super) fn stop_held(&self, name: &str) -> bool {
        self.stop_order.held.iter().any(|n| n == name)
    }

    fn stop_after_dependents(&mut self) {
        if self.stop_order.held.is_empty() {
            return;
        }
        let held = std::mem::take(&mut self.stop_order.held);
        let mut still_held = Vec::new();
        for name in &held {
            // A dependent that is not being stopped itself (`forkctl stop db`
            // alone) does not hold db up: `after` orders, it does not bind.
            let dependents: Vec<&str> = self
                .programs
                .iter()
                .filter(|q| q.config.after.contains(name))
                .filter(|q| q.instances.iter().any(|i| i.pid.is_some()))
                .filter(|q| {
                    held.contains(&q.config.name)
                        || q.instances.iter().any(|i| i.state == State::Stopping)
                })
                .map(|q| q.config.name.as_str())
                .collect();
            let name = name.clone();
            if dependents.is_empty() {
                self.stop_program(&name, None);
            } else {
                log::debug!("{name}: stop waits for {}", dependents.join(", "));
                still_held.push(name);
            }
        }
        // Instances without a process have nothing to wait for.
        for name in &still_held {
            for index in 0..self.program_index_len(name) {
                let idle = self
                    .program_position(name)
                    .and_then(|p| self.programs[p].instances.get(index))
                    .is_some_and(|i| i.pid.is_none());
                if idle {
                    self.apply(name, index, Event::Stop);
                }
            }
        }
        self.stop_order.held = still_held;
    }

    fn program_index_len(&self, name: &str) -> usize {
        self.program_position(name)
            .map_or(0, |p| self.programs[p].instances.len())
    }

    /// Forgets held stops (SIGKILL for everyone makes order moot).
    pub(super) fn clear_held_stops(&mut self) {
        self.stop_order.held.clear();
    }
}
