//! Programs that daemonize themselves (`pidfile = "/run/x.pid"`), as
//! systemd's `Type=forking` with `PIDFile=`.
//!
//! The process forkd started (the launcher) may fork, detach and exit 0;
//! the daemon it leaves re-parents to forkd, the child subreaper. From the
//! spawn on, forkd removes a stale pidfile, then polls it from the loop's
//! timers (never blocking) until `start_timeout`. A pid is taken as the
//! instance's main process only when it is alive, adopted by forkd (its
//! parent is forkd, so `waitpid` reaps it), not a child forkd already knows,
//! and in the instance's cgroup where it has one; and only once the
//! launcher has exited (unless the pidfile names the launcher itself).
//! A pid whose ancestry never reaches forkd is someone else's: the start
//! fails at once. So does a launcher exiting non-zero, or no usable pid by
//! `start_timeout`; each counts as a failed start for the back-off.
//!
//! While waiting, the instance is `running` with the launcher's pid; the
//! state machine learns nothing until the daemon is adopted (its pid
//! replaces the launcher's) or the start failed.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::unistd::Pid;

use super::instance::{Event, State};
use super::stragglers::Sweep;
use super::{Owner, Supervisor};
use crate::process::{proc_stat, ExitKind, ProcStat};

/// How often a pidfile is read while forkd waits for it.
const POLL: Duration = Duration::from_millis(25);

/// An instance whose daemon forkd is waiting for.
#[derive(Debug)]
pub(super) struct Daemonizing {
    pidfile: PathBuf,
    launcher: Pid,
    /// The launcher was reaped (with success).
    launcher_gone: bool,
    deadline: Instant,
    next_poll: Instant,
    /// Why the last read gave no pid, for the failure message.
    last: String,
}

/// What a read of the pidfile says.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Adopt(Pid),
    Wait(String),
    Foreign(String),
}

impl Daemonizing {
    /// Removes a stale pidfile before a spawn, so that a pid of a previous
    /// run is never taken for the new one (after the spawn would be too
    /// late: the new daemon may have written it already).
    pub(super) fn remove_stale(pidfile: &Path) {
        if let Err(e) = std::fs::remove_file(pidfile) {
            if e.kind() != std::io::ErrorKind::NotFound {
                log::warn!("cannot remove stale pidfile {}: {e}", pidfile.display());
            }
        }
    }

    /// After the adopted daemon `pid` exited: its pidfile, if it still
    /// names it, is stale now.
    pub(super) fn remove_after(pidfile: &Path, pid: Pid) {
        let names_it = std::fs::read_to_string(pidfile)
            .is_ok_and(|text| text.trim().parse() == Ok(pid.as_raw()));
        if names_it {
            Daemonizing::remove_stale(pidfile);
        }
    }

    /// Starts waiting for `launcher`'s daemon.
    pub(super) fn new(pidfile: &Path, launcher: Pid, timeout: Duration) -> Daemonizing {
        let now = Instant::now();
        Daemonizing {
            pidfile: pidfile.to_path_buf(),
            launcher,
            launcher_gone: false,
            deadline: now + timeout,
            next_poll: now + POLL,
            last: format!("{} was not written", pidfile.display()),
        }
    }

    /// Whether the launcher was reaped (nothing will exit before the
    /// daemon is adopted).
    pub(super) fn launcher_gone(&self) -> bool {
        self.launcher_gone
    }

    /// When the loop should next look at this instance.
    pub(super) fn due(&self) -> Instant {
        self.next_poll.min(self.deadline)
    }
}

impl Supervisor {
    /// The nearest pidfile poll or start deadline.
    pub(super) fn pidfile_deadline(&self) -> Option<Instant> {
        self.programs
            .iter()
            .flat_map(|p| p.daemonizing.values())
            .map(Daemonizing::due)
            .min()
    }

    /// Reads every due pidfile; adopts daemons, fails starts past their
    /// `start_timeout`.
    pub(super) fn poll_pidfiles(&mut self, now: Instant) {
        let due: Vec<(usize, usize)> = self
            .programs
            .iter()
            .enumerate()
            .flat_map(|(p, program)| {
                program
                    .daemonizing
                    .iter()
                    .filter(|(_, d)| d.due() <= now)
                    .map(move |(&index, _)| (p, index))
            })
            .collect();
        for (p, index) in due {
            self.poll_pidfile(p, index, now);
        }
    }

