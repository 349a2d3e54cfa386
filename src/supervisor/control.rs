//! Control requests in the loop: accepting on the control socket, answering
//! each request line from forkctl, and the work a request leaves for later
//! (a restart waiting for its stop, a scale-down waiting for its exits, a
//! shutdown asked for over the socket).
//!
//! Handlers only change state and schedule through the instance state
//! machine; they never wait. The wire format and the socket mechanics live
//! in `crate::control`; the status report is in `control_status.rs`.

use std::collections::HashMap;
use std::io;
use std::time::Instant;

use mio::Interest;
use nix::unistd::Pid;
use serde_json::{json, Value};

use super::instance::{Event, Instance, State};
use super::{Program, Source, Supervisor};
use crate::config::DaemonConfig;
use crate::control::access::Role;
use crate::control::server::{ControlServer, Peer};
use crate::control::{
    error_reply, reply_line, split_target, ConfigText, ErrorKind, Request, MAX_LOG_LINES, MAX_SCALE,
};

/// The control socket and the work requests left pending.
#[derive(Debug)]
pub(super) struct ControlState {
    pub(super) server: ControlServer,
    /// (program, index) to start once it is down: `restart`.
    restarts: Vec<(String, usize)>,
    /// program → instance count it is shrinking to: `scale` down.
    shrinking: HashMap<String, usize>,
    shutdown_requested: bool,
    started: Instant,
    /// The same moment on the wall clock (`forkd_start_time_seconds`).
    pub(super) started_at: std::time::SystemTime,
    /// A `call` request was accepted: the connection becomes a caller of
    /// this pool once its reply is out.
    call: Option<u64>,
}

impl ControlState {
    /// Binds the socket named by `[daemon]` (or the default location).
    pub(super) fn bind(daemon: &DaemonConfig) -> io::Result<ControlState> {
        let path = daemon
            .control_socket
            .clone()
            .unwrap_or_else(crate::control::default_socket_path);
        let server = ControlServer::bind(
            &path,
            daemon.control_group.as_deref(),
            daemon.control_read_group.as_deref(),
        )?;
        log::info!("control socket: {}", path.display());
        Ok(ControlState {
            server,
            restarts: Vec::new(),
            shrinking: HashMap::new(),
            shutdown_requested: false,
            started: Instant::now(),
            started_at: std::time::SystemTime::now(),
            call: None,
        })
    }
}

fn control_idle_deadline(source: &Source) -> Option<Instant> {
    match source {
        Source::Control(conn) => Some(conn.idle_deadline()),
        _ => None,
    }
}

/// Resolved `NAME`, `NAME:INSTANCE` or `all`: (program position, instance).
type Targets = Vec<(usize, usize)>;

impl Supervisor {
    /// The listener is readable: register every accepted connection.
    pub(super) fn accept_control(&mut self) {
        let (sources, registry) = (&mut self.sources, self.poll.registry());
        let sweep = |uid: u32| {
            let gone: Vec<mio::Token> = sources
                .iter()
                .filter(|(_, source)| {
                    matches!(source, Source::Control(c) if c.peer.uid == uid && c.hung_up())
                })
                .map(|(&token, _)| token)
                .collect();
            for token in &gone {
                if let Some(Source::Control(mut conn)) = sources.remove(token) {
                    let _ = registry.deregister(conn.stream());
                }
            }
            gone.len()
        };
        for mut conn in self.control.server.accept(sweep) {
            let token = self.allocate_token();
            let interest = Interest::READABLE | Interest::WRITABLE;
            match self
                .poll
                .registry()
                .register(conn.stream(), token, interest)
            {
                Ok(()) => {
                    self.sources.insert(token, Source::Control(conn));
                }
                Err(e) => {
                    log::warn!("control socket: cannot watch a connection: {e}");
                    self.control.server.closed(&conn.peer);
                }
            }
        }
    }

