//! One service at run time: start-up (handler, listeners, worker pool),
//! stop and drain, timers, child exits, and the status report.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::unistd::Pid;
use serde_json::{json, Value};

use super::limits::RateLog;
use super::listener::{InheritedLookup, Listener, Listeners, ReserveFd};
use super::per_ip::PerIp;
use super::scoreboard::Counts;
use super::workers::{Spawn, WorkerPool};
use super::Role;
use crate::config::{support, Carrier};
use crate::config::{Mode, ServiceConfig};
use crate::handlers::{self, Handler, Peer, PostError};
use crate::process::ExitKind;

/// Where a service is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceState {
    Running,
    /// Listeners closed; open connections have until `deadline`.
    Draining {
        deadline: Instant,
    },
    /// Drain time is up: SIGTERM/SIGKILL sent; SIGKILL to all at `deadline`.
    Stopping {
        deadline: Instant,
    },
}

impl ServiceState {
    fn as_str(self) -> &'static str {
        match self {
            ServiceState::Running => "running",
            ServiceState::Draining { .. } => "draining",
            ServiceState::Stopping { .. } => "stopping",
        }
    }
}

/// How soon a reaped worker's `per_ip` claims are tried again when a
/// worker held the table's lock.
const FORGET_RETRY: Duration = Duration::from_millis(5);

/// Grace between SIGTERM at the end of a drain and SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// A fork-mode connection child.
#[derive(Debug, Clone, Copy)]
pub(super) struct LiveConnection {
    /// Its client, released from `per_ip` when the child is reaped.
    pub peer: Peer,
    /// An exec'd command (it leads its own process group); whether the
    /// exec itself succeeded is in the service's report pipe.
    pub exec: bool,
    pub started: u64,
}

/// One `[[service]]` at run time.
pub struct Service {
    pub config: ServiceConfig,
    pub(super) handler: Box<dyn Handler>,
    /// fork mode + exec handler: the supervisor spawns the command directly
    /// ([`Handler::connection_program`]), and its children report failures before exec
    /// to this one pipe.
    pub(super) reports: Option<crate::process::ReportPipe>,
    pub listeners: Vec<Listener>,
    pub state: ServiceState,
    /// fork mode: accepted, refused, errors, timeouts; pools: what workers
    /// that are gone had counted.
    pub(super) counts: Counts,
    /// Outside the memory children share: written after every fork.
    pub(super) conns: crate::process::pid_table::PidTable<LiveConnection>,
    pub(super) per_ip: PerIp,
    /// Reaped workers whose `per_ip` claims are still to be dropped (the
    /// table was locked by a worker at the time).
    pub(super) reaped_with_claims: Vec<Pid>,
    pub(super) pool: Option<WorkerPool>,
    pub(super) refusals: RateLog,
    pub(super) shed: RateLog,
    pub(super) timeouts: RateLog,
    pub(super) failures: RateLog,
    pub(super) ignored: RateLog,
    pub(super) reserve: ReserveFd,
    /// forkd's pid, for the children's PDEATHSIG re-check.
    pub(super) parent: Pid,
    /// fork mode: stopped accepting at `max_connections`.
    pub paused: bool,
    /// Pool totals already turned into log lines.
    pub(super) logged: Counts,
}

