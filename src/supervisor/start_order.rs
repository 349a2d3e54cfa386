//! Start order between programs and pools (`after`), built on readiness
//! (`readiness.rs`; a pool is ready once all its workers are spawned and
//! serving).
//!
//! A start of a program whose `after` programs and pools are not all ready
//! is held (the instance waits, `waiting for db`) and carried out once they
//! are; a pool's workers are held the same way (the pool waits, jobs sent
//! to it queue). A
//! dependency that never gets ready (or goes FATAL) keeps it waiting, as
//! systemd and s6-rc do. Only starts are held: a restart after a crash is
//! not, and a running program stays up when a dependency fails later. A
//! stop of several programs (shutdown, `forkctl stop all`) stops a program
//! only once every program being stopped that lists it in `after` has no
//! process left (each within its own stop_timeout, then SIGKILL); at
//! shutdown a program is stopped only once the pools that list it have no
//! worker left.

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
        self.unready_of(&program.config.after)
    }

    /// The names in `after` whose program or pool is not ready (in order).
    /// A program is ready when all its instances are, a pool when all its
    /// workers are spawned and serving; a name that no longer runs (a
    /// reload removed it) holds nothing.
    pub(super) fn unready_of(&self, after: &[String]) -> Vec<String> {
        after
            .iter()
            .filter(|name| {
                let program = self.programs.iter().find(|q| &q.config.name == *name);
                match program {
                    Some(q) => !q.instances.iter().all(Instance::counts_as_ready),
                    None => self
                        .pool_id(name)
                        .and_then(|id| self.pools.list.iter().find(|p| p.id == id))
                        .is_some_and(|p| !p.pool.is_ready()),
                }
            })
            .cloned()
            .collect()
    }

    /// The state of the first instance of program `name` that is not ready;
    /// a pool on its way up is `Running` (its name says it), a held one
    /// `Waiting`.
    pub(super) fn dependency_state(&self, name: &str) -> State {
        if let Some(running) = self
            .pool_id(name)
            .and_then(|id| self.pools.list.iter().find(|p| p.id == id))
        {
            return if running.pool.held() {
                State::Waiting
            } else {
                State::Running
            };
        }
        self.programs
            .iter()
            .find(|q| q.config.name == name)
            .and_then(|q| q.instances.iter().find(|i| !i.counts_as_ready()))
            .map_or(State::Stopped, |i| i.state)
    }

    /// Carries out held starts (of programs, and of pools' workers) whose
    /// `after` programs and pools are all ready.
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
        let released: Vec<(u64, String)> = self
            .pools
            .list
            .iter()
            .filter(|p| p.pool.held() && self.unready_of(&p.pool.config.after).is_empty())
            .map(|p| (p.id, p.pool.name().to_string()))
            .collect();
        for (id, name) in released {
            log::info!("pool \"{name}\": everything in its after is ready; starting its workers");
            self.with_pool(id, |pool, now, ctx| pool.release(now, ctx));
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
                .chain(self.dependent_pools(name))
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

    /// Pools listing program `name` in `after` that still have workers
    /// while forkd shuts down (pools stop once the services drained): the
    /// program is stopped after them.
    fn dependent_pools<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        let stopping = self.shutdown.is_some();
        self.pools
            .list
            .iter()
            .filter(move |p| stopping && p.pool.config.after.iter().any(|n| n == name))
            .filter(|p| p.pool.has_processes())
            .map(|p| p.pool.name())
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