    /// A connection is ready: read requests, answer them, write replies.
    pub(super) fn serve_control(&mut self, token: mio::Token) {
        let Some(Source::Control(mut conn)) = self.sources.remove(&token) else {
            return;
        };
        let (peer, role) = (conn.peer, conn.role);
        let keep = conn.pump(|line| {
            let reply = self.answer_line(line, role, &peer);
            if reply["ok"] == json!(false) {
                log::debug!("control (pid {}): refused: {}", peer.pid, reply["error"]);
            }
            (reply_line(&reply), self.control.call.is_some())
        });
        if let Some(pool) = self.control.call.take() {
            if keep && conn.is_upgraded() {
                self.upgrade_to_caller(pool, conn);
            } else {
                let _ = self.poll.registry().deregister(conn.stream());
                self.control.server.closed(&peer);
            }
            return;
        }
        if keep {
            self.sources.insert(token, Source::Control(conn));
        } else {
            let _ = self.poll.registry().deregister(conn.stream());
            self.control.server.closed(&peer);
        }
    }

    /// The nearest idle deadline of the control connections.
    pub(super) fn control_deadline(&self) -> Option<Instant> {
        self.source_deadline(control_idle_deadline)
    }

    /// Closes the connections that moved no byte for the idle timeout.
    pub(super) fn close_idle_control(&mut self, now: Instant) {
        for token in self.sources_due(now, control_idle_deadline) {
            let Some(Source::Control(mut conn)) = self.sources.remove(&token) else {
                continue;
            };
            log::info!(
                "control socket: closed an idle connection (uid {}, pid {}): nothing moved for {}",
                conn.peer.uid,
                conn.peer.pid,
                crate::logging::human_duration(crate::control::IDLE_TIMEOUT)
            );
            let _ = self.poll.registry().deregister(conn.stream());
            self.control.server.closed(&conn.peer);
        }
    }

    /// End of each loop turn: carry out what requests left pending.
    pub(super) fn control_reconcile(&mut self) {
        if std::mem::take(&mut self.control.shutdown_requested) {
            self.begin_shutdown(libc::SIGTERM);
        }
        if self.shutdown.is_some() {
            self.control.restarts.clear();
            return;
        }
        let pending = std::mem::take(&mut self.control.restarts);
        for (name, index) in pending {
            match self.instance(&name, index).map(|i| i.state) {
                Some(state) if state.is_down() => self.apply(&name, index, Event::Start),
                Some(_) => self.control.restarts.push((name, index)),
                None => {}
            }
        }
        let shrinking: Vec<(String, usize)> = self.control.shrinking.clone().into_iter().collect();
        for (name, target) in shrinking {
            let Some(p) = self.program_position(&name) else {
                self.control.shrinking.remove(&name);
                continue;
            };
            let program = &mut self.programs[p];
            while program.instances.len() > target
                && program
                    .instances
                    .last()
                    .is_some_and(|i| i.state.is_down() && i.pid.is_none())
            {
                program.instances.pop();
                let removed = program.instances.len();
                program.forget_instance_pipes(removed);
            }
            if program.instances.len() <= target {
                self.control.shrinking.remove(&name);
                self.close_orphan_notify_sockets();
                log::info!("{name} scaled down to {target} instance(s)");
            }
        }
    }

    fn instance(&self, name: &str, index: usize) -> Option<&Instance> {
        self.program_position(name)
            .and_then(|p| self.programs[p].instances.get(index))
    }

    pub(super) fn program_position(&self, name: &str) -> Option<usize> {
        self.programs.iter().position(|p| p.config.name == name)
    }

    /// Instances that requests may address: a shrinking program's doomed
    /// instances are left to finish stopping.
    fn live_count(&self, program: &Program) -> usize {
        let len = program.instances.len();
        self.control
            .shrinking
            .get(&program.config.name)
            .map_or(len, |&t| t.min(len))
    }

    fn answer_line(&mut self, line: &[u8], role: Role, peer: &Peer) -> Value {
        match serde_json::from_slice::<Request>(line) {
            Ok(request) => match crate::control::access::permit(role, &request) {
                Ok(()) => self.answer(request),
                Err(refusal) => {
                    log::warn!(
                        "control socket: refused \"{}\" from uid {} (pid {}): read-only access",
                        request.access().0,
                        peer.uid,
                        peer.pid
                    );
                    refusal
                }
            },
            Err(e) => error_reply(
                ErrorKind::BadRequest,
                format!("bad request: {e}; send one JSON object per line, like {{\"command\":\"status\"}} (see forkctl(1))"),
            ),
        }
    }

