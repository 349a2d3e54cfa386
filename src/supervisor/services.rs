//! `[[service]]`s in the loop: starting them (listeners opened here, before
//! any program starts), fork mode's listener readiness, service children's
//! exits, their timers, drain on shutdown, `services_status()`, and the
//! hand-over of `forkctl chat`'s message to a chat room. What a reload
//! does to them is in `services_reload.rs`.
//!
//! The mechanisms are in [`crate::server`]; this file only wires them to the
//! loop's collections: `children` (pid → owner), `sources` (token → fd) and
//! the deadlines.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Instant;

use mio::unix::SourceFd;
use mio::{Interest, Token};
use nix::unistd::Pid;

use super::{Owner, Source, Supervisor};
use crate::config::{HandlerKind, Mode};
use crate::control::{error_reply, ErrorKind};
use crate::handlers::PostError;
use crate::process::ExitKind;
use crate::server::{Listeners, OperatorError, Role, Service};

/// A service, with the id its children and tokens refer to (stable while
/// the service exists, unlike its position).
pub(super) struct Running {
    pub(super) id: u64,
    pub(super) service: Service,
    /// fork mode: the mio tokens of its stream listeners, by listener index.
    pub(super) tokens: Vec<(Token, usize)>,
    /// Set when a reload removed or replaced it ("removed", "replaced"): it
    /// drains, its children's exits still come here, and it is dropped
    /// once the last of them is reaped.
    pub(super) retired: Option<&'static str>,
}

/// Records a new service child in the loop's pid → owner table, except
/// fork mode's connection children: their service's table is their only
/// record (see [`Service::owns_connection`]), and `reap` asks the services
/// about a pid the table does not know.
fn record(children: &mut HashMap<Pid, Owner>, id: u64, pid: Pid, role: Role) {
    if role != Role::Connection {
        children.insert(pid, Owner::Service { service: id, role });
    }
}

/// Every service: those of the current config in its order, then the
/// retired ones still draining.
#[derive(Default)]
pub(super) struct Services {
    pub(super) list: Vec<Running>,
    pub(super) next_id: u64,
}

impl Supervisor {
    /// Opens every service's listeners and forks its workers. On error
    /// nothing of the services is left running and the error says which
    /// service and what to do.
    pub(super) fn start_services(&mut self) -> Result<(), String> {
        // `systemd:NAME` listeners take the sockets systemd passed; what no
        // service takes stays in `inherited` for a later reload.
        let mut inherited = std::mem::take(self.inherited_sockets());
        let result = self.start_services_with(&mut |name: &str| inherited.take(name));
        *self.inherited_sockets() = inherited;
        result
    }

    fn start_services_with(
        &mut self,
        inherited: &mut dyn FnMut(&str) -> Option<OwnedFd>,
    ) -> Result<(), String> {
        let mut reuse = Listeners::new();
        let configs = self.config.services.clone();
        for config in &configs {
            let service = Service::start(config, &mut reuse, inherited, None)?;
            for listener in &service.listeners {
                log::info!("service {} listening on {}", config.name, listener.bound());
            }
            let id = self.services.next_id;
            self.services.next_id += 1;
            self.services.list.push(Running {
                id,
                service,
                tokens: Vec::new(),
                retired: None,
            });
            let position = self.services.list.len() - 1;
            self.register_listeners(position)?;
            self.spawn_service_workers(position);
        }
        Ok(())
    }

