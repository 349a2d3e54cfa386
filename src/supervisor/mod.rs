//! The supervisor: forkd's one event loop and the state it owns.
//!
//! One thread, one `mio::Poll`. Each turn takes its timeout from the
//! nearest deadline, waits, then handles in a fixed order: signals (through
//! signal-hook's self-pipe, never work in a handler), reaped children
//! (SIGCHLD is blocked and read from a signalfd; then `waitpid(-1, WNOHANG)`
//! until nothing is left, since SIGCHLD coalesces),
//! timers, then ready file descriptors (program output, and the sources other
//! modules register), then the results pool workers sent back in the turn
//! go to their callers (before any other source too: results never wait
//! behind other work). Handlers change state and schedule; they never block
//! or sleep. forkd is the child subreaper, so orphaned grandchildren come
//! back to this loop to be reaped. This module never runs code between fork
//! and exec (that is `process`) and never starts a thread: a thread here
//! would make every fork-without-exec unsafe.

mod control;
mod control_status;
pub mod events;
mod health;
mod instance;
mod metrics;
mod metrics_http;
mod notify;
mod output;
mod pidfile;
mod pools;
mod programs;
mod readiness;
mod reload;
mod retiring;
mod services;
mod services_reload;
mod start_order;
mod status_detail;
mod stragglers;

use std::collections::HashMap;
use std::io;
use std::os::fd::AsRawFd;
use std::time::Instant;

use mio::{Events, Interest, Poll, Token};
use nix::unistd::Pid;
use signal_hook::consts::signal::{SIGHUP, SIGINT, SIGQUIT, SIGTERM};
use signal_hook_mio::v1_0::Signals;

use crate::config::Config;
use crate::ipc::Hangup;
use crate::process::daemonize::Readiness;

pub use instance::{Instance, State};
pub use pools::endpoint_name;
pub use programs::Program;
pub use reload::Reloaded;

const SIGNALS: Token = Token(0);
/// SIGCHLD, through a signalfd (see `Supervisor::new`).
const CHILD_EXITS: Token = Token(2);
/// The control socket's listener (connections get dynamic tokens).
const CONTROL: Token = Token(1);
/// The `metrics_listen` listener (connections get dynamic tokens).
const METRICS: Token = Token(3);
/// Tokens below this are fixed (signals, control socket); dynamic sources
/// (output pipes, connections) get tokens from here up.
const FIRST_DYNAMIC_TOKEN: usize = 16;

/// Who a child pid belongs to, so waitpid's answers go to the right place.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Owner {
    Instance {
        program: String,
        index: usize,
    },
    /// An instance of an old program stopping after a reload (`retiring.rs`).
    Retiring {
        key: u64,
        index: usize,
    },
    /// A worker or connection child of the service with this id.
    Service {
        service: u64,
        role: crate::server::Role,
    },
    /// A worker of the pool with this id.
    PoolWorker {
        pool: u64,
    },
}

/// A registered file descriptor and what it is for.
#[derive(Debug)]
enum Source {
    Output(output::OutputPipe),
    /// A forkctl connection on the control socket.
    Control(crate::control::server::Connection),
    /// A fork-mode service's stream listener (the supervisor accepts).
    Listener {
        service: u64,
        index: usize,
    },
    /// A pool worker's channel.
    PoolWorker {
        pool: u64,
    },
    /// A pool's endpoint (the `pool` handler connects there).
    PoolEndpoint {
        pool: u64,
    },
    /// A caller's connection to a pool.
    PoolCaller(Box<pools::Caller>),
    /// An instance's `NOTIFY_SOCKET` (`ready = "notify"`).
    Notify(readiness::NotifySocket),
    /// An HTTP client of `metrics_listen`.
    Scrape(crate::control::scrape::ScrapeConnection),
}

/// How far shutdown has gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shutdown {
    /// Stop signals sent; waiting for exits (SIGKILL at each stop_timeout).
    Graceful,
    /// SIGKILL sent to everything; waiting only for the reaps.
    Immediate,
}