impl Service {
    /// Builds the handler and opens the listeners. Does not fork: call
    /// [`Service::spawn_workers`] next. `reuse` holds listeners a reload
    /// hands over; `inherited` finds `systemd:NAME` sockets; `per_ip` is
    /// the table of the service this one replaces, if it can be shared
    /// ([`Service::per_ip_for`]).
    pub fn start(
        config: &ServiceConfig,
        reuse: &mut Listeners,
        inherited: InheritedLookup<'_>,
        per_ip: Option<PerIp>,
    ) -> Result<Service, String> {
        let name = &config.name;
        // The table first: a mode the handler cannot run in or a socket
        // it cannot serve is refused before anything is built (the config
        // check said so too, except for systemd sockets, whose kind shows
        // only now).
        let support = support(config.handler);
        support
            .check_mode(config.mode)
            .map_err(|e| format!("service \"{name}\": {e}"))?;
        let handler = handlers::build(&handlers::Context::new(config))
            .map_err(|e| format!("service \"{name}\": {e}"))?;
        let mut listeners = Vec::with_capacity(config.listen.len());
        for addr in &config.listen {
            let listener = Listener::open(addr, config, reuse, inherited)?;
            let carrier = if listener.is_stream() {
                Carrier::Stream
            } else {
                Carrier::Datagram
            };
            support
                .check_carrier(carrier)
                .map_err(|e| format!("service \"{name}\": {}: {e}", listener.bound()))?;
            listeners.push(listener);
        }
        let reports = match (config.mode, handler.connection_program()) {
            (Mode::Fork, Some(_)) => Some(
                crate::process::ReportPipe::new()
                    .map_err(|e| format!("service \"{name}\": cannot open a pipe: {e}"))?,
            ),
            _ => None,
        };
        if config.mode == Mode::Event {
            log_open_file_limit(config);
        }
        let pool = WorkerPool::for_service(config, &listeners)
            .map_err(|e| format!("service \"{name}\": cannot map the scoreboard: {e}"))?;
        let per_ip = match per_ip {
            Some(shared) => shared,
            None => PerIp::new(config.per_ip, config.max_connections)
                .map_err(|e| format!("service \"{name}\": cannot map the per_ip table: {e}"))?,
        };
        if config.per_ip > 0 {
            if let Err(e) = super::sockdiag::available() {
                log::warn!("service \"{name}\": per_ip cannot ask the kernel which connections are open ({e}; AF_NETLINK restricted?): a connection its client closed counts until its process lets go");
            }
        }
        Ok(Service {
            handler,
            reports,
            listeners,
            state: ServiceState::Running,
            counts: Counts::default(),
            conns: Default::default(),
            per_ip,
            reaped_with_claims: Vec::new(),
            pool,
            refusals: RateLog::new("refused a connection: per_ip limit reached"),
            shed: RateLog::new("closed a connection at once: out of file descriptors (raise LimitNOFILE or lower max_connections)"),
            timeouts: RateLog::new("cut a connection at idle_timeout/request_timeout"),
            failures: RateLog::new("a connection failed"),
            ignored: RateLog::new(
                "ignored a datagram (malformed, or naming a member from another address)",
            ),
            reserve: ReserveFd::new(),
            parent: nix::unistd::getpid(),
            paused: false,
            logged: Counts::default(),
            config: config.clone(),
        })
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// On reload: this service's `per_ip` table for the service `new`
    /// that replaces it, when the mode is the same (in fork mode only the
    /// supervisor may take the table's lock) and the table is big enough.
    pub fn per_ip_for(&self, new: &ServiceConfig) -> Option<PerIp> {
        if new.mode != self.config.mode {
            return None;
        }
        self.per_ip.shared_with(new.per_ip, new.max_connections)
    }

    pub fn is_running(&self) -> bool {
        self.state == ServiceState::Running
    }

    /// fork mode: fewer live connections than `max_connections`.
    pub fn conns_below_max(&self) -> bool {
        self.conns.len() < self.config.max_connections as usize
    }

    /// No child left, and nothing of theirs left to drop from `per_ip`.
    pub fn is_drained(&self) -> bool {
        self.child_count() == 0 && self.reaped_with_claims.is_empty()
    }

    /// Children (connections and workers) still alive.
    pub fn child_count(&self) -> usize {
        self.conns.len() + self.pool.as_ref().map_or(0, |p| p.alive())
    }

    /// Starts the pool's missing workers; `spawned` records each new pid.
    pub fn spawn_workers(&mut self, now: Instant, spawned: &mut dyn FnMut(Pid, Role)) {
        if self.state != ServiceState::Running {
            return;
        }
        // Out of `self` while it forks, so the rest can be lent to workers.
        if let Some(mut pool) = self.pool.take() {
            pool.fill(&self.spawn_context(), now, spawned);
            self.pool = Some(pool);
        }
    }

    /// What this service's workers are forked with.
    fn spawn_context(&self) -> Spawn<'_> {
        Spawn {
            config: &self.config,
            handler: &*self.handler,
            listeners: &self.listeners,
            per_ip: &self.per_ip,
            parent: self.parent,
        }
    }

    /// Stop, step 1: the caller has deregistered the listeners; close them,
    /// tell pool workers to drain (SIGTERM), and give open connections
    /// `drain_timeout`.
    pub fn begin_drain(&mut self, now: Instant) {
        if self.state != ServiceState::Running {
            return;
        }
        for listener in &self.listeners {
            listener.stop_listening();
        }
        self.listeners.clear();
        if let Some(pool) = self.pool.as_mut() {
            pool.signal_all(Signal::SIGTERM);
        }
        let deadline = now + self.config.drain_timeout;
        self.state = ServiceState::Draining { deadline };
        let open = self.child_count();
        if open > 0 {
            log::info!(
                "service \"{}\": listeners closed; draining {open} process(es) for up to {}",
                self.config.name,
                crate::logging::human_duration(self.config.drain_timeout)
            );
        }
    }

