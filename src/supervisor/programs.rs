//! `[[program]]`s in the loop: feeding instance events, spawning from an
//! [`ExecPlan`], wiring output pipes, and saying what happened in the
//! operator's words (`api#2 (pid 4242) exited with code 3`).

use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::time::Instant;

use mio::Interest;
use nix::sys::signal::Signal;
use nix::unistd::Pid;

use super::events::Event as Ev;
use super::instance::{self, Action, Event, Instance, Policy, State};
use super::output::OutputPipe;
use super::pidfile::Daemonizing;
use super::stragglers::Sweep;
use super::{Owner, Source, Supervisor};
use crate::config::{Output, ProgramConfig};
use crate::process::cgroup::InstanceCgroup;
use crate::process::{self, Backoff, ChildFd, Credentials, ExitKind, Prepared};

/// A program and its instances.
#[derive(Debug)]
pub struct Program {
    pub config: ProgramConfig,
    pub instances: Vec<Instance>,
    /// Write ends of the instances' log pipes, by (index, is_stderr).
    log_writers: HashMap<(usize, bool), OwnedFd>,
    policy: Policy,
    backoff: Backoff,
    /// What every spawn of this program shares, built at the first spawn
    /// and again after a failed one (the command may have been installed,
    /// the user created): see [`Supervisor::prepared`].
    prepared: Option<PreparedProgram>,
    /// The instances' `NOTIFY_SOCKET`s (`ready = "notify"`), by index.
    pub(super) notify: HashMap<usize, super::readiness::NotifyAddress>,
    /// The cgroup of each running instance's current spawn, by index
    /// (only where forkd has a delegated cgroup subtree).
    pub(super) cgroups: HashMap<usize, InstanceCgroup>,
    /// Instances whose daemon is awaited through `pidfile` (`pidfile.rs`).
    pub(super) daemonizing: HashMap<usize, Daemonizing>,
    /// The process group of each adopted daemon, by index (it is rarely
    /// led by the daemon itself, which forked after its setsid).
    pub(super) daemon_groups: HashMap<usize, Pid>,
}

/// The per-program part of a spawn, kept across restarts: argv, the
/// environment (with `FORKD_PROGRAM`, without `FORKD_INSTANCE`, which is
/// added per instance), the resolved path and credentials, the limits.
#[derive(Debug)]
struct PreparedProgram {
    command: Prepared,
    credentials: Option<Credentials>,
    rlimits: Vec<(libc::__rlimit_resource_t, u64)>,
}

impl PreparedProgram {
    fn new(config: &ProgramConfig) -> Result<PreparedProgram, String> {
        let program = ("FORKD_PROGRAM".to_string(), config.name.clone());
        let mut env = process::exec::child_environment(
            config
                .env
                .iter()
                .chain(std::iter::once((&program.0, &program.1))),
        );
        env.retain(|(k, _)| k != "FORKD_INSTANCE");
        let limits = &config.rlimits;
        Ok(PreparedProgram {
            command: Prepared::new(&config.command, &env).map_err(|e| e.to_string())?,
            credentials: process::resolve_credentials(
                config.user.as_deref(),
                config.group.as_deref(),
            )?,
            rlimits: [
                (libc::RLIMIT_NOFILE, limits.nofile),
                (libc::RLIMIT_NPROC, limits.nproc),
                (libc::RLIMIT_CORE, limits.core),
                (libc::RLIMIT_AS, limits.address_space),
            ]
            .into_iter()
            .filter_map(|(resource, value)| value.map(|v| (resource, v)))
            .collect(),
        })
    }
}

impl Program {
    pub fn new(config: &ProgramConfig) -> Program {
        let seed = u64::from(std::process::id())
            ^ std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1);
        Program {
            config: config.clone(),
            instances: (0..config.instances).map(|_| Instance::default()).collect(),
            log_writers: HashMap::new(),
            policy: Policy::from(config),
            backoff: Backoff::new(config.backoff_initial, config.backoff_max, seed),
            prepared: None,
            notify: HashMap::new(),
            cgroups: HashMap::new(),
            daemonizing: HashMap::new(),
            daemon_groups: HashMap::new(),
        }
    }
}

