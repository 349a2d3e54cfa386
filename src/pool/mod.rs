//! Worker pools: N workers, each fed over its own [`ipc`] channel, and the
//! jobs between them: a bounded queue (beyond it a caller hears "busy"),
//! dispatch to the least-loaded worker (a few jobs in flight each, so a
//! worker never waits for the supervisor between jobs), results matched to
//! jobs in order (a worker answers its jobs one after another),
//! `job_timeout` (the worker is killed and replaced, the job fails),
//! re-dispatch of the job a dead worker was running (up to `retries`
//! times, then it fails naming the exit), and the jobs queued behind it
//! sent again without charge. Each worker slot lives by the one
//! [`lifecycle::Slot`] state machine, with the restart back-off. A pool
//! held by the start order ([`Pool::hold`], its `after` not yet ready)
//! spawns no worker and queues jobs until [`Pool::release`].
//!
//! Workers are `builtin:NAME` functions run in a forked child
//! ([`builtin`]) or exec'd commands that find their channel from the
//! environment ([`crate::worker`] for Rust, stdin/stdout frames over the
//! pipe transport for any language). Callers reach a pool through
//! [`client::Client`] connections (`forkctl call`, the `pool` handler).
//!
//! The parts: `book.rs` (the jobs and their answers), `slot.rs` (one worker:
//! its channel, jobs in flight, handing jobs over, killing), `spawn.rs`
//! (forking or exec'ing a worker), [`latency`] (the histogram).
//!
//! Everything here runs in the supervisor's loop and returns promptly: no
//! call blocks, the loop reaps and reports exits ([`Pool::exited`]), and
//! results come out through [`Pool::take_done`].

mod book;
pub mod builtin;
pub mod client;
pub mod latency;
mod slot;
mod spawn;

pub use book::Done;
use book::{Book, Job};
use slot::{kill, send_unsent, Worker};
use spawn::{record_names, spawn_builtin, spawn_command};

use std::collections::VecDeque;

use std::time::{Duration, Instant};

use mio::{Registry, Token};
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use serde_json::{json, Value};

use crate::config::{PoolConfig, WorkerKind};
use crate::ipc::{self, names, ChannelId, Payload};
use crate::lifecycle::{self, Action, Event, Policy, State};
use crate::process::ExitKind;

/// Jobs sent to one worker before its first result comes back: enough
/// that a worker's request pipe rarely runs dry (a worker that sleeps is
/// woken by nearly every write: bench/README.md), few enough that jobs
/// behind a slow one are not held long (`job_timeout` still bounds it).
const DEPTH: usize = 16;
/// Latencies kept for the status percentiles.
const LATENCIES: usize = 4096;
const POLICY: Policy = Policy {
    stable_after: Duration::from_secs(1),
    backoff_initial: Duration::from_millis(100),
    backoff_max: Duration::from_secs(5),
};

/// A caller of the pool (a client connection), as the supervisor numbers it.
pub type ClientId = u64;

/// What a pool needs from the loop while it forks and registers workers.
pub struct Ctx<'a> {
    pub registry: &'a Registry,
    pub ledger: Option<&'a mut names::Ledger>,
    /// A fresh token for a worker channel, routed back to this pool.
    pub token: &'a mut dyn FnMut() -> Token,
    /// A worker was forked: the loop records its pid as this pool's.
    pub spawned: &'a mut dyn FnMut(Pid),
}

/// One `[[pool]]` at run time.
#[derive(Debug)]
pub struct Pool {
    pub config: PoolConfig,
    workers: Vec<Worker>,
    /// Workers of an older size or config finishing their jobs.
    retiring: Vec<Worker>,
    /// Workers forked since the supervisor last took them (index, pid),
    /// for its event stream.
    started: Vec<(usize, Pid)>,
    queue: VecDeque<u64>,
    book: Book,
    next_job: u64,
    /// Channel names are unique per spawn: a replacement never meets the
    /// queue or segment of the worker it replaces.
    next_channel: usize,
    /// Tokens of workers gone for good, for the loop to forget.
    released: Vec<Token>,
    command: Option<crate::process::exec::Prepared>,
    parent: Pid,
    /// Set by `stop`: no new jobs, and workers retire as they finish.
    stopping: bool,
    /// When a stopping pool's last workers are killed (taken once done).
    stop_deadline: Option<Instant>,
    /// Held by the start order (`after`): no worker is spawned, jobs
    /// queue (bounded by `queue`, timed by `job_timeout`) until released.
    held: bool,
    /// Jobs were submitted since the last [`Pool::dispatch_queued`].
    undispatched: bool,
}