    /// SIGKILL to every child now (second SIGTERM, SIGQUIT).
    pub fn kill_all(&mut self, now: Instant) {
        if self.state == ServiceState::Running {
            self.begin_drain(now);
        }
        self.signal_connections(Signal::SIGKILL);
        if let Some(pool) = self.pool.as_mut() {
            pool.signal_all(Signal::SIGKILL);
        }
        self.state = ServiceState::Stopping { deadline: now };
    }

    fn signal_connections(&self, sig: Signal) {
        for (pid, conn) in &self.conns {
            let _ = if conn.exec {
                crate::process::signal_group(*pid, sig)
            } else {
                nix::sys::signal::kill(*pid, sig).map_err(std::io::Error::from)
            };
        }
    }

    /// The nearest time this service wants [`Service::on_timer`].
    pub fn deadline(&self) -> Option<Instant> {
        let drain = match self.state {
            ServiceState::Running => None,
            ServiceState::Draining { deadline } | ServiceState::Stopping { deadline } => {
                Some(deadline)
            }
        };
        let pool = self
            .pool
            .as_ref()
            .and_then(|p| p.deadline(self.is_running()));
        let forget = (!self.reaped_with_claims.is_empty()).then(|| Instant::now() + FORGET_RETRY);
        [
            drain,
            pool,
            forget,
            self.refusals.deadline(),
            self.shed.deadline(),
            self.timeouts.deadline(),
            self.failures.deadline(),
            self.ignored.deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Runs what is due: respawns, spare-worker upkeep, drain deadlines and
    /// the periodic summaries of refusals and timeouts.
    pub fn on_timer(&mut self, now: Instant, spawned: &mut dyn FnMut(Pid, Role)) {
        match self.state {
            ServiceState::Running => {
                if let Some(mut pool) = self.pool.take() {
                    pool.tick(&self.spawn_context(), now, spawned);
                    self.pool = Some(pool);
                }
            }
            ServiceState::Draining { deadline } if now >= deadline => {
                if self.child_count() > 0 {
                    log::warn!(
                        "service \"{}\": drain_timeout passed with {} process(es) left; sending SIGTERM (SIGKILL to pool workers)",
                        self.config.name,
                        self.child_count()
                    );
                }
                self.signal_connections(Signal::SIGTERM);
                if let Some(pool) = self.pool.as_mut() {
                    pool.signal_all(Signal::SIGKILL);
                }
                self.state = ServiceState::Stopping {
                    deadline: now + STOP_GRACE,
                };
            }
            ServiceState::Stopping { deadline } if now >= deadline => {
                self.signal_connections(Signal::SIGKILL);
                self.state = ServiceState::Stopping {
                    deadline: now + STOP_GRACE,
                };
            }
            _ => {}
        }
        self.forget_workers();
        self.log_worker_counts(now);
        let name = self.config.name.clone();
        for rate in self.rate_logs() {
            if let Some(line) = rate.flush(now, &name) {
                log::warn!("{line}");
            }
        }
    }

    /// The refusal, shed, timeout and failure summaries logged since the
    /// last call, for the event stream.
    pub fn take_summaries(&mut self) -> Vec<super::limits::Summary> {
        let mut out = Vec::new();
        for rate in self.rate_logs() {
            out.extend(rate.take_said());
        }
        out
    }

    /// The workers forked since the last call, (slot, pid), for the event
    /// stream.
    pub fn take_worker_starts(&mut self) -> Vec<(usize, Pid)> {
        self.pool
            .as_mut()
            .map(WorkerPool::take_started)
            .unwrap_or_default()
    }

    /// Every summarised log of the service.
    fn rate_logs(&mut self) -> [&mut RateLog; 5] {
        [
            &mut self.refusals,
            &mut self.shed,
            &mut self.timeouts,
            &mut self.failures,
            &mut self.ignored,
        ]
    }

    /// Drops the `per_ip` claims of reaped workers, as far as the table's
    /// lock allows without waiting.
    fn forget_workers(&mut self) {
        let (per_ip, me) = (&self.per_ip, self.parent);
        self.reaped_with_claims
            .retain(|pid| !per_ip.forget_owner(*pid, me));
    }

    /// Turns what pool workers counted since the last look into rate-limited
    /// log lines (workers never log per connection).
    fn log_worker_counts(&mut self, now: Instant) {
        let Some(pool) = self.pool.as_ref() else {
            return;
        };
        let total = pool.totals();
        let name = self.config.name.clone();
        let pairs = [
            (
                total.refused.saturating_sub(self.logged.refused),
                &mut self.refusals,
            ),
            (total.shed.saturating_sub(self.logged.shed), &mut self.shed),
            (
                total.timeouts.saturating_sub(self.logged.timeouts),
                &mut self.timeouts,
            ),
            (
                total.errors.saturating_sub(self.logged.errors),
                &mut self.failures,
            ),
            (
                total.ignored.saturating_sub(self.logged.ignored),
                &mut self.ignored,
            ),
        ];
        for (new, rate) in pairs {
            for _ in 0..new.min(1_000) {
                if let Some(line) = rate.note(now, &name) {
                    log::warn!("{line}");
                }
            }
        }
        self.logged = total;
    }

    /// A child of this service was reaped.
    pub fn child_exited(
        &mut self,
        role: Role,
        pid: Pid,
        exit: ExitKind,
        now: Instant,
        spawned: &mut dyn FnMut(Pid, Role),
    ) {
        match role {
            Role::Connection => self.connection_exited(pid, exit, now),
            Role::Worker(index) => {
                // Only a worker that died holding connections left any.
                let pool = self.pool.as_ref();
                let held = pool
                    .and_then(|p| p.board().slot(index))
                    .map_or(0, |s| s.claims());
                if held > 0 {
                    self.reaped_with_claims.push(pid);
                    self.forget_workers();
                }
                let running = self.is_running();
                if let Some(pool) = self.pool.as_mut() {
                    pool.exited(&self.config, index, pid, exit, running, now);
                }
                self.spawn_workers(now, spawned);
            }
        }
    }

    /// One JSON object for `forkctl status`.
    pub fn status(&self) -> Value {
        let mut counts = self.counts;
        let mut connections = self.conns.len() as u64;
        let mut members = 0;
        let mut workers = Vec::new();
        if let Some(pool) = &self.pool {
            counts += pool.totals();
            connections += pool.board().live_connections();
            members = pool.board().peers();
            workers.extend(pool.status());
        }
        let mut conns: Vec<(&Pid, &LiveConnection)> = self.conns.iter().collect();
        conns.sort_by_key(|(pid, _)| pid.as_raw());
        let base = workers.len();
        workers.extend(conns.iter().enumerate().map(|(i, (pid, c))| {
            json!({"index": base + i, "state": "busy", "pid": pid.as_raw(), "served": 0,
                   "role": "connection", "started": c.started})
        }));
        json!({
            "name": self.config.name,
            "state": self.state.as_str(),
            "mode": self.config.mode.keyword(),
            "handler": self.handler.name(),
            "listen": self.listeners.iter().map(Listener::bound).collect::<Vec<_>>(),
            "connections": connections,
            "accepted": counts.served,
            "refused": counts.refused + counts.shed,
            "refused_by": {"per_ip": counts.refused, "fd_limit": counts.shed},
            "errors": counts.errors,
            "timeouts": counts.timeouts,
            "ignored": counts.ignored,
            "members": members,
            "workers": workers,
        })
    }

    /// Hands the operator's `text` to the worker holding the service's
    /// datagram state (a chat room: worker #0), through the handler's
    /// inbox; never waits. Returns the members the room had at its last
    /// report: those the message reaches unless one joins or leaves first.
    pub fn post_operator(&self, text: &[u8]) -> Result<u64, OperatorError> {
        let handler = self.handler.name();
        let inbox = self
            .handler
            .inbox()
            .ok_or(OperatorError::NoInbox(handler))?;
        if !self.is_running() {
            return Err(OperatorError::NotRunning(self.state.as_str()));
        }
        let pool = self.pool.as_ref().ok_or(OperatorError::NoWorker)?;
        if !pool.is_alive(0) {
            return Err(OperatorError::NoWorker);
        }
        inbox.post(text)?;
        Ok(pool.board().peers())
    }
}

/// Why an operator message was not handed over.
#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    #[error("its handler (\"{0}\") takes no operator messages; forkctl chat needs a service with handler = \"chat\"")]
    NoInbox(&'static str),
    #[error("the service is {0}; it takes no message")]
    NotRunning(&'static str),
    #[error("worker #0, which holds the room, is not running (it is being replaced); try again in a moment")]
    NoWorker,
    #[error("{0}")]
    Post(#[from] PostError),
}

/// Says what an event service's workers will do to their open-file limit.
fn log_open_file_limit(config: &ServiceConfig) {
    use nix::sys::resource::{getrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            log::info!(
                "service \"{}\": event workers raise their open-file limit (RLIMIT_NOFILE) from {soft} to {hard}; max_connections = {}",
                config.name,
                config.max_connections
            );
        }
    }
}

/// Seconds since the epoch, for status.
pub(super) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