impl Program {
    /// A reload changed only policy keys (`Apply::InPlace` in
    /// `config/diff.rs`): the instances keep their processes, and what
    /// happens to them next (restart, back-off, stop) follows `config`.
    /// The instance count stays what `forkctl scale` may have made it.
    pub(super) fn apply_policy(&mut self, config: &ProgramConfig) {
        let instances = self.config.instances;
        self.config = config.clone();
        self.config.instances = instances;
        self.policy = Policy::from(config);
        self.backoff.initial = config.backoff_initial;
        self.backoff.max = config.backoff_max;
    }

    /// Closes forkd's write ends of instance `index`'s log pipes, once the
    /// instance is removed: its readers then see EOF when the last process
    /// holding the pipe is gone, and the loop drops them.
    pub(super) fn forget_instance_pipes(&mut self, index: usize) {
        self.log_writers.remove(&(index, false));
        self.log_writers.remove(&(index, true));
        self.notify.remove(&index);
    }

    /// Sends `signal` to instance `index`'s process group (led by `pid`)
    /// and to everything in its cgroup, if it has one.
    pub(super) fn signal_instance(&self, index: usize, pid: Pid, signal: Signal) {
        let group = self.daemon_groups.get(&index).copied().unwrap_or(pid);
        if group != pid {
            let _ = nix::sys::signal::kill(pid, signal);
        }
        if let Err(e) = process::signal_group(group, signal) {
            let name = &self.config.name;
            log::warn!("{name}#{index} (pid {pid}): cannot send {signal}: {e}");
        }
        if let Some(cgroup) = self.cgroups.get(&index) {
            cgroup.signal(signal);
        }
    }

    /// Feeds one event to one instance and returns the action with the pid
    /// the instance had before the event. For programs outside the table
    /// (retiring after a reload), which are only stopped, never spawned.
    pub(super) fn step_instance(
        &mut self,
        index: usize,
        event: Event,
        now: Instant,
    ) -> Option<(Action, Option<Pid>)> {
        let inst = self.instances.get_mut(index)?;
        let pid = inst.pid;
        let action = instance::step(inst, &self.policy, &mut self.backoff, event, now);
        Some((action, pid))
    }
}

impl Supervisor {
    fn program_index(&self, name: &str) -> Option<usize> {
        self.programs.iter().position(|p| p.config.name == name)
    }

    /// Instance indexes of `name`: one, or all when `index` is `None`.
    fn instance_indexes(&self, name: &str, index: Option<usize>) -> Vec<usize> {
        match (self.program_index(name), index) {
            (Some(p), None) => (0..self.programs[p].instances.len()).collect(),
            (Some(p), Some(i)) if i < self.programs[p].instances.len() => vec![i],
            _ => Vec::new(),
        }
    }

    pub fn start_program(&mut self, name: &str, index: Option<usize>) {
        for i in self.instance_indexes(name, index) {
            self.apply(name, i, Event::Start);
        }
    }

    pub fn stop_program(&mut self, name: &str, index: Option<usize>) {
        for i in self.instance_indexes(name, index) {
            self.apply(name, i, Event::Stop);
        }
    }

    pub fn kill_program(&mut self, name: &str) {
        for i in self.instance_indexes(name, None) {
            self.apply(name, i, Event::Kill);
        }
    }

