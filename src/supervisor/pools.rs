//! `[[pool]]`s in the loop: starting them (before the services that
//! forward to them; a pool whose `after` is not ready holds its workers
//! until `start_order.rs` releases them), their workers' channels and
//! exits, the callers' connections (`forkctl call` upgraded from the control socket, and the
//! pool endpoint the `pool` handler connects to), results routed back to
//! their callers, timers, scale, reload and stop.
//!
//! The mechanisms are in [`crate::pool`] and [`crate::ipc`]; this file
//! only wires them to `children` (pid → owner), `sources` (token → fd) and
//! the deadlines.

use std::collections::HashMap;
use std::time::Instant;

use mio::net::{UnixListener, UnixStream};
use mio::{Interest, Token};
use nix::unistd::Pid;
use serde_json::Value;

use super::{Owner, Source, Supervisor};
use crate::config::PoolConfig;
use crate::ipc::names::Ledger;
use crate::ipc::Hangup;
use crate::pool::client::Client;
use crate::pool::{Ctx, Pool};
use crate::process::ExitKind;

/// A pool, with the id its tokens and pids refer to.
pub(super) struct RunningPool {
    pub(super) id: u64,
    pub(super) pool: Pool,
    endpoint: Option<(UnixListener, Token)>,
    /// Removed by a reload: it drains and is dropped once stopped.
    removed: bool,
}

/// The pools, and the ledger of their IPC names.
#[derive(Default)]
pub(super) struct Pools {
    pub(super) list: Vec<RunningPool>,
    next_id: u64,
    ledger: Option<Ledger>,
    /// Shutdown reached the pools.
    stopping: bool,
    /// Buffers `settle_pool` reuses every turn (finished jobs, the callers
    /// they touched): the loop allocates nothing per job for them.
    done: Vec<crate::pool::Done>,
    touched: Vec<Token>,
    /// Worker-channel events were handled and their results not yet
    /// routed (`finish_pool_turn`).
    unsettled: bool,
}

/// A caller's connection and the pool it talks to.
#[derive(Debug)]
pub(super) struct Caller {
    pool: u64,
    client: Client<UnixStream>,
    /// Set for a `forkctl call` upgraded from the control socket: its
    /// slot there is given back when it closes.
    control_peer: Option<crate::control::server::Peer>,
}

/// The abstract socket address of a pool's endpoint: `@forkd.<pid>.pool.<name>`.
pub fn endpoint_name(forkd: u32, pool: &str) -> String {
    format!("forkd.{forkd}.pool.{pool}")
}

impl Supervisor {
    /// Opens the ledger and starts every pool. Called before services.
    pub(super) fn start_pools(&mut self) -> Result<(), String> {
        if !self.config.pools.is_empty() {
            self.open_ledger();
        }
        for config in self.config.pools.clone() {
            self.add_pool(&config)?;
        }
        Ok(())
    }

    /// The ledger of IPC names, opened with the first pool: it removes
    /// what a killed forkd of the same control socket left.
    fn open_ledger(&mut self) {
        if self.pools.ledger.is_some() {
            return;
        }
        match Ledger::open(self.control.server.path()) {
            Ok((ledger, removed)) => {
                if removed > 0 {
                    log::info!("removed {removed} message queue(s) and shared-memory segment(s) a previous forkd left");
                }
                self.pools.ledger = Some(ledger);
            }
            Err(e) => log::warn!(
                "cannot keep a ledger of pool IPC names beside {}: {e}; queues and segments of a killed forkd will not be removed at the next start",
                self.control.server.path().display()
            ),
        }
    }

    pub(super) fn add_pool(&mut self, config: &PoolConfig) -> Result<(), String> {
        let mut pool = Pool::new(config)?;
        let id = self.pools.next_id;
        self.pools.next_id += 1;
        let endpoint = self.bind_endpoint(id, &config.name)?;
        let unready = self.unready_of(&config.after);
        if !unready.is_empty() {
            log::info!(
                "pool \"{}\" waiting for {}",
                config.name,
                unready.join(", ")
            );
            pool.hold();
        }
        self.pools.list.push(RunningPool {
            id,
            pool,
            endpoint: Some(endpoint),
            removed: false,
        });
        let count = config.workers as usize;
        self.with_pool(id, |pool, now, ctx| pool.scale(count, now, ctx));
        Ok(())
    }