    /// fork mode: the supervisor accepts, so its stream listeners join the
    /// loop. The error names the service and the address.
    pub(super) fn register_listeners(&mut self, position: usize) -> Result<(), String> {
        let running = &self.services.list[position];
        if running.service.config.mode != Mode::Fork {
            return Ok(());
        }
        let id = running.id;
        let name = running.service.name().to_string();
        let fds: Vec<(usize, i32, String)> = running
            .service
            .listeners
            .iter()
            .enumerate()
            .filter(|(_, l)| l.is_stream())
            .map(|(i, l)| (i, l.as_raw_fd(), l.bound()))
            .collect();
        for (index, fd, bound) in fds {
            let token = self.allocate_token();
            self.poll
                .registry()
                .register(&mut SourceFd(&fd), token, Interest::READABLE)
                .map_err(|e| {
                    format!(
                        "service \"{name}\": cannot watch its listener on {bound} (epoll_ctl): {e}"
                    )
                })?;
            self.sources
                .insert(token, Source::Listener { service: id, index });
            self.services.list[position].tokens.push((token, index));
        }
        Ok(())
    }

    pub(super) fn position_of(&self, id: u64) -> Option<usize> {
        self.services.list.iter().position(|r| r.id == id)
    }

    pub(super) fn spawn_service_workers(&mut self, position: usize) {
        let now = Instant::now();
        let Running { id, service, .. } = &mut self.services.list[position];
        let id = *id;
        let children = &mut self.children;
        service.spawn_workers(now, &mut |pid, role| {
            record(children, id, pid, role);
        });
    }

    /// A fork-mode listener is readable: accept until nothing is pending
    /// (mio is edge-triggered) or the service is full.
    pub(super) fn listener_ready(&mut self, id: u64, index: usize) {
        let Some(position) = self.position_of(id) else {
            return;
        };
        let now = Instant::now();
        let Running { service, .. } = &mut self.services.list[position];
        let children = &mut self.children;
        while service.accept_ready(index, now, &mut |pid, role| {
            record(children, id, pid, role);
        }) {}
    }

    /// A reaped child that belonged to a service.
    pub(super) fn service_child_exited(&mut self, id: u64, role: Role, pid: Pid, exit: ExitKind) {
        let Some(position) = self.position_of(id) else {
            log::debug!("reaped pid {pid} of a removed service ({exit})");
            return;
        };
        let now = Instant::now();
        let Running {
            service, tokens, ..
        } = &mut self.services.list[position];
        let children = &mut self.children;
        let mut record = |pid, role| {
            record(children, id, pid, role);
        };
        service.child_exited(role, pid, exit, now, &mut record);
        if let Role::Worker(n) = role {
            self.events.push(super::events::Event::WorkerExited {
                subject: format!("service {}#{n}", service.config.name),
                pid: pid.as_raw(),
                how: exit.to_string(),
            });
        }
        // A slot freed below max_connections: take what waited in the backlog.
        if service.paused && service.conns_below_max() {
            service.paused = false;
            let indexes: Vec<usize> = tokens.iter().map(|(_, i)| *i).collect();
            for index in indexes {
                while service.accept_ready(index, now, &mut record) {}
            }
        }
        self.forget_if_drained(position);
    }

    /// The running service whose connection child `pid` is, if any.
    pub(super) fn connection_owner(&self, pid: Pid) -> Option<u64> {
        self.services
            .list
            .iter()
            .find(|r| r.service.owns_connection(pid))
            .map(|r| r.id)
    }

    /// Fork-mode connection children alive in every service.
    pub(super) fn connection_children(&self) -> usize {
        self.services
            .list
            .iter()
            .map(|r| r.service.connection_count())
            .sum()
    }

    /// The nearest deadline of any service.
    pub(super) fn service_deadline(&self) -> Option<Instant> {
        self.services
            .list
            .iter()
            .filter_map(|r| r.service.deadline())
            .min()
    }

    /// Runs every service's due timers.
    pub(super) fn service_timers(&mut self, now: Instant) {
        let children = &mut self.children;
        for Running { id, service, .. } in &mut self.services.list {
            if service.deadline().is_some_and(|d| d <= now) {
                let id = *id;
                service.on_timer(now, &mut |pid, role| {
                    record(children, id, pid, role);
                });
            }
        }
        // A retired service may have been waiting on its per_ip cleanup.
        for position in (0..self.services.list.len()).rev() {
            self.forget_if_drained(position);
        }
    }

