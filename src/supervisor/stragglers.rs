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
//! A stop (`Stopping`) is not handled here: its group already had the stop
//! signal, and what survives the leader gets SIGKILL at once.

use std::time::Instant;

use nix::sys::signal::Signal;
use nix::unistd::Pid;

use super::instance::State;
use super::Supervisor;
use crate::process;

/// A process group whose leader, an instance's main process, has exited.
#[derive(Debug)]
pub(super) struct Straggler {
    program: String,
    index: usize,
    group: Pid,
    /// When SIGKILL follows the stop signal; `None` once it was sent.
    kill_at: Option<Instant>,
    /// The restart deadline the back-off chose, postponed to `kill_at`
    /// while this group lives.
    restart_at: Option<Instant>,
}

impl Supervisor {
    /// After `name#index`'s main process `leader` exited on its own (the
    /// instance has taken the exit already): stops what it left in its
    /// process group, and holds a pending restart until that is done.
    pub(super) fn sweep_group(&mut self, name: &str, index: usize, leader: Pid) {
        if group_empty(leader) {
            return;
        }
        let Some(program) = self.programs.iter_mut().find(|p| p.config.name == name) else {
            return;
        };
        let (sig, timeout) = (program.config.stop_signal, program.config.stop_timeout);
        let signal = Signal::try_from(sig).unwrap_or(Signal::SIGTERM);
        log::info!(
            "{name}#{index} (pid {leader}) left processes in its group: sending {signal}, \
             SIGKILL in {}",
            crate::logging::human_duration(timeout)
        );
        if let Err(e) = process::signal_group(leader, signal) {
            log::warn!("{name}#{index}: cannot send {signal} to group {leader}: {e}");
        }
        let kill_at = Instant::now() + timeout;
        let mut restart_at = None;
        if let Some(inst) = program.instances.get_mut(index) {
            if inst.state == State::Backoff && inst.deadline.is_some_and(|d| d < kill_at) {
                restart_at = inst.deadline;
                inst.deadline = Some(kill_at);
            }
        }
        self.stragglers.push(Straggler {
            program: name.to_string(),
            index,
            group: leader,
            kill_at: Some(kill_at),
            restart_at,
        });
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
                    "{}#{}: group {} outlived its leader: sending SIGKILL",
                    s.program,
                    s.index,
                    s.group
                );
                let _ = process::signal_group(s.group, Signal::SIGKILL);
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
            .partition(|s| group_empty(s.group));
        self.stragglers = live;
        for s in gone {
            log::debug!("{}#{}: group {} is empty", s.program, s.index, s.group);
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

/// Whether no process (not even a zombie) is left in group `pgid`.
fn group_empty(pgid: Pid) -> bool {
    nix::sys::signal::killpg(pgid, None) == Err(nix::errno::Errno::ESRCH)
}