/// All of forkd's runtime state.
pub struct Supervisor {
    config: Config,
    poll: Poll,
    signals: Signals,
    /// SIGCHLD, blocked and read here instead of through a handler: one
    /// read per wake-up, no signal frame, handler, self-pipe send and
    /// receive per child exit (in fork mode, per connection).
    child_exits: nix::sys::signalfd::SignalFd,
    programs: Vec<Program>,
    services: services::Services,
    pools: pools::Pools,
    /// Every child but fork mode's per-connection ones, which only their
    /// service records (`Service::owns_connection`).
    children: HashMap<Pid, Owner>,
    sources: crate::id_hash::IdMap<Token, Source>,
    next_token: usize,
    shutdown: Option<Shutdown>,
    /// Opened once: every spawned child's stdin (and `null` outputs).
    dev_null: std::fs::File,
    /// The control socket and what its requests left pending.
    control: control::ControlState,
    /// sd_notify, watchdog and inherited sockets (empty outside systemd).
    systemd: crate::systemd::Systemd,
    /// Old programs still stopping after a reload, and reload settings.
    reload: reload::ReloadState,
    /// Readiness probes and the stops held for dependents (`after`).
    readiness: readiness::ReadinessState,
    /// Stops held until dependents are down (`after`).
    stop_order: start_order::StopOrder,
    /// Process groups whose leader exited on its own (`stragglers.rs`).
    stragglers: Vec<stragglers::Straggler>,
    /// Where instance cgroups are made, if forkd has a cgroup v2 subtree.
    cgroups: Option<crate::process::cgroup::CgroupRoot>,
    /// `[daemon] metrics_listen`, when set.
    metrics: Option<crate::control::scrape::ScrapeServer>,
    /// The event stream (`forkctl events`).
    events: events::Events,
    /// What the loop itself did, for `forkctl metrics`.
    loop_counts: LoopCounts,
}

/// Counters of the supervisor's own work.
#[derive(Debug, Default, Clone, Copy)]
struct LoopCounts {
    /// Turns of the event loop (one per wake-up).
    iterations: u64,
    /// Children reaped by `waitpid`, of any kind.
    reaped: u64,
    /// Of those, processes forkd never started: orphans re-parented to it
    /// as subreaper or PID 1.
    orphans: u64,
}

impl Supervisor {
    /// Sets up the loop (signals, subreaper) without starting anything.
    pub fn new(config: Config) -> io::Result<Supervisor> {
        ensure_single_threaded()?;
        let poll = Poll::new()?;
        let mut signals = Signals::new([SIGTERM, SIGINT, SIGQUIT, SIGHUP])?;
        poll.registry()
            .register(&mut signals, SIGNALS, Interest::READABLE)?;
        // At its default first: ignored (as forkd's own parent may have
        // left it), the kernel would reap every child itself and `waitpid`
        // would never see an exit. Then blocked in this (only) thread, so it
        // is only ever read from the signalfd. Children start with an empty
        // mask (`process` resets it after every fork and clone).
        crate::process::raw::default_disposition(libc::SIGCHLD);
        let mut sigchld = nix::sys::signal::SigSet::empty();
        sigchld.add(nix::sys::signal::Signal::SIGCHLD);
        sigchld.thread_block()?;
        let child_exits = nix::sys::signalfd::SignalFd::with_flags(
            &sigchld,
            nix::sys::signalfd::SfdFlags::SFD_NONBLOCK | nix::sys::signalfd::SfdFlags::SFD_CLOEXEC,
        )?;
        poll.registry().register(
            &mut mio::unix::SourceFd(&child_exits.as_raw_fd()),
            CHILD_EXITS,
            Interest::READABLE,
        )?;
        crate::process::become_subreaper()?;
        let mut control = control::ControlState::bind(&config.daemon)?;
        poll.registry()
            .register(control.server.listener(), CONTROL, Interest::READABLE)?;
        let programs = config.programs.iter().map(Program::new).collect();
        let cgroups = crate::process::cgroup::CgroupRoot::detect(&config.daemon.cgroup)
            .map_err(io::Error::other)?;
        match &cgroups {
            Some(root) => log::info!(
                "each program instance runs in a cgroup of its own below {}",
                root.dir().display()
            ),
            None => log::debug!(
                "no delegated cgroup v2 directory: instances are stopped by process group"
            ),
        }
        let mut supervisor = Supervisor {
            config,
            poll,
            signals,
            child_exits,
            programs,
            services: services::Services::default(),
            pools: pools::Pools::default(),
            children: HashMap::new(),
            sources: crate::id_hash::IdMap::default(),
            next_token: FIRST_DYNAMIC_TOKEN,
            shutdown: None,
            dev_null: std::fs::File::options()
                .read(true)
                .write(true)
                .open("/dev/null")?,
            control,
            systemd: crate::systemd::Systemd::default(),
            reload: reload::ReloadState::default(),
            readiness: readiness::ReadinessState::default(),
            stop_order: start_order::StopOrder::default(),
            stragglers: Vec::new(),
            cgroups,
            metrics: None,
            events: events::Events::default(),
            loop_counts: LoopCounts::default(),
        };
        supervisor.bind_metrics()?;
        Ok(supervisor)
    }