impl Pool {
    pub fn new(config: &PoolConfig) -> Result<Pool, String> {
        let command = match &config.worker {
            WorkerKind::Builtin(name) if builtin::lookup(name).is_none() => {
                return Err(format!(
                    "pool \"{}\": no built-in worker \"{name}\" (built-ins: {})",
                    config.name,
                    builtin::names().join(", ")
                ))
            }
            WorkerKind::Builtin(_) => None,
            WorkerKind::Command(argv) => {
                let env = crate::process::exec::child_environment(std::iter::empty());
                Some(
                    crate::process::exec::Prepared::new(argv, &env)
                        .map_err(|e| format!("pool \"{}\": {e}", config.name))?,
                )
            }
        };
        Ok(Pool {
            config: config.clone(),
            workers: Vec::new(),
            retiring: Vec::new(),
            started: Vec::new(),
            queue: VecDeque::new(),
            book: Book::default(),
            next_job: 0,
            next_channel: 0,
            released: Vec::new(),
            command,
            parent: nix::unistd::getpid(),
            stopping: false,
            stop_deadline: None,
            held: false,
            undispatched: false,
        })
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// Sets the number of workers: new slots start at once, surplus ones
    /// finish their jobs and retire. A held pool spawns nothing: its count
    /// (`config.workers`) is taken up at its release.
    pub fn scale(&mut self, count: usize, now: Instant, ctx: &mut Ctx<'_>) {
        if self.held {
            self.tick(now, ctx);
            return;
        }
        while self.workers.len() > count {
            let worker = self.workers.pop().expect("len > count");
            self.retiring.push(worker);
        }
        while self.workers.len() < count {
            let mut life = lifecycle::Slot::new(&POLICY, self.workers.len() as u64);
            life.step(Event::Want { now });
            self.workers.push(Worker {
                index: self.workers.len(),
                token: (ctx.token)(),
                life,
                channel: None,
                in_flight: VecDeque::new(),
                unsent: 0,
                head_since: None,
                jobs: 0,
                failed: 0,
                restarts: 0,
                killed: None,
            });
        }
        self.tick(now, ctx);
    }

    /// Holds a pool that has no workers yet: its start waits for `after`.
    pub fn hold(&mut self) {
        self.held = self.workers.is_empty();
    }

    /// Whether the start order still holds this pool's workers.
    pub fn held(&self) -> bool {
        self.held
    }

    /// The pool's `after` are ready: its workers start, and take the jobs
    /// queued meanwhile.
    pub fn release(&mut self, now: Instant, ctx: &mut Ctx<'_>) {
        self.held = false;
        self.scale(self.config.workers as usize, now, ctx);
    }

    /// Ready for what lists it in `after`: every worker it should have is
    /// spawned and serving (running, its channel up, not being killed).
    pub fn is_ready(&self) -> bool {
        !self.held
            && !self.stopping
            && self.workers.len() == self.config.workers as usize
            && self.workers.iter().all(|w| {
                matches!(w.life.state, State::Running { .. })
                    && w.killed.is_none()
                    && w.channel.is_some()
            })
    }

    /// Whether any worker of it (current or retiring) has a process.
    pub fn has_processes(&self) -> bool {
        self.workers
            .iter()
            .chain(self.retiring.iter())
            .any(|w| w.life.pid().is_some())
    }

    /// A reload changed this pool: settings of the jobs and the worker
    /// count apply at once; with `replace` (the reload plan's word: a new
    /// worker, transport or frame size) new workers start while the old
    /// ones finish what they hold.
    pub fn reconfigure(
        &mut self,
        config: &PoolConfig,
        replace: bool,
        now: Instant,
        ctx: &mut Ctx<'_>,
    ) -> Result<(), String> {
        let fresh = Pool::new(config)?;
        self.command = fresh.command;
        self.config = config.clone();
        if replace {
            self.retiring.append(&mut self.workers);
        }
        self.scale(config.workers as usize, now, ctx);
        Ok(())
    }

    /// Takes a job for `client`'s `seq`-th request; `Err` (busy, stopping,
    /// too large) is the reason to answer at once. The job waits in the
    /// queue for [`Pool::dispatch_queued`], which the loop calls once the
    /// caller's read is submitted: the jobs of one read go to the workers
    /// together.
    pub fn submit(
        &mut self,
        client: ClientId,
        seq: u64,
        payload: Payload,
        now: Instant,
    ) -> Result<(), String> {
        if self.stopping {
            return Err(format!("pool {} is stopping", self.config.name));
        }
        if payload.len() as u64 > self.config.max_frame {
            return Err(format!(
                "a job of {} bytes is over the pool's max_frame ({} bytes)",
                payload.len(),
                self.config.max_frame
            ));
        }
        if self.queue.len() >= self.config.queue.max(1) {
            // Jobs of this batch not sent yet may fit the workers: the
            // queue is full only when what waits has nowhere to go.
            self.dispatch(now);
        }
        if self.queue.len() >= self.config.queue.max(1) {
            self.book.stats.busy += 1;
            return Err(format!(
                "busy: pool {} has {} jobs waiting (queue = {})",
                self.config.name,
                self.queue.len(),
                self.config.queue
            ));
        }
        let id = self.next_job;
        self.next_job += 1;
        self.book.jobs.insert(
            id,
            Job {
                payload,
                client,
                seq,
                attempts: 0,
                submitted: now,
            },
        );
        self.queue.push_back(id);
        self.undispatched = true;
        Ok(())
    }

    /// Sends the jobs submitted since the last call, each worker's share
    /// handed to its channel in one run. Call after a batch of
    /// [`Pool::submit`]s, in the same turn: nothing waits for a timer.
    pub fn dispatch_queued(&mut self, now: Instant) {
        if std::mem::take(&mut self.undispatched) {
            self.dispatch(now);
        }
    }

    /// Moves the jobs finished since the last call into `into` (empty),
    /// for the loop to route to callers; the two buffers swap, so neither
    /// is allocated again per turn.
    pub fn take_done(&mut self, into: &mut Vec<Done>) {
        debug_assert!(into.is_empty());
        std::mem::swap(&mut self.book.done, into);
    }

    /// Tokens of channels that are gone for good.
    pub fn take_released(&mut self) -> Vec<Token> {
        std::mem::take(&mut self.released)
    }

    /// Sends queued jobs to the least-loaded workers with room: first
    /// every job is given a worker, then each worker's new jobs are handed
    /// to its channel in order. A channel that breaks midway kills its
    /// worker; the jobs it did not take go back to the front of the queue,
    /// in order, for the other workers.
    fn dispatch(&mut self, now: Instant) {
        loop {
            while let Some(&id) = self.queue.front() {
                let Some(worker) = self
                    .workers
                    .iter_mut()
                    .filter(|w| w.accepts())
                    .min_by_key(|w| w.in_flight.len())
                else {
                    break;
                };
                self.queue.pop_front();
                if !self.book.jobs.contains_key(&id) {
                    continue;
                }
                if worker.in_flight.is_empty() {
                    worker.head_since = Some(now);
                }
                worker.in_flight.push_back(id);
                worker.unsent += 1;
            }
            let mut broke = false;
            for worker in &mut self.workers {
                broke |= send_unsent(&self.config.name, worker, &self.book, &mut self.queue);
            }
            if !broke {
                return;
            }
        }
    }

    /// The loop saw the channel behind `token` ready: send what waits,
    /// take every result in.
    pub fn channel_ready(
        &mut self,
        token: Token,
        hangup: ipc::Hangup,
        now: Instant,
        registry: &Registry,
    ) {
        let Some(worker) = self
            .workers
            .iter_mut()
            .chain(self.retiring.iter_mut())
            .find(|w| w.token == token)
        else {
            return;
        };
        let Some(channel) = worker.channel.as_mut() else {
            return;
        };
        channel.ready(hangup);
        let mut broken = channel.flush().err();
        while broken.is_none() {
            match channel.recv() {
                Ok(Some(result)) => {
                    let Some(id) = worker.in_flight.pop_front() else {
                        broken = Some(ipc::ChannelError::Corrupt("a result for no job".into()));
                        break;
                    };
                    worker.jobs += 1;
                    worker.failed += u64::from(result.starts_with(b"ERR "));
                    worker.head_since = (!worker.in_flight.is_empty()).then_some(now);
                    if let Some(job) = self.book.jobs.remove(&id) {
                        self.book.finish(job, result, now);
                    }
                }
                Ok(None) => break,
                Err(e) => broken = Some(e),
            }
        }
        if let Some(e) = broken {
            if worker.killed.is_none() {
                kill(
                    &self.config.name,
                    worker,
                    format!("its channel broke: {e}"),
                    false,
                );
            }
        }
        if !self.retiring.is_empty() {
            self.retire_drained(now, registry);
        }
        // Room was made: the queue's front goes out now, the worker's
        // share in one run, before its request pipe runs dry.
        self.dispatch(now);
    }

    /// A worker of this pool was reaped. Returns its index, or None if the
    /// pid is not one of its workers.
    pub fn exited(
        &mut self,
        pid: Pid,
        exit: ExitKind,
        now: Instant,
        ctx: &mut Ctx<'_>,
    ) -> Option<usize> {
        let name = self.config.name.clone();
        let (list, position) = match self.workers.iter().position(|w| w.life.pid() == Some(pid)) {
            Some(p) => (&mut self.workers, p),
            None => match self.retiring.iter().position(|w| w.life.pid() == Some(pid)) {
                Some(p) => (&mut self.retiring, p),
                None => return None,
            },
        };
        let worker = &mut list[position];
        if let Some(mut channel) = worker.channel.take() {
            let _ = channel.deregister(ctx.registry);
        }
        let killed = worker.killed.take();
        let reason = match &killed {
            Some(k) => k.reason.clone(),
            None => format!("worker #{} (pid {pid}) {exit}", worker.index),
        };
        let charged = !killed.as_ref().is_some_and(|k| k.head_failed);
        let in_flight: Vec<u64> = worker.in_flight.drain(..).collect();
        worker.head_since = None;
        let index = worker.index;
        let action = worker.life.step(Event::Exited {
            now,
            recycled: false,
        });
        // The running job is charged an attempt; those behind it go again free.
        for (k, &id) in in_flight.iter().enumerate().rev() {
            let Some(job) = self.book.jobs.get_mut(&id) else {
                continue;
            };
            if k == 0 && charged {
                job.attempts += 1;
                if job.attempts > self.config.retries {
                    let job = self.book.jobs.remove(&id).expect("just found");
                    let attempts = job.attempts;
                    let message = format!("ERR worker died: {reason} (tried {attempts} times)");
                    self.book.finish(job, message.into_bytes(), now);
                    continue;
                }
                self.book.stats.retried += 1;
            }
            self.queue.push_front(id);
        }
        match action {
            Action::Vacated => {
                log::info!("pool \"{name}\" worker #{index} (pid {pid}) {exit}");
            }
            Action::Replace { delay, .. } => {
                if let Some(w) = self.workers.iter_mut().find(|w| w.index == index) {
                    w.restarts += 1;
                }
                // A worker forkd killed itself (its reason was logged then)
                // is not an unexpected SIGKILL, so no out-of-memory guess.
                let how = match killed {
                    Some(_) => exit.to_string(),
                    None => exit.unexpected().to_string(),
                };
                log::warn!(
                    "pool \"{name}\" worker #{index} (pid {pid}) {how}; replacing it in {}",
                    crate::logging::human_duration(delay)
                );
            }
            _ => {}
        }
        self.tick(now, ctx);
        Some(index)
    }

    /// Forks what is due, enforces `job_timeout`, retires drained workers.
    pub fn tick(&mut self, now: Instant, ctx: &mut Ctx<'_>) {
        let name = self.config.name.clone();
        if let Some(timeout) =
            (!self.config.job_timeout.is_zero()).then_some(self.config.job_timeout)
        {
            for worker in self.workers.iter_mut().chain(self.retiring.iter_mut()) {
                let late = worker.killed.is_none()
                    && worker.head_since.is_some_and(|t| now >= t + timeout);
                if !late {
                    continue;
                }
                if let Some(id) = worker.in_flight.pop_front() {
                    let message = format!(
                        "ERR timeout: the job ran over job_timeout ({}); its worker was killed",
                        crate::logging::human_duration(timeout)
                    );
                    self.book.fail(id, message, now);
                }
                let reason = format!(
                    "killed after job_timeout ({})",
                    crate::logging::human_duration(timeout)
                );
                kill(&name, worker, reason, true);
            }
            // A job no worker took (none could start) fails too, rather
            // than leave its caller waiting for good.
            while let Some(&id) = self.queue.front() {
                let waited_out = self
                    .book
                    .jobs
                    .get(&id)
                    .map_or(true, |j| now >= j.submitted + timeout);
                if !waited_out {
                    break;
                }
                self.queue.pop_front();
                let message = format!(
                    "ERR timeout: no worker of pool {name} took the job within job_timeout ({})",
                    crate::logging::human_duration(timeout)
                );
                self.book.fail(id, message, now);
            }
        }
        self.retire_drained(now, ctx.registry);
        if !self.stopping {
            for position in 0..self.workers.len() {
                if self.workers[position].life.step(Event::Tick { now }) == Action::Spawn {
                    self.spawn(position, now, ctx);
                }
            }
        }
        self.dispatch(now);
    }

    /// Retiring workers go once their jobs are done (or at once when they
    /// hold none): the channel closes and SIGTERM follows; a stopping
    /// pool's last ones are killed at its deadline.
    fn retire_drained(&mut self, now: Instant, registry: &Registry) {
        let overdue = self.stop_deadline.is_some_and(|d| now >= d);
        if overdue {
            self.stop_deadline = None;
        }
        for worker in &mut self.retiring {
            if worker.in_flight.is_empty() || overdue {
                if let Some(mut channel) = worker.channel.take() {
                    let _ = channel.deregister(registry);
                }
                let signal = if overdue {
                    Signal::SIGKILL
                } else {
                    Signal::SIGTERM
                };
                if matches!(worker.life.state, State::Running { .. }) || overdue {
                    if let Action::Signal(pid, sig) = worker.life.step(Event::Retire { signal }) {
                        let _ = nix::sys::signal::kill(pid, sig);
                    }
                } else {
                    worker.life.step(Event::Retire { signal });
                }
            }
        }
        let released = &mut self.released;
        self.retiring.retain(|w| {
            let gone = matches!(w.life.state, State::Vacant);
            if gone {
                released.push(w.token);
            }
            !gone
        });
    }

    /// The workers forked since the last call: (index, pid), in order.
    pub fn take_started(&mut self) -> Vec<(usize, Pid)> {
        crate::process::take_unless_empty(&mut self.started)
    }

    fn spawn(&mut self, position: usize, now: Instant, ctx: &mut Ctx<'_>) {
        let serial = self.next_channel;
        self.next_channel += 1;
        let id = ChannelId {
            pid: self.parent.as_raw() as u32,
            pool: &self.config.name,
            worker: serial,
        };
        let worker = &mut self.workers[position];
        let index = worker.index;
        let made = record_names(self.config.transport, id, ctx.ledger.as_deref_mut())
            .and_then(|()| ipc::channel(self.config.transport, id, self.config.max_frame as usize));
        let result = made
            .map_err(|e| format!("cannot create its {:?} channel: {e}", self.config.transport))
            .and_then(|(mut parent, child)| {
                parent
                    .register(ctx.registry, worker.token)
                    .map_err(|e| format!("cannot watch its channel: {e}"))?;
                let pid = match (&self.config.worker, &self.command) {
                    (_, Some(command)) => spawn_command(command, &child),
                    (WorkerKind::Builtin(name), None) => spawn_builtin(name, child, self.parent),
                    (WorkerKind::Command(_), None) => Err("no prepared command".to_string()),
                };
                match pid {
                    Ok(pid) => Ok((pid, parent)),
                    Err(e) => {
                        let _ = parent.deregister(ctx.registry);
                        Err(e)
                    }
                }
            });
        match result {
            Ok((pid, parent)) => {
                worker.channel = Some(parent);
                worker.life.step(Event::Spawned { pid, now });
                log::info!(
                    "pool \"{}\" worker #{index} started (pid {pid})",
                    self.config.name
                );
                (ctx.spawned)(pid);
                self.started.push((index, pid));
            }
            Err(e) => {
                if let Action::Retry { delay } = worker.life.step(Event::SpawnFailed { now }) {
                    log::error!(
                        "pool \"{}\": worker #{index} did not start: {e}; retrying in {}",
                        self.config.name,
                        crate::logging::human_duration(delay)
                    );
                }
            }
        }
    }

    /// Shutdown or removal: queued jobs fail, workers finish the jobs
    /// they hold, and whatever still runs at `deadline` is killed.
    pub fn stop(&mut self, now: Instant, deadline: Instant, ctx: &mut Ctx<'_>) {
        self.stopping = true;
        self.stop_deadline = Some(deadline);
        for id in std::mem::take(&mut self.queue) {
            let message = format!("ERR pool {} is stopping", self.config.name);
            self.book.fail(id, message, now);
        }
        self.retiring.append(&mut self.workers);
        self.tick(now, ctx);
    }

    /// Everything stopped: no worker left.
    pub fn is_stopped(&self) -> bool {
        self.stopping && self.workers.is_empty() && self.retiring.is_empty()
    }

    /// The nearest time this pool must be ticked.
    pub fn deadline(&self) -> Option<Instant> {
        let timeout = (!self.config.job_timeout.is_zero()).then_some(self.config.job_timeout);
        let all = || self.workers.iter().chain(self.retiring.iter());
        let spawns = self.workers.iter().filter_map(|w| w.life.deadline());
        let timeouts = all()
            .filter(|w| w.killed.is_none())
            .filter_map(|w| Some(w.head_since? + timeout?));
        let waiting = self
            .queue
            .front()
            .and_then(|id| Some(self.book.jobs.get(id)?.submitted + timeout?));
        spawns
            .chain(timeouts)
            .chain(waiting)
            .chain(self.stop_deadline.filter(|_| !self.retiring.is_empty()))
            .min()
    }

    /// Every finished job's latency, for `forkctl metrics`.
    pub fn latency_histogram(&self) -> &latency::Histogram {
        &self.book.stats.histogram
    }

    /// `forkctl status`: counters, latency percentiles and the workers.
    pub fn status(&self) -> Value {
        let mut sorted: Vec<u64> = self.book.stats.latencies_us.iter().copied().collect();
        sorted.sort_unstable();
        let percentile = |p: usize| {
            sorted
                .get((sorted.len() * p / 100).min(sorted.len().saturating_sub(1)))
                .map(|us| *us as f64 / 1000.0)
        };
        let in_flight: usize = self
            .workers
            .iter()
            .chain(self.retiring.iter())
            .map(|w| w.in_flight.len())
            .sum();
        let workers: Vec<Value> = self
            .workers
            .iter()
            .map(|w| w.status(false))
            .chain(self.retiring.iter().map(|w| w.status(true)))
            .collect();
        let state = match (
            self.stopping,
            workers.iter().any(|w| w["state"] == "running"),
        ) {
            (true, _) => "stopping",
            (false, _) if self.held => "waiting",
            (false, true) => "running",
            (false, false) => "starting",
        };
        json!({
            "name": self.config.name,
            "state": state,
            "transport": self.config.transport.keyword(),
            "worker": match &self.config.worker {
                WorkerKind::Builtin(name) => format!("builtin:{name}"),
                WorkerKind::Command(argv) => argv.join(" "),
            },
            "done": self.book.stats.done,
            "failed": self.book.stats.failed,
            "retried": self.book.stats.retried,
            "busy": self.book.stats.busy,
            "in_flight": in_flight,
            "queued": self.queue.len(),
            "queue": self.config.queue,
            "latency_p50_ms": percentile(50),
            "latency_p99_ms": percentile(99),
            "workers": workers,
        })
    }
}