    /// Feeds one event to one instance and carries out the action. A
    /// start whose `after` programs and pools are not all ready is held instead.
    pub(super) fn apply(&mut self, name: &str, index: usize, event: Event) {
        let Some(p) = self.program_index(name) else {
            return;
        };
        let mut event = event;
        let held_stop = self.stop_held(name);
        if event == Event::Timer
            && held_stop
            && self.programs[p].instances.get(index).map(|i| i.state) == Some(State::Backoff)
        {
            // Its stop waits for dependents: no restart in the meantime.
            event = Event::Stop;
        }
        if event == Event::Start {
            let unready = self.unready_dependencies(p);
            if !unready.is_empty() {
                if self.programs[p].instances.get(index).map(|i| i.state) != Some(State::Waiting) {
                    log::info!("{name}#{index} waiting for {}", unready.join(", "));
                }
                event = Event::Hold;
            }
        }
        let now = Instant::now();
        let program = &mut self.programs[p];
        let Some(inst) = program.instances.get_mut(index) else {
            return;
        };
        let before = inst.state;
        let pid = inst.pid;
        let timer = event == Event::Timer;
        let action = instance::step(inst, &program.policy, &mut program.backoff, event, now);
        let inst = &program.instances[index];
        if let Some(after) = program.policy.fatal_retry {
            if before == State::Fatal && timer && action == Action::Spawn {
                log::warn!(
                    "retrying FATAL program {name}#{index} after {} (fatal_retry)",
                    crate::logging::human_duration(after)
                );
            }
        }
        if inst.state != before {
            log_transition(name, index, inst, &program.policy);
            self.events.push_transition(name, index, inst);
        }
        match action {
            Action::None => {}
            Action::Spawn => self.spawn_instance(p, index),
            Action::Signal(sig) => {
                if let (Some(pid), Ok(signal)) = (pid, Signal::try_from(sig)) {
                    program.signal_instance(index, pid, signal);
                }
                if program.daemonizing.contains_key(&index) {
                    self.stop_daemonizing(name, index);
                }
            }
        }
    }

    /// A reaped pid that belonged to `name#index`.
    pub(super) fn instance_exited(&mut self, name: &str, index: usize, pid: Pid, exit: ExitKind) {
        if self.launcher_exited(name, index, pid, exit) {
            return;
        }
        let Some(p) = self.program_index(name) else {
            return;
        };
        let program = &mut self.programs[p];
        let cgroup = program.cgroups.remove(&index);
        let daemon_group = program.daemon_groups.remove(&index);
        if let (Some(_), Some(pidfile)) = (daemon_group, &program.config.pidfile) {
            Daemonizing::remove_after(pidfile, pid);
        }
        let group = daemon_group.unwrap_or(pid);
        let (signal, timeout) = (program.config.stop_signal, program.config.stop_timeout);
        let instance = program.instances.get(index);
        let stopping = instance.is_some_and(|i| i.state == State::Stopping);
        if instance.is_some_and(|i| i.expects(exit)) {
            log::info!("{name}#{index} (pid {pid}) {exit}");
        } else {
            log::warn!("{name}#{index} (pid {pid}) {}", exit.unexpected());
        }
        self.events.push(Ev::Exited {
            subject: format!("{name}#{index}"),
            pid: pid.as_raw(),
            how: exit.to_string(),
        });
        self.apply(name, index, Event::Exited(exit));
        // The leader is gone; take down what it left in its group.
        let sweep = if stopping {
            Sweep::Kill
        } else {
            Sweep::Stop(Signal::try_from(signal).unwrap_or(Signal::SIGTERM), timeout)
        };
        self.sweep_group(
            format!("{name}#{index}"),
            (name, index),
            group,
            cgroup,
            sweep,
        );
    }