    /// Starts every autostart program, tells the launcher (if daemonized)
    /// that start-up is done, and runs the loop until shutdown completes.
    /// Returns the process exit code.
    pub fn run(mut self, mut readiness: Option<Readiness>) -> io::Result<i32> {
        if let Some(warning) = crate::preflight::mqueue_budget(&self.config) {
            log::warn!("{warning}");
        }
        // Pools and listeners first: a pool that cannot start or a port
        // that cannot be bound stops start-up before any program runs
        // (nginx does the same).
        if let Err(why) = self.start_pools().and_then(|()| self.start_services()) {
            log::error!("{why}");
            if let Some(r) = readiness.as_mut() {
                r.failed(&why);
            }
            self.kill_services();
            self.stop_pools(true);
            while !self.children.is_empty() {
                if let Ok(status) = nix::sys::wait::waitpid(None, None) {
                    if let Some((pid, _)) = crate::process::ExitKind::from_wait(status) {
                        self.children.remove(&pid);
                    }
                } else {
                    break;
                }
            }
            return Ok(crate::exit::FAILURE);
        }
        let names: Vec<String> = self
            .programs
            .iter()
            .filter(|p| p.config.autostart)
            .map(|p| p.config.name.clone())
            .collect();
        for name in &names {
            self.start_program(name, None);
        }
        log::info!(
            "forkd {} started: {} programs, {} pools, {} services",
            env!("CARGO_PKG_VERSION"),
            self.programs.len(),
            self.config.pools.len(),
            self.config.services.len()
        );
        self.announce_ready();
        if let Some(r) = readiness.as_mut() {
            r.ready();
        }
        let mut events = Events::with_capacity(256);
        loop {
            let timeout = self
                .next_deadline()
                .map(|d| d.saturating_duration_since(Instant::now()));
            match self.poll.poll(&mut events, timeout) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            self.loop_counts.iterations += 1;
            // Nothing on the per-connection path allocates or copies the
            // events: after each fork every heap page the loop writes is
            // copy-on-write, so a malloc/free pair or a Vec of tokens costs
            // page faults, not a few ns. Signals are looked for first, the
            // other sources handled in a second pass.
            let signalled = events.iter().any(|e| e.token() == SIGNALS);
            let children_exited = events.iter().any(|e| e.token() == CHILD_EXITS);
            if signalled {
                self.handle_signals();
            }
            if children_exited {
                // A standard signal is pending at most once: one read
                // consumes it, and an exit after the reap below raises a
                // new SIGCHLD, hence a new edge.
                let _ = self.child_exits.read_signal();
                self.reap();
            }
            self.run_timers(Instant::now());
            for event in events.iter() {
                let token = event.token();
                if token == SIGNALS || token == CHILD_EXITS {
                    continue;
                }
                self.handle_source(token, Hangup::of(event));
            }
            self.finish_pool_turn();
            self.collect_service_events();
            self.collect_pool_events();
            self.control_reconcile();
            self.order_reconcile(Instant::now());
            self.stop_pools_after_services();
            if self.shutdown.is_some()
                && self.children.is_empty()
                && !self.stragglers_left()
                && self.connection_children() == 0
            {
                break;
            }
        }
        self.drain_outputs();
        log::info!("forkd stopped");
        Ok(crate::exit::OK)
    }

