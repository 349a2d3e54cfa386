//! Programs on their way out after a reload: removed from the config, or
//! replaced by a changed version whose new instances already run.
//!
//! A retiring program leaves the programs table at once (so its name is
//! free for its replacement, and `forkctl` acts only on the new one) but
//! stays tracked here under a numeric key until every instance is reaped:
//! its pids are re-keyed in the children map to [`Owner::Retiring`], its
//! stop deadlines still escalate to SIGKILL, and shutdown still kills it.
//! It is dropped when its last instance is down. Nothing here ever spawns.

use std::time::Instant;

use nix::sys::signal::Signal;
use nix::unistd::Pid;

use super::instance::{Action, Event};
use super::stragglers::Sweep;
use super::{Owner, Program, Source, Supervisor};
use crate::process::ExitKind;

/// An old program being stopped.
#[derive(Debug)]
pub(super) struct Retiring {
    key: u64,
    /// "removed" or "replaced", for the log.
    why: &'static str,
    program: Program,
}

impl Retiring {
    pub(super) fn key(&self) -> u64 {
        self.key
    }

    pub(super) fn program_mut(&mut self) -> &mut Program {
        &mut self.program
    }
}

impl Supervisor {
    /// Takes `program` out of the table's name space: its children are
    /// re-keyed so their exits come here. Call before anything new with the
    /// same name is spawned; then [`stop_retiring`](Self::stop_retiring).
    pub(super) fn retire(&mut self, program: Program, why: &'static str) -> u64 {
        let key = self.reload.next_retiring_key;
        self.reload.next_retiring_key += 1;
        let name = program.config.name.clone();
        for owner in self.children.values_mut() {
            if let Owner::Instance { program: p, index } = owner {
                if *p == name {
                    *owner = Owner::Retiring { key, index: *index };
                }
            }
        }
        for source in self.sources.values_mut() {
            if let Source::Output(pipe) = source {
                if pipe.belongs_to(&name) {
                    pipe.retire(key, why);
                }
            }
        }
        self.reload.retiring.push(Retiring { key, why, program });
        key
    }

    /// Sends each live instance of a retiring program its stop signal
    /// (SIGKILL follows at its stop_timeout).
    pub(super) fn stop_retiring(&mut self, key: u64) {
        let count = self
            .reload
            .retiring
            .iter()
            .find(|r| r.key == key)
            .map_or(0, |r| r.program.instances.len());
        for index in 0..count {
            self.step_retiring(key, index, Event::Stop);
        }
        self.drop_if_down(key);
    }

    /// A reaped pid that belonged to a retiring program.
    pub(super) fn retired_instance_exited(
        &mut self,
        key: u64,
        index: usize,
        pid: Pid,
        exit: ExitKind,
    ) {
        let mut leftovers = None;
        if let Some(r) = self.reload.retiring.iter_mut().find(|r| r.key == key) {
            let cgroup = r.program.cgroups.remove(&index);
            let name = &r.program.config.name;
            leftovers = Some((format!("{name}#{index} ({})", r.why), name.clone(), cgroup));
            let why = r.why;
            if r.program
                .instances
                .get(index)
                .is_some_and(|i| i.expects(exit))
            {
                log::info!("{name}#{index} ({why}, pid {pid}) {exit}");
            } else {
                log::warn!("{name}#{index} ({why}, pid {pid}) {}", exit.unexpected());
            }
        }
        // The leader is gone; take down what it left in its group.
        if let Some((who, name, cgroup)) = leftovers {
            self.sweep_group(who, (&name, index), pid, cgroup, Sweep::Kill);
        }
        self.step_retiring(key, index, Event::Exited(exit));
        self.drop_if_down(key);
    }

    /// The nearest SIGKILL deadline among retiring instances.
    pub(super) fn retiring_deadline(&self) -> Option<Instant> {
        self.reload
            .retiring
            .iter()
            .flat_map(|r| r.program.instances.iter())
            .filter_map(|i| i.deadline)
            .min()
    }

    /// Escalates every retiring instance whose stop_timeout passed.
    pub(super) fn run_retiring_timers(&mut self, now: Instant) {
        let mut due = Vec::new();
        for r in &self.reload.retiring {
            for (index, inst) in r.program.instances.iter().enumerate() {
                if inst.deadline.is_some_and(|d| d <= now) {
                    due.push((r.key, index));
                }
            }
        }
        for (key, index) in due {
            self.step_retiring(key, index, Event::Timer);
        }
    }

    /// SIGKILL for every retiring instance (second TERM, SIGQUIT).
    pub(super) fn kill_retiring(&mut self) {
        let all: Vec<(u64, usize)> = self
            .reload
            .retiring
            .iter()
            .flat_map(|r| (0..r.program.instances.len()).map(move |i| (r.key, i)))
            .collect();
        for (key, index) in all {
            self.step_retiring(key, index, Event::Kill);
        }
    }

    /// Pids of retiring instances still running, for status and tests.
    pub fn retiring_pids(&self) -> Vec<(String, Pid)> {
        self.reload
            .retiring
            .iter()
            .flat_map(|r| {
                r.program
                    .instances
                    .iter()
                    .filter_map(|i| i.pid.map(|pid| (r.program.config.name.clone(), pid)))
            })
            .collect()
    }

    fn step_retiring(&mut self, key: u64, index: usize, event: Event) {
        let Some(r) = self.reload.retiring.iter_mut().find(|r| r.key == key) else {
            return;
        };
        let now = Instant::now();
        let Some((action, pid)) = r.program.step_instance(index, event, now) else {
            return;
        };
        // A daemon never adopted: its launcher is gone, nothing will exit.
        if r.program
            .daemonizing
            .get(&index)
            .is_some_and(|d| d.launcher_gone())
        {
            r.program.daemonizing.remove(&index);
            r.program
                .step_instance(index, Event::Exited(ExitKind::Code(0)), now);
        }
        match action {
            Action::None => {}
            // Retiring programs are never started again.
            Action::Spawn => {}
            Action::Signal(sig) => {
                if let (Some(pid), Ok(signal)) = (pid, Signal::try_from(sig)) {
                    log::info!(
                        "{}#{index} ({}, pid {pid}): sending {signal}",
                        r.program.config.name,
                        r.why
                    );
                    r.program.signal_instance(index, pid, signal);
                }
            }
        }
    }

    /// Forgets a retiring program once no instance of it is left.
    fn drop_if_down(&mut self, key: u64) {
        let Some(pos) = self.reload.retiring.iter().position(|r| r.key == key) else {
            return;
        };
        let r = &self.reload.retiring[pos];
        if r.program.instances.iter().all(|i| i.state.is_down()) {
            log::info!(
                "reload: {} ({}): every old instance is down",
                r.program.config.name,
                r.why
            );
            self.reload.retiring.remove(pos);
        }
    }
}