    /// A reaped launcher of a daemonizing instance: true when it was
    /// handled here (it exited 0: the daemon is awaited, nothing else
    /// happens), false when the exit is for the state machine (a failed
    /// start, or a stop).
    pub(super) fn launcher_exited(
        &mut self,
        name: &str,
        index: usize,
        pid: Pid,
        exit: ExitKind,
    ) -> bool {
        let Some(p) = self.programs.iter().position(|p| p.config.name == name) else {
            return false;
        };
        let program = &mut self.programs[p];
        let running = program
            .instances
            .get(index)
            .is_some_and(|i| i.state == State::Running);
        let Some(d) = program.daemonizing.get_mut(&index) else {
            return false;
        };
        if d.launcher != pid {
            return false;
        }
        if !(running && exit.success()) {
            program.daemonizing.remove(&index);
            return false;
        }
        log::info!(
            "{name}#{index} (pid {pid}) detached; reading {}",
            d.pidfile.display()
        );
        d.launcher_gone = true;
        self.poll_pidfile(p, index, Instant::now());
        true
    }

    /// A stop of a daemonizing instance whose launcher is gone: nothing
    /// will exit, so the stop completes now.
    pub(super) fn stop_daemonizing(&mut self, name: &str, index: usize) {
        let Some(p) = self.programs.iter().position(|p| p.config.name == name) else {
            return;
        };
        if self.programs[p]
            .daemonizing
            .get(&index)
            .is_some_and(Daemonizing::launcher_gone)
        {
            self.programs[p].daemonizing.remove(&index);
            self.apply(name, index, Event::Exited(ExitKind::Code(0)));
        }
    }

    fn poll_pidfile(&mut self, p: usize, index: usize, now: Instant) {
        let forkd = nix::unistd::getpid();
        let program = &self.programs[p];
        let Some(d) = program.daemonizing.get(&index) else {
            return;
        };
        let cgroup = program.cgroups.get(&index).map(|c| c.pids());
        let verdict = match std::fs::read_to_string(&d.pidfile) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Verdict::Wait(format!("{} was not written", d.pidfile.display()))
            }
            Err(e) => Verdict::Wait(format!("cannot read {}: {e}", d.pidfile.display())),
            Ok(text) => judge(
                &text,
                d,
                forkd,
                |pid| self.children.contains_key(&pid),
                cgroup.as_deref(),
            ),
        };
        let name = program.config.name.clone();
        let pidfile = d.pidfile.display().to_string();
        let failure = match verdict {
            Verdict::Adopt(pid) => {
                self.programs[p].daemonizing.remove(&index);
                self.adopt_daemon(&name, p, index, pid);
                return;
            }
            Verdict::Wait(why) if now < self.programs[p].daemonizing[&index].deadline => {
                let d = self.programs[p]
                    .daemonizing
                    .get_mut(&index)
                    .expect("looked up above");
                d.last = why;
                d.next_poll = now + POLL;
                return;
            }
            Verdict::Wait(_) => {
                let d = &self.programs[p].daemonizing[&index];
                let timeout = crate::logging::human_duration(self.programs[p].config.start_timeout);
                format!("no daemon pid within start_timeout ({timeout}): {}", d.last)
            }
            Verdict::Foreign(why) => format!("{pidfile}: {why}"),
        };
        let d = self.programs[p]
            .daemonizing
            .remove(&index)
            .expect("looked up above");
        log::error!("{name}#{index}: start failed: {failure}");
        // The launcher, if still there, and what it started go now; its
        // exit is then an orphan's, the start having failed already.
        if !d.launcher_gone {
            self.children.remove(&d.launcher);
        }
        let program = &mut self.programs[p];
        let cgroup = program.cgroups.remove(&index);
        if let Some(inst) = program.instances.get_mut(index) {
            inst.remember(format!("forkd: {failure}"), self.config.daemon.log_lines);
        }
        self.apply(&name, index, Event::SpawnFailed(failure));
        let who = format!("{name}#{index}");
        self.sweep_group(who, (&name, index), d.launcher, cgroup, Sweep::Kill);
    }

    /// From now on `pid` is `name#index`'s main process.
    fn adopt_daemon(&mut self, name: &str, p: usize, index: usize, pid: Pid) {
        let program = &mut self.programs[p];
        let group = match nix::unistd::getpgid(Some(pid)) {
            // Never forkd's own group (a daemon that did not detach from it).
            Ok(group) if group != nix::unistd::getpgrp() => group,
            _ => pid,
        };
        program.daemon_groups.insert(index, group);
        if let Some(inst) = program.instances.get_mut(index) {
            inst.pid = Some(pid);
        }
        log::info!("{name}#{index}: daemon pid {pid} adopted, supervised as the main process");
        self.children.insert(
            pid,
            Owner::Instance {
                program: name.to_string(),
                index,
            },
        );
    }
}