    /// Signals first, in nginx's spirit: a fixed order per turn.
    fn handle_signals(&mut self) {
        // A bit per signal number (every Linux signal is below 64), so
        // taking them out of the iterator allocates nothing.
        let pending = self
            .signals
            .pending()
            .filter(|&sig| (0..64).contains(&sig))
            .fold(0u64, |set, sig| set | 1 << sig);
        for sig in (0..64).filter(|&sig| pending & (1 << sig) != 0) {
            match sig {
                SIGTERM | SIGINT => self.begin_shutdown(sig),
                SIGQUIT => {
                    log::info!("SIGQUIT: killing every child now");
                    self.kill_everything();
                }
                SIGHUP => {
                    // reload() logs what it did, or every error.
                    log::info!("SIGHUP: reloading {}", self.config.path.display());
                    let _ = self.reload();
                }
                _ => {}
            }
        }
    }

    fn begin_shutdown(&mut self, sig: i32) {
        let name = crate::process::signal_name(sig);
        match self.shutdown {
            None => {
                log::info!("{name}: stopping every program");
                self.systemd.stopping();
                self.shutdown = Some(Shutdown::Graceful);
                // Pools stop once the services that forward to them have
                // drained (`stop_pools_after_services`).
                self.drain_services();
                // Dependents first: see `start_order.rs`.
                self.stop_in_order(self.program_names());
            }
            Some(_) => {
                log::warn!("{name} while stopping: killing every child now");
                self.kill_everything();
            }
        }
    }

    /// Every program's name, in config order (a copy: handlers mutate).
    fn program_names(&self) -> Vec<String> {
        self.programs
            .iter()
            .map(|p| p.config.name.clone())
            .collect()
    }

    fn kill_everything(&mut self) {
        self.shutdown = Some(Shutdown::Immediate);
        self.clear_held_stops();
        self.kill_services();
        self.stop_pools(true);
        for name in self.program_names() {
            self.kill_program(&name);
        }
        self.kill_retiring();
        self.kill_stragglers(Instant::now(), true);
    }

    /// Reaps every exited child and hands each exit to its owner.
    fn reap(&mut self) {
        while let Some((pid, exit)) = crate::process::reap_one() {
            self.loop_counts.reaped += 1;
            match self.children.remove(&pid) {
                Some(Owner::Instance { program, index }) => {
                    self.instance_exited(&program, index, pid, exit)
                }
                Some(Owner::Retiring { key, index }) => {
                    self.retired_instance_exited(key, index, pid, exit)
                }
                Some(Owner::Service { service, role }) => {
                    self.service_child_exited(service, role, pid, exit)
                }
                Some(Owner::PoolWorker { pool }) => self.pool_worker_exited(pool, pid, exit),
                None => match self.connection_owner(pid) {
                    Some(service) => self.service_child_exited(
                        service,
                        crate::server::Role::Connection,
                        pid,
                        exit,
                    ),
                    None => {
                        self.loop_counts.orphans += 1;
                        log::debug!("reaped orphan pid {pid} ({exit})");
                    }
                },
            }
        }
        self.forget_empty_groups();
    }

    /// The nearest deadline of anything scheduled.
    fn next_deadline(&self) -> Option<Instant> {
        self.programs
            .iter()
            .flat_map(|p| p.instances.iter())
            .filter_map(|i| i.deadline)
            .chain(self.retiring_deadline())
            .chain(self.straggler_deadline())
            .chain(self.pidfile_deadline())
            .chain(self.systemd.deadline())
            .chain(self.service_deadline())
            .chain(self.pool_deadline())
            .chain(self.control_deadline())
            .chain(self.metrics_deadline())
            .chain(self.readiness_deadline())
            .min()
    }