    fn answer(&mut self, request: Request) -> Value {
        let refuse_while_stopping = matches!(
            request,
            Request::Start { .. }
                | Request::Restart { .. }
                | Request::Scale { .. }
                | Request::Reload { dry_run: false, .. }
        );
        if refuse_while_stopping && self.shutdown.is_some() {
            return error_reply(
                ErrorKind::BadState,
                "forkd is shutting down; nothing new is started",
            );
        }
        match request {
            Request::Status { names } => self.status_reply(&names),
            Request::Start { name } => self.with_targets(&name, Self::start_targets),
            Request::Stop { name } => self.with_targets(&name, Self::stop_targets),
            Request::Restart { name } => self.with_targets(&name, Self::restart_targets),
            Request::Signal { name, signal } => self.signal_reply(&name, &signal),
            Request::Scale { name, count } => self.scale_reply(&name, count),
            Request::Reload { dry_run, config } => self.reload_reply(dry_run, config),
            Request::Shutdown => {
                log::info!("shutdown requested over the control socket");
                self.control.shutdown_requested = true;
                json!({ "ok": true, "pid": std::process::id(), "message": "stopping every program" })
            }
            Request::Log { name, lines, after } => self.log_reply(&name, lines, after),
            Request::Call { pool } => match self.pool_id(&pool) {
                Some(id) => {
                    self.control.call = Some(id);
                    json!({ "ok": true, "pool": pool, "message": "send frames; each is answered by a frame" })
                }
                None if self.config.pools.iter().any(|p| p.name == pool) => error_reply(
                    ErrorKind::BadState,
                    format!("pool \"{pool}\" is not running"),
                ),
                None => error_reply(
                    ErrorKind::UnknownName,
                    format!("no pool named \"{pool}\" (`forkctl status` lists them)"),
                ),
            },
            Request::Chat { name, text } => self.chat_reply(&name, &text),
            Request::Health => self.health_reply(),
            Request::Events { after } => self.events.reply(after),
            Request::Metrics => json!({ "ok": true, "text": self.metrics_text() }),
            Request::Version => json!({
                "ok": true,
                "version": env!("CARGO_PKG_VERSION"),
                "pid": std::process::id(),
                "uptime_secs": self.control.started.elapsed().as_secs(),
                "control_socket": self.control.server.path(),
            }),
        }
    }

    /// `reload`, or its dry run: the plan, or every error of a rejected
    /// configuration.
    fn reload_reply(&mut self, dry_run: bool, config: Option<ConfigText>) -> Value {
        let result = match (dry_run, &config) {
            (true, _) => {
                self.plan_reload(config.as_ref().map(|c| (c.path.as_path(), c.text.as_str())))
            }
            (false, Some(_)) => {
                return error_reply(
                    ErrorKind::BadRequest,
                    "a reload applies forkd's own file; \"config\" goes with \"dry_run\": true",
                )
            }
            (false, None) => {
                // reload() logs what it did, or every error, once.
                log::info!("reload requested over the control socket");
                self.reload()
            }
        };
        if let (true, Ok(done)) = (dry_run, &result) {
            self.events.push(super::events::Event::ReloadPlanned {
                summary: done.summary.clone(),
            });
        }
        match result {
            Ok(done) => json!({
                "ok": true,
                "dry_run": dry_run,
                "message": done.summary,
                "plan": done.plan,
            }),
            Err(errors) => {
                let mut reply = error_reply(ErrorKind::Failed, errors.join("\n"));
                reply["errors"] = json!(errors);
                reply
            }
        }
    }

    /// `NAME`, `NAME:INSTANCE` or `all` to instances, or the refusal.
    fn targets(&self, target: &str) -> Result<Targets, Value> {
        if target == "all" {
            return Ok(self
                .programs
                .iter()
                .enumerate()
                .flat_map(|(p, prog)| (0..self.live_count(prog)).map(move |i| (p, i)))
                .collect());
        }
        let (name, index) =
            split_target(target).map_err(|e| error_reply(ErrorKind::BadRequest, e))?;
        let Some(p) = self.program_position(name) else {
            return Err(self.unknown_program(name));
        };
        let count = self.live_count(&self.programs[p]);
        match index {
            None => Ok((0..count).map(|i| (p, i)).collect()),
            Some(i) if i < count => Ok(vec![(p, i)]),
            Some(i) => Err(error_reply(
                ErrorKind::UnknownName,
                format!(
                    "{name} has instances 0 to {}; there is no {name}:{i}",
                    count.saturating_sub(1)
                ),
            )),
        }
    }