/// Reads a pidfile's `text` for the instance `d` waits for: `forkd` is
/// forkd's pid, `known` tells a child forkd already supervises, `cgroup`
/// lists the instance cgroup's pids where it has one.
fn judge(
    text: &str,
    d: &Daemonizing,
    forkd: Pid,
    known: impl Fn(Pid) -> bool,
    cgroup: Option<&[Pid]>,
) -> Verdict {
    let Ok(raw) = text.trim().parse::<i32>() else {
        // Perhaps half-written: read again at the next poll.
        return Verdict::Wait(format!("no pid in it ({:?})", text.trim()));
    };
    if raw <= 1 {
        return Verdict::Foreign(format!("pid {raw} is not a daemon forkd started"));
    }
    let pid = Pid::from_raw(raw);
    if pid == d.launcher && !d.launcher_gone {
        return Verdict::Adopt(pid);
    }
    let Some(ProcStat { state, parent, .. }) = proc_stat(pid) else {
        return Verdict::Wait(format!("pid {pid} does not exist"));
    };
    if state == 'Z' {
        return Verdict::Wait(format!("pid {pid} has exited"));
    }
    if pid == forkd || (known(pid) && pid != d.launcher) {
        return Verdict::Foreign(format!("pid {pid} is forkd's or another program's"));
    }
    if cgroup.is_some_and(|members| !members.contains(&pid)) {
        return Verdict::Foreign(format!("pid {pid} is not in the instance's cgroup"));
    }
    if !descends_from(parent, forkd) {
        return Verdict::Foreign(format!(
            "pid {pid} is not a descendant of forkd: someone else's process"
        ));
    }
    if parent != forkd || !d.launcher_gone {
        return Verdict::Wait(format!("pid {pid} is not yet adopted by forkd"));
    }
    Verdict::Adopt(pid)
}

/// Whether `pid` is `ancestor` or below it (a bounded walk up the ppids).
fn descends_from(mut pid: Pid, ancestor: Pid) -> bool {
    for _ in 0..64 {
        if pid == ancestor {
            return true;
        }
        match proc_stat(pid) {
            Some(s) if s.parent.as_raw() > 0 => pid = s.parent,
            _ => return false,
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiting(launcher: Pid, gone: bool) -> Daemonizing {
        Daemonizing {
            pidfile: PathBuf::from("/nonexistent/x.pid"),
            launcher,
            launcher_gone: gone,
            deadline: Instant::now(),
            next_poll: Instant::now(),
            last: String::new(),
        }
    }

    #[test]
    fn a_pid_that_is_not_forkds_descendant_is_refused() {
        let me = nix::unistd::getpid();
        let d = waiting(Pid::from_raw(i32::MAX), true);
        // This test process stands for forkd; its parent (cargo) is foreign.
        let parent = nix::unistd::getppid();
        let verdict = judge(&parent.to_string(), &d, me, |_| false, None);
        assert!(matches!(verdict, Verdict::Foreign(_)), "{verdict:?}");
        assert!(matches!(
            judge("1\n", &d, me, |_| false, None),
            Verdict::Foreign(_)
        ));
        assert!(matches!(
            judge(&me.to_string(), &d, me, |_| false, None),
            Verdict::Foreign(_)
        ));
    }

    #[test]
    fn an_empty_or_dead_pidfile_is_waited_for() {
        let me = nix::unistd::getpid();
        let d = waiting(Pid::from_raw(i32::MAX), true);
        assert!(matches!(
            judge("", &d, me, |_| false, None),
            Verdict::Wait(_)
        ));
        // A pid past pid_max never exists.
        assert!(matches!(
            judge("2147483000", &d, me, |_| false, None),
            Verdict::Wait(_)
        ));
    }

    #[test]
    fn the_launchers_own_pid_is_taken_while_it_runs() {
        let me = nix::unistd::getpid();
        let launcher = Pid::from_raw(4242);
        let d = waiting(launcher, false);
        assert_eq!(
            judge("4242\n", &d, me, |_| true, None),
            Verdict::Adopt(launcher)
        );
    }
}