    /// Moves what services did since the last turn into the event stream:
    /// the workers they forked, and what they summarised in their logs
    /// (refusals, sheds, timeouts, failures).
    pub(super) fn collect_service_events(&mut self) {
        for Running { service, .. } in &mut self.services.list {
            for (index, pid) in service.take_worker_starts() {
                self.events.push(super::events::Event::WorkerStarted {
                    subject: format!("service {}#{index}", service.config.name),
                    pid: pid.as_raw(),
                });
            }
            for summary in service.take_summaries() {
                self.events.push(super::events::Event::Summary {
                    subject: format!("service {}", service.config.name),
                    what: summary.what,
                    count: summary.count,
                });
            }
        }
    }

    /// Shutdown, step 1 for services: listeners close first, then workers
    /// drain (see [`Service::begin_drain`]).
    pub(super) fn drain_services(&mut self) {
        let now = Instant::now();
        for position in 0..self.services.list.len() {
            self.deregister_listeners(position);
            self.services.list[position].service.begin_drain(now);
        }
    }

    /// SIGKILL to every service child (second SIGTERM, SIGQUIT).
    pub(super) fn kill_services(&mut self) {
        let now = Instant::now();
        for position in 0..self.services.list.len() {
            self.deregister_listeners(position);
            self.services.list[position].service.kill_all(now);
        }
    }

    pub(super) fn deregister_listeners(&mut self, position: usize) {
        let running = &mut self.services.list[position];
        for (token, index) in running.tokens.drain(..) {
            self.sources.remove(&token);
            if let Some(listener) = running.service.listeners.get(index) {
                let fd = listener.as_raw_fd();
                let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
            }
        }
    }

    /// `forkctl chat NAME TEXT`: the operator's message to the worker
    /// holding the room; the reply says how many members it had.
    pub(super) fn chat_reply(&self, name: &str, text: &str) -> serde_json::Value {
        let found = self
            .services
            .list
            .iter()
            .find(|r| r.retired.is_none() && r.service.name() == name);
        let Some(running) = found else {
            let rooms: Vec<&str> = (self.config.services.iter())
                .filter(|s| s.handler == HandlerKind::Chat)
                .map(|s| s.name.as_str())
                .collect();
            let hint = match rooms.as_slice() {
                [] => "forkd serves no chat service".to_string(),
                rooms => format!("chat services: {}", rooms.join(", ")),
            };
            return error_reply(
                ErrorKind::UnknownName,
                format!("no service named \"{name}\" ({hint})"),
            );
        };
        if text.is_empty() {
            return error_reply(ErrorKind::BadRequest, "nothing to send: give the text");
        }
        match running.service.post_operator(text.as_bytes()) {
            Ok(members) => {
                log::info!(
                    "service \"{name}\": operator message of {} bytes for {members} member(s) (forkctl)",
                    text.len()
                );
                serde_json::json!({ "ok": true, "name": name, "members": members })
            }
            Err(e) => {
                let kind = match &e {
                    OperatorError::NoInbox(_) | OperatorError::NotRunning(_) => ErrorKind::BadState,
                    OperatorError::NoWorker | OperatorError::Post(PostError::Full) => {
                        ErrorKind::Busy
                    }
                    OperatorError::Post(PostError::TooLong { .. }) => ErrorKind::TooLarge,
                    OperatorError::Post(PostError::Failed(_)) => ErrorKind::Failed,
                };
                error_reply(kind, format!("service \"{name}\": {e}"))
            }
        }
    }

    /// One JSON object per service for `forkctl status`: `name`, `state`,
    /// `mode`, `handler`, `listen` (bound addresses), `connections`,
    /// `accepted`, `refused`, `errors`, `timeouts`, and `workers` (each with
    /// `index`, `state`, `pid`, `served`; in fork mode the live
    /// per-connection children).
    pub fn services_status(&self) -> Vec<serde_json::Value> {
        self.services
            .list
            .iter()
            .map(|r| r.service.status())
            .collect()
    }
}