    fn run_timers(&mut self, now: Instant) {
        // Before the restarts: one held by its old group runs once that
        // group has had SIGKILL.
        self.kill_stragglers(now, false);
        let mut due = Vec::new();
        for program in &self.programs {
            for (index, inst) in program.instances.iter().enumerate() {
                if inst.deadline.is_some_and(|d| d <= now) {
                    due.push((program.config.name.clone(), index));
                }
            }
        }
        for (name, index) in due {
            self.apply(&name, index, instance::Event::Timer);
        }
        self.run_retiring_timers(now);
        self.poll_pidfiles(now);
        self.systemd_timers(now);
        self.service_timers(now);
        self.pool_timers(now);
        self.close_idle_control(now);
        self.close_idle_metrics(now);
    }

    fn handle_source(&mut self, token: Token, hangup: Hangup) {
        // Consecutive worker-channel events share one routing of their
        // results; any other source sees them routed first.
        if self.pools_unsettled()
            && !matches!(self.sources.get(&token), Some(Source::PoolWorker { .. }))
        {
            self.finish_pool_turn();
        }
        if token == CONTROL {
            self.accept_control();
            return;
        }
        if token == METRICS {
            self.accept_metrics();
            return;
        }
        let Some(source) = self.sources.get_mut(&token) else {
            return;
        };
        match source {
            Source::Output(pipe) => {
                let log_lines = self.config.daemon.log_lines;
                let mut rings = output::Rings {
                    programs: &mut self.programs,
                    retiring: &mut self.reload.retiring,
                };
                if !pipe.read_available(&mut rings, log_lines) {
                    self.close_output(token);
                }
            }
            Source::Control(_) => self.serve_control(token),
            Source::Listener { service, index } => {
                let (service, index) = (*service, *index);
                self.listener_ready(service, index);
            }
            Source::PoolWorker { pool } => {
                let pool = *pool;
                self.pool_channel_ready(pool, token, hangup);
            }
            Source::PoolEndpoint { pool } => {
                let pool = *pool;
                self.accept_pool_callers(pool);
            }
            Source::PoolCaller(_) => self.serve_caller(token, Some(hangup)),
            Source::Notify(_) => self.notify_ready(token),
            Source::Scrape(_) => self.serve_metrics(token),
        }
    }

    fn close_output(&mut self, token: Token) {
        if let Some(Source::Output(mut pipe)) = self.sources.remove(&token) {
            let _ = self.poll.registry().deregister(pipe.receiver());
            let mut rings = output::Rings {
                programs: &mut self.programs,
                retiring: &mut self.reload.retiring,
            };
            pipe.flush_partial(&mut rings, self.config.daemon.log_lines);
        }
    }

    /// At exit: whatever the programs wrote last still reaches the log.
    fn drain_outputs(&mut self) {
        let tokens: Vec<Token> = self.sources.keys().copied().collect();
        for token in tokens {
            self.handle_source(token, Hangup::Possible);
            if matches!(self.sources.get(&token), Some(Source::Output(_))) {
                self.close_output(token);
            }
        }
    }

    /// The nearest of the deadlines `deadline_of` finds among the sources
    /// (idle timeouts of control and metrics connections).
    fn source_deadline(&self, deadline_of: fn(&Source) -> Option<Instant>) -> Option<Instant> {
        self.sources.values().filter_map(deadline_of).min()
    }

    /// The sources whose deadline (as `deadline_of` finds it) has passed.
    fn sources_due(&self, now: Instant, deadline_of: fn(&Source) -> Option<Instant>) -> Vec<Token> {
        self.sources
            .iter()
            .filter(|(_, source)| deadline_of(source).is_some_and(|d| d <= now))
            .map(|(&token, _)| token)
            .collect()
    }

    fn allocate_token(&mut self) -> Token {
        let token = Token(self.next_token);
        self.next_token += 1;
        token
    }

    /// Read-only access for status reports.
    pub fn programs(&self) -> &[Program] {
        &self.programs
    }

    pub fn config(&self) -> &Config {
        &self.config
    }
}

/// Refuses to supervise from a process with more than one thread: a fork
/// then copies only the calling thread, and a lock held by another one
/// (the allocator's, say) would deadlock every forked worker.
fn ensure_single_threaded() -> io::Result<()> {
    let threads = std::fs::read_dir("/proc/self/task")?.count();
    if threads == 1 {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "forkd's supervisor must be single-threaded to fork safely, but {threads} threads exist"
        )))
    }
}
