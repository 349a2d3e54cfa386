//! What an instance's main process leaves behind when it exits on its own
//! (a crash, or a normal exit): the rest of its process group.
//!
//! Every program leads its own session and process group (`process::exec`
//! step 2), so the group's id is the main process's pid. When that process
//! is reaped while the instance was running, forkd sends the program's
//! `stop_signal` to the group and SIGKILL at `stop_timeout`, exactly as a
//! stop does. The members re-parent to forkd (the child subreaper) and are
//! reaped by the loop as orphans; after each such reap the group is checked
//! and forgotten once empty, so a group id (a pid) is never signalled after
//! the kernel could have reused it.
//!
//! A restart of the instance waits for its old group: it runs at the
//! back-off deadline, or once the old group is empty or has been sent
//! SIGKILL, whichever is later, so it waits at most `stop_timeout`. Two
//! generations of one program never run side by side for long (ports,
//! pidfiles, locks), and a leftover never delays a restart forever.
//! After a stop (`Stopping`, or a retiring instance) the group already had
//! the stop signal: what survives the leader gets SIGKILL at once, and is
//! tracked here only until it is reaped.
//!
//! Where the instance has a cgroup of its own (`process::cgroup`), the
//! cgroup is swept with the group: it reaches descendants that called
//! setsid(2). The cgroup is removed once empty.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::unistd::Pid;

use super::instance::State;
use super::Supervisor;
use crate::process::{self, cgroup::InstanceCgroup};

/// A process group (and cgroup) whose leader, an instance's main process,
/// has exited.
#[derive(Debug)]
pub(super) struct Straggler {
    /// `name#index`, and whether it is a retiring program's, for the log.
    who: String,
    program: String,
    index: usize,
    group: Pid,
    cgroup: Option<InstanceCgroup>,
    /// When SIGKILL follows the stop signal; `None` once it was sent.
    kill_at: Option<Instant>,
    /// The restart deadline the back-off chose, postponed to `kill_at`
    /// while this group lives.
    restart_at: Option<Instant>,
}

/// What to do with what a leader left.
pub(super) enum Sweep {
    /// It exited on its own: `stop_signal` now, SIGKILL after `stop_timeout`.
    Stop(Signal, Duration),
    /// It was being stopped: SIGKILL now.
    Kill,
}

impl Supervisor {
    /// After `program#index`'s main process `leader` was reaped (the
    /// instance has taken the exit already): stops what it left in its
    /// process group and `cgroup`, and holds a pending restart of a
    /// program in the table until that is done. `who` names it in the log.
    pub(super) fn sweep_group(
        &mut self,
        who: String,
        (program, index): (&str, usize),
        leader: Pid,
        cgroup: Option<InstanceCgroup>,
        sweep: Sweep,
    ) {
        let mut s = Straggler {
            who,
            program: program.to_string(),
            index,
            group: leader,
            cgroup,
            kill_at: None,
            restart_at: None,
        };
        if s.is_empty() {
            s.remove_cgroup();
            return;
        }
        match sweep {
            Sweep::Kill => s.signal(Signal::SIGKILL),
            Sweep::Stop(signal, timeout) => {
                log::info!(
                    "{} (pid {leader}) left processes behind: sending {signal}, SIGKILL in {}",
                    s.who,
                    crate::logging::human_duration(timeout)
                );
                s.signal(signal);
                let kill_at = Instant::now() + timeout;
                s.kill_at = Some(kill_at);
                let inst = self
                    .programs
                    .iter_mut()
                    .find(|p| p.config.name == program)
                    .and_then(|p| p.instances.get_mut(index));
                if let Some(inst) = inst {
                    if inst.state == State::Backoff && inst.deadline.is_some_and(|d| d < kill_at) {
                        s.restart_at = inst.deadline;
                        inst.deadline = Some(kill_at);
                    }
                }
            }
        }
        self.stragglers.push(s);
    }

    /// The nearest SIGKILL deadline of a leftover group.
    pub(super) fn straggler_deadline(&self) -> Option<Instant> {
        self.stragglers.iter().filter_map(|s| s.kill_at).min()
    }

    /// SIGKILL for every leftover group whose stop_timeout passed (all of
    /// them with `all`: SIGQUIT, a second TERM).
    pub(super) fn kill_stragglers(&mut self, now: Instant, all: bool) {
        for s in &mut self.stragglers {
            if s.kill_at.is_some_and(|at| all || at <= now) {
                s.kill_at = None;
                log::warn!(
                    "{}: processes outlived its main process: sending SIGKILL",
                    s.who
                );
                s.signal(Signal::SIGKILL);
            }
        }
        self.forget_empty_groups();
    }

    /// Forgets every leftover group with no process left (after a reap of
    /// one of its members), letting a restart it held run at its back-off
    /// deadline.
    pub(super) fn forget_empty_groups(&mut self) {
        if self.stragglers.is_empty() {
            return;
        }
        let now = Instant::now();
        let (gone, live): (Vec<Straggler>, Vec<Straggler>) = std::mem::take(&mut self.stragglers)
            .into_iter()
            .partition(Straggler::is_empty);
        self.stragglers = live;
        for s in gone {
            log::debug!("{}: nothing left of group {}", s.who, s.group);
            s.remove_cgroup();
            let Some(restart_at) = s.restart_at else {
                continue;
            };
            let inst = self
                .programs
                .iter_mut()
                .find(|p| p.config.name == s.program)
                .and_then(|p| p.instances.get_mut(s.index));
            if let Some(inst) = inst {
                if inst.state == State::Backoff && s.kill_at.is_some() && inst.deadline == s.kill_at
                {
                    inst.deadline = Some(restart_at.max(now));
                }
            }
        }
    }

    /// Whether a leftover group is still being stopped (shutdown waits).
    pub(super) fn stragglers_left(&self) -> bool {
        !self.stragglers.is_empty()
    }
}

impl Straggler {
    /// No process (not even a zombie) left in the group, none in the cgroup.
    fn is_empty(&self) -> bool {
        nix::sys::signal::killpg(self.group, None) == Err(nix::errno::Errno::ESRCH)
            && !self.cgroup.as_ref().is_some_and(|c| c.members() > 0)
    }

    fn signal(&self, signal: Signal) {
        if let Err(e) = process::signal_group(self.group, signal) {
            log::warn!(
                "{}: cannot send {signal} to group {}: {e}",
                self.who,
                self.group
            );
        }
        if let Some(cgroup) = &self.cgroup {
            cgroup.signal(signal);
        }
    }

    fn remove_cgroup(&self) {
        if let Some(cgroup) = &self.cgroup {
            if !cgroup.remove() {
                log::warn!("{}: cannot remove {}", self.who, cgroup.dir().display());
            }
        }
    }
}