    fn bind_endpoint(&mut self, id: u64, name: &str) -> Result<(UnixListener, Token), String> {
        use std::os::linux::net::SocketAddrExt;
        let address = endpoint_name(std::process::id(), name);
        let bound = std::os::unix::net::SocketAddr::from_abstract_name(address.as_bytes())
            .and_then(|a| std::os::unix::net::UnixListener::bind_addr(&a))
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .map_err(|e| format!("pool \"{name}\": cannot open its endpoint @{address}: {e}"))?;
        let mut listener = UnixListener::from_std(bound);
        let token = self.allocate_token();
        self.poll
            .registry()
            .register(&mut listener, token, Interest::READABLE)
            .map_err(|e| format!("pool \"{name}\": cannot watch its endpoint: {e}"))?;
        self.sources
            .insert(token, Source::PoolEndpoint { pool: id });
        Ok((listener, token))
    }

    /// Runs `f` on pool `id` with a context wired to the loop, then
    /// routes its results and forgets its released tokens.
    pub(super) fn with_pool<T>(
        &mut self,
        id: u64,
        f: impl FnOnce(&mut Pool, Instant, &mut Ctx<'_>) -> T,
    ) -> Option<T> {
        let result = self.with_pool_unsettled(id, f);
        self.settle_pool(id);
        result
    }

    /// [`Supervisor::with_pool`] without routing what finished: for the
    /// channel events of a turn, settled together by
    /// [`Supervisor::finish_pool_turn`].
    fn with_pool_unsettled<T>(
        &mut self,
        id: u64,
        f: impl FnOnce(&mut Pool, Instant, &mut Ctx<'_>) -> T,
    ) -> Option<T> {
        let position = self.pools.list.iter().position(|p| p.id == id)?;
        let now = Instant::now();
        let mut new_tokens = Vec::new();
        let mut pids = Vec::new();
        let next_token = &mut self.next_token;
        let result = {
            let running = &mut self.pools.list[position];
            let mut token = || {
                let t = Token(*next_token);
                *next_token += 1;
                new_tokens.push(t);
                t
            };
            let mut spawned = |pid: Pid| pids.push(pid);
            let mut ctx = Ctx {
                registry: self.poll.registry(),
                ledger: self.pools.ledger.as_mut(),
                token: &mut token,
                spawned: &mut spawned,
            };
            f(&mut running.pool, now, &mut ctx)
        };
        for token in new_tokens {
            self.sources.insert(token, Source::PoolWorker { pool: id });
        }
        for pid in pids {
            self.children.insert(pid, Owner::PoolWorker { pool: id });
        }
        Some(result)
    }

    /// Whether worker-channel events left results for `finish_pool_turn`
    /// (a flag: no lookup on the path of every other event).
    pub(super) fn pools_unsettled(&self) -> bool {
        self.pools.unsettled
    }

    /// Routes what the worker-channel events handled since the last call
    /// brought back: each caller's results in one write however many
    /// worker events brought them (both workers' results for one caller:
    /// one write, one wake-up of the caller). The loop calls it before any
    /// other source and at the end of the turn, so results never wait
    /// behind other work (a listener's forks) in the same turn.
    pub(super) fn finish_pool_turn(&mut self) {
        if !std::mem::take(&mut self.pools.unsettled) {
            return;
        }
        // Backwards: settling may remove that pool from the list.
        for position in (0..self.pools.list.len()).rev() {
            self.settle_pool(self.pools.list[position].id);
        }
    }

    /// Hands finished jobs to their callers and writes them out; a caller
    /// that can read again submits more, so this repeats until quiet.
    fn settle_pool(&mut self, id: u64) {
        let Some(position) = self.pools.list.iter().position(|p| p.id == id) else {
            return;
        };
        for token in self.pools.list[position].pool.take_released() {
            self.sources.remove(&token);
        }
        let mut done = std::mem::take(&mut self.pools.done);
        let mut touched = std::mem::take(&mut self.pools.touched);
        loop {
            self.pools.list[position].pool.take_done(&mut done);
            if done.is_empty() {
                break;
            }
            for d in done.drain(..) {
                let token = Token(d.client as usize);
                if let Some(Source::PoolCaller(caller)) = self.sources.get_mut(&token) {
                    caller.client.complete(d.seq, d.result);
                    touched.push(token);
                }
            }
            touched.sort_unstable();
            touched.dedup();
            for token in touched.drain(..) {
                self.serve_caller(token, None);
            }
        }
        self.pools.done = done;
        self.pools.touched = touched;
        if self.pools.list[position].removed && self.pools.list[position].pool.is_stopped() {
            self.pools.list.remove(position);
        }
    }

    /// A worker channel is ready.
    pub(super) fn pool_channel_ready(&mut self, id: u64, token: Token, hangup: Hangup) {
        self.with_pool_unsettled(id, |pool, now, ctx| {
            pool.channel_ready(token, hangup, now, ctx.registry)
        });
        self.pools.unsettled = true;
    }

    /// The endpoint is readable: accept every pending caller of our uid.
    pub(super) fn accept_pool_callers(&mut self, id: u64) {
        loop {
            let Some(running) = self.pools.list.iter().find(|p| p.id == id) else {
                return;
            };
            let Some((listener, _)) = &running.endpoint else {
                return;
            };
            let max_frame = running.pool.config.max_frame as usize;
            let stream = match listener.accept() {
                Ok((stream, _)) => stream,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    log::warn!(
                        "pool \"{}\": accept on its endpoint failed: {e}",
                        running.pool.name()
                    );
                    return;
                }
            };
            // An abstract socket has no file mode: only forkd's own user
            // (its workers and handlers) and root may submit jobs.
            let uid =
                nix::sys::socket::getsockopt(&stream, nix::sys::socket::sockopt::PeerCredentials)
                    .map(|c| c.uid())
                    .unwrap_or(u32::MAX);
            if uid != 0 && uid != nix::unistd::geteuid().as_raw() {
                log::warn!(
                    "pool \"{}\": refused an endpoint connection from uid {uid} (only forkd's user and root)",
                    running.pool.name()
                );
                continue;
            }
            self.add_caller(id, stream, max_frame, None, &[], Vec::new());
        }
    }

    /// Registers a caller and serves what it already sent.
    fn add_caller(
        &mut self,
        pool: u64,
        mut stream: UnixStream,
        max_frame: usize,
        control_peer: Option<crate::control::server::Peer>,
        already_read: &[u8],
        unsent: Vec<u8>,
    ) {
        let token = self.allocate_token();
        let interest = Interest::READABLE | Interest::WRITABLE;
        if let Err(e) = self.poll.registry().register(&mut stream, token, interest) {
            log::warn!("pool: cannot watch a caller's connection: {e}");
            if let Some(peer) = control_peer {
                self.control.server.closed(&peer);
            }
            return;
        }
        let mut client = Client::new(stream, max_frame);
        client.preload(already_read, unsent);
        self.sources.insert(
            token,
            Source::PoolCaller(Box::new(Caller {
                pool,
                client,
                control_peer,
            })),
        );
        self.serve_caller(token, Some(Hangup::Possible));
    }

    /// `forkctl call`: the control connection becomes a caller of `pool`.
    pub(super) fn upgrade_to_caller(
        &mut self,
        pool: u64,
        conn: crate::control::server::Connection,
    ) {
        let (mut stream, rest, unsent, peer) = conn.into_parts();
        let _ = self.poll.registry().deregister(&mut stream);
        let max_frame = self
            .pools
            .list
            .iter()
            .find(|p| p.id == pool)
            .map_or(0, |p| p.pool.config.max_frame as usize);
        self.add_caller(pool, stream, max_frame, Some(peer), &rest, unsent);
    }

    /// Reads and submits a caller's jobs, writes its results; drops it
    /// once finished. `event`: the loop reported it (else only results
    /// arrived, and reading resumes if it was paused).
    pub(super) fn serve_caller(&mut self, token: Token, event: Option<Hangup>) {
        let readable = event.is_some();
        let Some(Source::PoolCaller(mut caller)) = self.sources.remove(&token) else {
            return;
        };
        let pool = caller.pool;
        if let Some(hangup) = event {
            caller.client.ready(hangup);
        }
        let mut alive = caller.client.writable().is_ok();
        if alive && (readable || caller.client.paused()) {
            let position = self.pools.list.iter().position(|p| p.id == pool);
            match position {
                Some(position) => {
                    let now = Instant::now();
                    let running = &mut self.pools.list[position].pool;
                    caller.client.readable(&mut |seq, payload| {
                        running.submit(token.0 as u64, seq, payload, now)
                    });
                    // What one read brought in goes to the workers
                    // together (as the results of a turn go to each
                    // caller in one write, `finish_pool_turn`).
                    running.dispatch_queued(now);
                }
                None => caller
                    .client
                    .readable(&mut |_, _| Err("the pool was removed".into())),
            }
            // Answers given at once (busy, too large) go out now.
            alive = caller.client.writable().is_ok();
        }
        if alive && !caller.client.finished() {
            self.sources.insert(token, Source::PoolCaller(caller));
        } else {
            let _ = self.poll.registry().deregister(&mut caller.client.stream);
            if let Some(peer) = caller.control_peer {
                self.control.server.closed(&peer);
            }
        }
    }

    /// A pool worker was reaped.
    pub(super) fn pool_worker_exited(&mut self, id: u64, pid: Pid, exit: ExitKind) {
        let index = self
            .with_pool(id, |pool, now, ctx| pool.exited(pid, exit, now, ctx))
            .flatten();
        match (self.pools.list.iter().find(|p| p.id == id), index) {
            (Some(p), Some(index)) => self.events.push(super::events::Event::WorkerExited {
                subject: format!("pool {}#{index}", p.pool.name()),
                pid: pid.as_raw(),
                how: exit.to_string(),
            }),
            _ => log::debug!("reaped pid {pid} of a removed pool ({exit})"),
        }
    }

    /// Moves the pools' worker starts since the last turn into the event
    /// stream.
    pub(super) fn collect_pool_events(&mut self) {
        for running in &mut self.pools.list {
            for (index, pid) in running.pool.take_started() {
                self.events.push(super::events::Event::WorkerStarted {
                    subject: format!("pool {}#{index}", running.pool.name()),
                    pid: pid.as_raw(),
                });
            }
        }
    }

    pub(super) fn pool_deadline(&self) -> Option<Instant> {
        self.pools
            .list
            .iter()
            .filter_map(|p| p.pool.deadline())
            .min()
    }

    pub(super) fn pool_timers(&mut self, now: Instant) {
        let due: Vec<u64> = self
            .pools
            .list
            .iter()
            .filter(|p| p.pool.deadline().is_some_and(|d| d <= now))
            .map(|p| p.id)
            .collect();
        for id in due {
            self.with_pool(id, |pool, now, ctx| pool.tick(now, ctx));
        }
    }

    /// Shutdown: every pool stops taking jobs, finishes what it holds
    /// within the daemon's stop_timeout, then its workers are killed.
    pub(super) fn stop_pools(&mut self, immediate: bool) {
        self.pools.stopping = true;
        let ids: Vec<u64> = self.pools.list.iter().map(|p| p.id).collect();
        let grace = self.config.daemon.stop_timeout;
        for id in ids {
            self.close_endpoint(id);
            self.with_pool(id, |pool, now, ctx| {
                let deadline = if immediate { now } else { now + grace };
                pool.stop(now, deadline, ctx)
            });
        }
    }

    /// Graceful shutdown: pools keep serving until every service child
    /// (a `pool` handler among them) is gone, then stop.
    pub(super) fn stop_pools_after_services(&mut self) {
        if self.shutdown.is_none() || self.pools.stopping || self.pools.list.is_empty() {
            return;
        }
        let service_children = self.connection_children()
            + self
                .children
                .values()
                .filter(|o| matches!(o, Owner::Service { .. }))
                .count();
        if service_children == 0 {
            self.stop_pools(false);
        }
    }

    fn close_endpoint(&mut self, id: u64) {
        let Some(running) = self.pools.list.iter_mut().find(|p| p.id == id) else {
            return;
        };
        if let Some((mut listener, token)) = running.endpoint.take() {
            let _ = self.poll.registry().deregister(&mut listener);
            self.sources.remove(&token);
        }
    }

    /// The pool named `name`, if it runs (and was not removed).
    pub(super) fn pool_id(&self, name: &str) -> Option<u64> {
        self.pools
            .list
            .iter()
            .find(|p| !p.removed && p.pool.name() == name)
            .map(|p| p.id)
    }

    /// `forkctl scale POOL N`.
    pub(super) fn scale_pool(&mut self, id: u64, count: u32) -> Option<(usize, usize)> {
        self.with_pool(id, |pool, now, ctx| {
            let was = pool.config.workers as usize;
            pool.config.workers = count;
            pool.scale(count as usize, now, ctx);
            (was, count as usize)
        })
    }

    /// A reload: new pools start, removed ones drain, changed ones get
    /// their new settings (and new workers when `plan` says so: the worker,
    /// transport or frame size changed) while old workers finish their jobs.
    pub(super) fn reload_pools(
        &mut self,
        diff: &crate::config::ConfigDiff,
        plan: &crate::config::Plan,
    ) -> Vec<String> {
        let mut lines = Vec::new();
        for name in &diff.pools.removed {
            if let Some(id) = self.pool_id(name) {
                self.close_endpoint(id);
                let grace = self.config.daemon.stop_timeout;
                self.with_pool(id, |pool, now, ctx| pool.stop(now, now + grace, ctx));
                if let Some(p) = self.pools.list.iter_mut().find(|p| p.id == id) {
                    p.removed = true;
                }
                self.settle_pool(id);
                lines.push(format!(
                    "pool {name} removed: its workers finish their jobs and stop"
                ));
            }
        }
        let configs: HashMap<String, PoolConfig> = self
            .config
            .pools
            .iter()
            .map(|p| (p.name.clone(), p.clone()))
            .collect();
        for name in &diff.pools.changed {
            let (Some(id), Some(config)) = (self.pool_id(name), configs.get(name)) else {
                continue;
            };
            let replace =
                plan.pool(name).map(|e| e.action) == Some(crate::config::Action::ReplaceWorkers);
            let applied = self.with_pool(id, |pool, now, ctx| {
                pool.reconfigure(config, replace, now, ctx)
            });
            match applied {
                Some(Ok(())) if replace => {
                    lines.push(format!("pool {name} changed: replacing its workers"))
                }
                Some(Ok(())) => lines.push(format!("pool {name} changed: applied in place")),
                Some(Err(e)) => lines.push(format!("pool {name}: {e}")),
                None => {}
            }
        }
        for name in &diff.pools.added {
            if let Some(config) = configs.get(name) {
                self.open_ledger();
                match self.add_pool(config) {
                    Ok(()) => lines.push(format!("pool {name} added")),
                    Err(e) => lines.push(e),
                }
            }
        }
        lines
    }

    pub(super) fn pools_status(&self, wanted: &dyn Fn(&str) -> bool) -> Vec<Value> {
        self.pools
            .list
            .iter()
            .filter(|p| !p.removed && wanted(p.pool.name()))
            .map(|p| {
                let mut status = p.pool.status();
                status["kind"] = "pool".into();
                let waiting_for = if p.pool.held() {
                    self.unready_of(&p.pool.config.after)
                } else {
                    Vec::new()
                };
                if !waiting_for.is_empty() {
                    status["detail"] = format!("waiting for {}", waiting_for.join(", ")).into();
                }
                status["waiting_for"] = waiting_for.into();
                status
            })
            .collect()
    }
}