    fn spawn_instance(&mut self, p: usize, index: usize) {
        let name = self.programs[p].config.name.clone();
        match self.spawn_plan(p, index) {
            Ok((pid, cgroup)) => {
                log::info!("{name}#{index} started (pid {pid})");
                self.events.push(Ev::Started {
                    subject: format!("{name}#{index}"),
                    pid: pid.as_raw(),
                });
                let program = &mut self.programs[p];
                if let Some(cgroup) = cgroup {
                    program.cgroups.insert(index, cgroup);
                }
                program.daemon_groups.remove(&index);
                if let Some(pidfile) = &program.config.pidfile {
                    let timeout = program.config.start_timeout;
                    log::info!(
                        "{name}#{index}: waiting up to {} for its daemon's pid in {}",
                        crate::logging::human_duration(timeout),
                        pidfile.display()
                    );
                    let waiting = Daemonizing::new(pidfile, pid, timeout);
                    program.daemonizing.insert(index, waiting);
                }
                self.children.insert(
                    pid,
                    Owner::Instance {
                        program: name.clone(),
                        index,
                    },
                );
                self.apply(&name, index, Event::Spawned(pid));
            }
            Err(e) => {
                let keep = self.config.daemon.log_lines;
                let program = &mut self.programs[p];
                // Prepare afresh next time: PATH, users and groups may change.
                program.prepared = None;
                let why = format!("cannot start {:?}: {e}", program.config.command[0]);
                log::error!("{name}#{index}: {why}");
                // No output will ever explain it: `forkctl log` shows forkd's word.
                if let Some(inst) = program.instances.get_mut(index) {
                    inst.remember(format!("forkd: {why}"), keep);
                }
                self.apply(&name, index, Event::SpawnFailed(e));
            }
        }
    }

    /// Builds the plan for program `p`, instance `index`, wires its output,
    /// and spawns it. Per spawn only `FORKD_INSTANCE`, the cwd and output
    /// files are new; /dev/null and log pipes are lent, not duplicated.
    fn spawn_plan(
        &mut self,
        p: usize,
        index: usize,
    ) -> Result<(Pid, Option<InstanceCgroup>), String> {
        for stderr in [false, true] {
            self.ensure_log_pipe(p, index, stderr)?;
        }
        let notify = match self.programs[p].config.ready {
            crate::config::Ready::Notify => Some(self.notify_address(p, index)?),
            _ => None,
        };
        if self.programs[p].prepared.is_none() {
            self.programs[p].prepared = Some(PreparedProgram::new(&self.programs[p].config)?);
        }
        if let Some(pidfile) = &self.programs[p].config.pidfile {
            Daemonizing::remove_stale(pidfile);
        }
        let cgroup = self.instance_cgroup(p, index);
        let program = &self.programs[p];
        let config = &program.config;
        let prepared = program.prepared.as_ref().expect("prepared above");
        let mut plan = prepared.command.plan();
        plan.add_env("FORKD_INSTANCE", index)
            .map_err(|e| e.to_string())?;
        // Its own socket, never forkd's (`child_environment` drops that).
        if let Some(address) = notify {
            plan.add_env("NOTIFY_SOCKET", address)
                .map_err(|e| e.to_string())?;
        }
        if let Some(cwd) = &config.cwd {
            plan.set_cwd(cwd).map_err(|e| e.to_string())?;
        }
        plan.credentials.clone_from(&prepared.credentials);
        plan.umask = config.umask;
        plan.rlimits.clone_from(&prepared.rlimits);
        plan.stdin = ChildFd::Borrowed(self.dev_null.as_fd());
        plan.stdout = self.output_fd(program, index, &config.stdout, false)?;
        plan.stderr = self.output_fd(program, index, &config.stderr, true)?;
        if let Some((cgroup, procs)) = cgroup {
            plan.cgroup_procs = Some(procs);
            return match plan.spawn() {
                Ok(pid) => Ok((pid, Some(cgroup))),
                Err(e) => {
                    cgroup.remove();
                    Err(e.to_string())
                }
            };
        }
        plan.spawn()
            .map(|pid| (pid, None))
            .map_err(|e| e.to_string())
    }

    /// A new cgroup for one spawn of program `p`'s instance `index`, with
    /// its `cgroup.procs` open for the child, where forkd has a cgroup
    /// subtree. A cgroup that cannot be made is a warning, not a failed
    /// start: the process group still reaches what stays in it.
    fn instance_cgroup(&mut self, p: usize, index: usize) -> Option<(InstanceCgroup, OwnedFd)> {
        let root = self.cgroups.as_mut()?;
        let name = &self.programs[p].config.name;
        let made = root
            .create(name, index)
            .and_then(|c| c.procs_for_child().map(|fd| (c, fd)));
        match made {
            Ok(made) => Some(made),
            Err(e) => {
                log::warn!(
                    "{name}#{index}: cannot make a cgroup in {}: {e}; running it without",
                    root.dir().display()
                );
                None
            }
        }
    }