    pub(super) fn unknown_program(&self, name: &str) -> Value {
        let config = &self.config;
        if config.pools.iter().any(|p| p.name == name) {
            return error_reply(
                ErrorKind::BadState,
                format!("\"{name}\" is a pool; this command applies to programs"),
            );
        }
        if config.services.iter().any(|s| s.name == name) {
            return error_reply(
                ErrorKind::BadState,
                format!("\"{name}\" is a service; this command applies to programs"),
            );
        }
        let known: Vec<&str> = self
            .programs
            .iter()
            .map(|p| p.config.name.as_str())
            .collect();
        let hint = if known.is_empty() {
            "forkd runs no programs".to_string()
        } else {
            format!("programs: {}", known.join(", "))
        };
        error_reply(
            ErrorKind::UnknownName,
            format!("no program named \"{name}\" ({hint}; `forkctl status` lists them)"),
        )
    }

    fn with_targets(&mut self, target: &str, act: fn(&mut Self, &Targets)) -> Value {
        let targets = match self.targets(target) {
            Ok(t) => t,
            Err(reply) => return reply,
        };
        let before: Vec<Value> = targets
            .iter()
            .map(|&(p, i)| self.target_json(p, i))
            .collect();
        act(self, &targets);
        json!({ "ok": true, "targets": before })
    }

    /// `{name, index, state, pid}` of one instance, as it is now.
    fn target_json(&self, p: usize, i: usize) -> Value {
        let program = &self.programs[p];
        let inst = &program.instances[i];
        json!({
            "name": program.config.name,
            "index": i,
            "state": inst.state.as_str(),
            "pid": inst.pid.map(Pid::as_raw),
        })
    }

    fn start_targets(&mut self, targets: &Targets) {
        for &(p, i) in targets {
            let name = self.programs[p].config.name.clone();
            if self.programs[p].instances[i].state == State::Stopping {
                // Start it again once the stop completes.
                self.control.restarts.push((name, i));
            } else {
                self.apply(&name, i, Event::Start);
            }
        }
    }

    /// Whole programs stop dependents first (`start_order.rs`); a single
    /// instance stops at once.
    fn stop_targets(&mut self, targets: &Targets) {
        let mut whole = Vec::new();
        for &(p, i) in targets {
            let name = self.programs[p].config.name.clone();
            self.control
                .restarts
                .retain(|(n, x)| !(n == &name && *x == i));
            let all =
                targets.iter().filter(|(q, _)| *q == p).count() == self.programs[p].instances.len();
            if !all {
                self.apply(&name, i, Event::Stop);
            } else if !whole.contains(&name) {
                whole.push(name);
            }
        }
        self.stop_in_order(whole);
    }

    fn restart_targets(&mut self, targets: &Targets) {
        for &(p, i) in targets {
            let name = self.programs[p].config.name.clone();
            self.apply(&name, i, Event::Stop);
            if !self
                .control
                .restarts
                .iter()
                .any(|(n, x)| n == &name && *x == i)
            {
                self.control.restarts.push((name, i));
            }
        }
    }

    fn signal_reply(&mut self, target: &str, signal: &str) -> Value {
        let Some(sig) = crate::process::parse_signal(signal) else {
            return error_reply(
                ErrorKind::BadRequest,
                format!("unknown signal \"{signal}\": use a name like HUP, USR1, TERM (with or without SIG) or a number"),
            );
        };
        let targets = match self.targets(target) {
            Ok(t) => t,
            Err(reply) => return reply,
        };
        let mut sent = Vec::new();
        for (p, i) in targets {
            let name = &self.programs[p].config.name;
            let inst = &self.programs[p].instances[i];
            let (Some(pid), State::Running | State::Stopping) = (inst.pid, inst.state) else {
                continue;
            };
            match nix::sys::signal::kill(pid, sig) {
                Ok(()) => {
                    log::info!("{name}#{i} (pid {pid}): sent {sig} (forkctl)");
                    sent.push(json!({ "name": name, "index": i, "pid": pid.as_raw() }));
                }
                Err(e) => log::warn!("{name}#{i} (pid {pid}): cannot send {sig}: {e}"),
            }
        }
        if sent.is_empty() {
            return error_reply(
                ErrorKind::BadState,
                format!("{target}: no instance is running; nothing was signalled"),
            );
        }
        json!({ "ok": true, "signal": sig.as_str(), "signalled": sent })
    }

    /// Sets program `p`'s instance count (`forkctl scale`, or a reload
    /// that changed `instances` and policy keys only): new instances start if
    /// the program is wanted up, the highest-numbered ones stop first on the
    /// way down. Returns the count before and whether it is wanted up.
    pub(super) fn scale_program(&mut self, p: usize, count: u32) -> (usize, bool) {
        let name = self.programs[p].config.name.clone();
        let name = name.as_str();
        let target = count as usize;
        let program = &self.programs[p];
        let was = self.live_count(program);
        // Wanted up: any instance running or about to (not stopped by choice).
        let wanted_up = program.instances[..was]
            .iter()
            .any(|i| matches!(i.state, State::Running | State::Backoff));
        self.control.shrinking.remove(name);
        let program = &mut self.programs[p];
        program.config.instances = count;
        if target > program.instances.len() {
            program.instances.resize_with(target, Instance::default);
        }
        if target < program.instances.len() {
            self.control.shrinking.insert(name.to_string(), target);
            for i in (target..self.programs[p].instances.len()).rev() {
                self.control
                    .restarts
                    .retain(|(n, x)| !(n == name && *x == i));
                self.apply(name, i, Event::Stop);
            }
        } else if wanted_up {
            // Instances a scale-down left still stopping are kept, and
            // start again once down (Start is ignored while Stopping).
            let revived: Targets = (was..target).map(|i| (p, i)).collect();
            self.start_targets(&revived);
        }
        (was, wanted_up)
    }

    fn scale_reply(&mut self, name: &str, count: u32) -> Value {
        if !(1..=MAX_SCALE).contains(&count) {
            return error_reply(
                ErrorKind::BadRequest,
                format!("cannot scale {name} to {count}: use 1 to {MAX_SCALE} (forkctl stop {name} stops every instance)"),
            );
        }
        if let Some(id) = self.pool_id(name) {
            let Some((was, to)) = self.scale_pool(id, count) else {
                return self.unknown_program(name);
            };
            log::info!("pool {name}: scaling from {was} to {to} worker(s) (forkctl)");
            return json!({ "ok": true, "kind": "pool", "name": name, "from": was, "to": to, "started": to > was });
        }
        let Some(p) = self.program_position(name) else {
            return self.unknown_program(name);
        };
        let target = count as usize;
        let (was, wanted_up) = self.scale_program(p, count);
        log::info!("{name}: scaling from {was} to {target} instance(s) (forkctl)");
        json!({ "ok": true, "name": name, "from": was, "to": target, "started": wanted_up && target > was })
    }

    fn log_reply(
        &self,
        target: &str,
        lines: Option<usize>,
        after: Option<std::collections::BTreeMap<String, u64>>,
    ) -> Value {
        let targets = match self.targets(target) {
            Ok(t) => t,
            Err(reply) => return reply,
        };
        let wanted = lines.unwrap_or(20).min(MAX_LOG_LINES);
        let mut instances = Vec::new();
        for (p, i) in targets {
            let inst = &self.programs[p].instances[i];
            let last = inst.recent_seq;
            let first = last + 1 - inst.recent.len() as u64;
            let numbered = inst.recent.iter().zip(first..);
            let (skip, missed) = match after.as_ref().and_then(|a| a.get(&i.to_string())) {
                // `seen` is the client's word: any u64, so no arithmetic
                // on it may overflow.
                Some(&seen) => (
                    seen.saturating_sub(first - 1),
                    first.saturating_sub(seen.saturating_add(1)),
                ),
                None => (inst.recent.len().saturating_sub(wanted) as u64, 0),
            };
            let kept: Vec<Value> = numbered
                .skip(skip.min(usize::MAX as u64) as usize)
                .map(|(text, seq)| json!({ "seq": seq, "text": text }))
                .collect();
            instances.push(json!({
                "name": self.programs[p].config.name,
                "index": i,
                "last_seq": last,
                "missed": missed,
                "lines": kept,
            }));
        }
        json!({ "ok": true, "instances": instances })
    }
}