    /// The child's end for one output stream.
    fn output_fd<'a>(
        &'a self,
        program: &'a Program,
        index: usize,
        output: &Output,
        stderr: bool,
    ) -> Result<ChildFd<'a>, String> {
        Ok(match output {
            Output::Inherit => ChildFd::Inherit,
            Output::Null => ChildFd::Borrowed(self.dev_null.as_fd()),
            Output::File(path) => ChildFd::Fd(
                std::fs::File::options()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| format!("cannot open {}: {e}", path.display()))?
                    .into(),
            ),
            Output::Log => ChildFd::Borrowed(
                program
                    .log_writers
                    .get(&(index, stderr))
                    .ok_or("no log pipe")?
                    .as_fd(),
            ),
        })
    }

    /// Creates the write end of program `p`'s instance `index` log pipe
    /// for one stream, if that stream goes to the log and it has none yet.
    /// The pipe lives as long as the instance, across restarts:
    /// no per-spawn pipe or epoll registration, and lines from a previous
    /// run's leftovers still reach the log. Its reader sees EOF once the
    /// instance is removed and every process holding the pipe has exited.
    fn ensure_log_pipe(&mut self, p: usize, index: usize, stderr: bool) -> Result<(), String> {
        let program = &self.programs[p];
        let output = if stderr {
            &program.config.stderr
        } else {
            &program.config.stdout
        };
        let key = (index, stderr);
        if !matches!(output, Output::Log) || program.log_writers.contains_key(&key) {
            return Ok(());
        }
        let (sender, receiver) = mio::unix::pipe::new().map_err(|e| format!("pipe: {e}"))?;
        // The child's end must block: programs expect ordinary stdio.
        sender
            .set_nonblocking(false)
            .map_err(|e| format!("pipe: {e}"))?;
        let token = self.allocate_token();
        let mut pipe = OutputPipe::new(receiver, &self.programs[p].config.name, index, stderr);
        self.poll
            .registry()
            .register(pipe.receiver(), token, Interest::READABLE)
            .map_err(|e| format!("cannot watch output: {e}"))?;
        self.sources.insert(token, Source::Output(pipe));
        self.programs[p]
            .log_writers
            .insert(key, OwnedFd::from(sender));
        Ok(())
    }
}

/// Says what a state change means, at the level its meaning deserves.
fn log_transition(name: &str, index: usize, inst: &Instance, policy: &Policy) {
    match inst.state {
        State::Backoff => {
            let delay = crate::logging::human_duration(inst.next_delay.unwrap_or_default());
            if inst.failures > 0 {
                log::info!(
                    "{name}#{index} restarting in {delay} (fast failure {} of {} allowed)",
                    inst.failures,
                    policy.start_retries
                );
            } else {
                // A restart after a stable run is immediate and routine.
                log::debug!("{name}#{index} restarting in {delay}");
            }
        }
        State::Fatal => log::error!(
            "{name}#{index} failed {} times in a row within {} of starting: giving up (FATAL); \
             `forkctl start {name}` tries again{}",
            inst.failures,
            crate::logging::human_duration(policy.stable_after),
            policy.fatal_retry.map_or(String::new(), |d| format!(
                ", and so does forkd after {} (fatal_retry)",
                crate::logging::human_duration(d)
            ))
        ),
        State::Exited => log::info!("{name}#{index} stays down (restart policy)"),
        State::Stopped => log::info!("{name}#{index} stopped"),
        // `apply` names what it waits for.
        State::Waiting | State::Running | State::Stopping => {}
    }
}
