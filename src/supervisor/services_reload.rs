//! What a reload does to `[[service]]`s, by name: added ones start, removed
//! ones drain, changed ones are replaced, unchanged ones are not touched
//! (same workers, same pids).
//!
//! Two phases, so that a rejected reload changes nothing. First every new
//! service is *built* ([`Service::start`]: handler, listeners, scoreboard;
//! no fork): an address an old service already listens on is not bound
//! again but shared (`dup(2)` of the open socket, [`Listener::share`]), and
//! a `systemd:NAME` socket is taken from the inherited ones on trial. Any
//! error drops what was built (closing only fresh sockets and duplicates)
//! and gives the inherited sockets back. Then the reload *commits*: new
//! services register their listeners (fork mode) and fork their workers,
//! and only then are the old ones retired: their listener registrations
//! removed, the sockets a new service took over closed without
//! `shutdown(2)` (the address never stops listening, its backlog is kept,
//! a reused `unix:` file is not unlinked), the others shut down, and their
//! workers told to drain (SIGTERM: finish what they serve, then exit).
//! Retired services stay in the list, in state "draining", until their
//! last child is reaped (trap 9 of the field notes: new workers first).

use std::os::fd::OwnedFd;
use std::time::Instant;

use super::services::Running;
use super::Supervisor;
use crate::config::{Config, ConfigDiff, ListenAddr, Mode, ServiceConfig};
use crate::server::{Listeners, Service};

/// An old listener a new service shares: (old service id, listener
/// index, address).
type Taken = (u64, usize, ListenAddr);

/// A service a reload built, not yet running.
struct Built {
    service: Service,
    /// The old service it replaces (a changed one).
    replaces: Option<u64>,
    /// Old listeners it shares: (old service id, listener index, address).
    took: Vec<Taken>,
}

impl Supervisor {
    /// See `reload_services` in `reload.rs` for the contract.
    pub(super) fn apply_service_changes(
        &mut self,
        old: &Config,
        new: &Config,
        diff: &ConfigDiff,
    ) -> Result<Vec<String>, Vec<String>> {
        let built = self.build_services(new, diff)?;
        let mut lines = Vec::new();
        let mut retire: Vec<(u64, &'static str)> = Vec::new();
        let mut handed: Vec<(u64, usize, u64)> = Vec::new();
        for b in built {
            let name = b.service.name().to_string();
            let id = self.services.next_id;
            self.services.next_id += 1;
            for listener in &b.service.listeners {
                if !b.took.iter().any(|(_, _, addr)| *addr == listener.addr) {
                    log::info!("service {name} listening on {}", listener.bound());
                }
            }
            handed.extend(b.took.iter().map(|(old, index, _)| (*old, *index, id)));
            lines.push(match b.replaces {
                Some(old_id) => {
                    retire.push((old_id, "replaced"));
                    self.replacing_line(old_id, old, &b.service.config)
                }
                None => format!("reload: {name} added, {}", starting(&b.service.config)),
            });
            self.services.list.push(Running {
                id,
                service: b.service,
                tokens: Vec::new(),
                retired: None,
            });
            let position = self.services.list.len() - 1;
            if let Err(e) = self.register_listeners(position) {
                log::error!("{e}");
            }
            self.spawn_service_workers(position);
        }
        for name in &diff.services.removed {
            let Some(r) = self.current_service(name) else {
                continue;
            };
            lines.push(format!(
                "reload: {name} removed, closing its listeners and draining {}",
                crate::logging::count(r.service.child_count(), "process", "processes")
            ));
            retire.push((r.id, "removed"));
        }
        // Only now, with every new worker forked, are the old ones told.
        for (id, why) in retire {
            let took: Vec<(usize, u64)> = handed
                .iter()
                .filter(|(old, _, _)| *old == id)
                .map(|(_, index, new)| (*index, *new))
                .collect();
            self.retire_service(id, why, &took);
        }
        let order: Vec<&str> = new.services.iter().map(|s| s.name.as_str()).collect();
        self.services.list.sort_by_key(|r| {
            let place = order.iter().position(|n| *n == r.service.name());
            (r.retired.is_some(), place)
        });
        Ok(lines)
    }

    /// Phase one: every added and changed service, built but not started.
    /// On error nothing is left behind and every inherited socket taken is
    /// given back.
    fn build_services(
        &mut self,
        new: &Config,
        diff: &ConfigDiff,
    ) -> Result<Vec<Built>, Vec<String>> {
        let mut built: Vec<Built> = Vec::new();
        let mut errors = Vec::new();
        let mut taken: Vec<(String, OwnedFd)> = Vec::new();
        // Changed services first: each keeps its own addresses before an
        // added one may take an address a removed service leaves.
        for name in diff.services.changed.iter().chain(&diff.services.added) {
            let Some(config) = new.services.iter().find(|s| &s.name == name) else {
                continue;
            };
            let replaces = self.current_service(name).map(|r| r.id);
            // The old service's connections go on counting against their
            // clients while they drain: the new one counts in their table.
            let per_ip = self
                .current_service(name)
                .and_then(|r| r.service.per_ip_for(config));
            let (mut reuse, took) = match self.share_listeners(config, replaces, new, &built) {
                Ok(shared) => shared,
                Err(e) => {
                    errors.push(e);
                    continue;
                }
            };
            let inherited = &mut self.systemd.inherited;
            let mut lookup = |fd_name: &str| {
                let fd = inherited.take(fd_name)?;
                let copy = fd.try_clone().ok();
                taken.push((fd_name.to_string(), fd));
                copy
            };
            match Service::start(config, &mut reuse, &mut lookup, per_ip) {
                Ok(service) => built.push(Built {
                    service,
                    replaces,
                    took,
                }),
                Err(e) => errors.push(e),
            }
        }
        if errors.is_empty() {
            // The services hold duplicates of these: the sockets live on.
            drop(taken);
            return Ok(built);
        }
        for (fd_name, fd) in taken {
            self.systemd.inherited.give_back(&fd_name, fd);
        }
        Err(errors)
    }

    /// The open sockets `config` can take over instead of binding: its own
    /// old ones when it replaces service `replaces`, else those of old
    /// services the new config removes, changes (when they stop listening
    /// there) and that no earlier service in `built` took.
    fn share_listeners(
        &self,
        config: &ServiceConfig,
        replaces: Option<u64>,
        new: &Config,
        built: &[Built],
    ) -> Result<(Listeners, Vec<Taken>), String> {
        let mut reuse = Listeners::new();
        let mut took = Vec::new();
        for addr in &config.listen {
            let candidates = self.services.list.iter().filter(|r| r.retired.is_none());
            let mut found = None;
            for r in candidates {
                let still_listens = new
                    .services
                    .iter()
                    .find(|s| s.name == r.service.name())
                    .is_some_and(|s| s == &r.service.config || s.listen.contains(addr));
                if Some(r.id) != replaces && still_listens {
                    continue;
                }
                for (index, listener) in r.service.listeners.iter().enumerate() {
                    let already = built
                        .iter()
                        .flat_map(|b| &b.took)
                        .any(|(id, i, _)| *id == r.id && *i == index);
                    if listener.addr == *addr && !already {
                        let mine = Some(r.id) == replaces;
                        if found.is_none() || mine {
                            found = Some((r.id, index, listener));
                        }
                    }
                }
            }
            if let Some((id, index, listener)) = found {
                let copy = listener.share().map_err(|e| {
                    format!(
                        "service \"{}\": cannot share the open socket of {}: {e}",
                        config.name,
                        listener.bound()
                    )
                })?;
                reuse.insert(addr.clone(), copy);
                took.push((id, index, addr.clone()));
            }
        }
        Ok((reuse, took))
    }

    /// Phase two for an old service: stop its listeners without closing
    /// the addresses a new service took over (`took`: listener index → new
    /// service id), give inherited sockets back, and drain its workers.
    fn retire_service(&mut self, id: u64, why: &'static str, took: &[(usize, u64)]) {
        let Some(position) = self.position_of(id) else {
            return;
        };
        self.deregister_listeners(position);
        let listeners = std::mem::take(&mut self.services.list[position].service.listeners);
        let mut rest = Vec::new();
        for (index, mut listener) in listeners.into_iter().enumerate() {
            if let Some((_, new_id)) = took.iter().find(|(i, _)| *i == index) {
                // The new service removes the socket file when it goes.
                let path = listener.take_path();
                if let Some(new) = self.position_of(*new_id) {
                    let new = &mut self.services.list[new].service;
                    if let Some(l) = new.listeners.iter_mut().find(|l| l.addr == listener.addr) {
                        l.own_path(path);
                    }
                }
            } else if let ListenAddr::Systemd(fd_name) = listener.addr.clone() {
                // Kept for a later reload that listens there again.
                match listener.into_fd() {
                    Ok(fd) => self.systemd.inherited.give_back(&fd_name, fd),
                    Err(e) => log::warn!("systemd:{fd_name}: cannot keep the socket: {e}"),
                }
            } else {
                rest.push(listener);
            }
        }
        let running = &mut self.services.list[position];
        running.service.listeners = rest;
        running.service.begin_drain(Instant::now());
        running.retired = Some(why);
        self.forget_if_drained(position);
    }

    /// Drops a retired service once none of its processes is left, nor
    /// anything of theirs in a `per_ip` table its successor shares.
    pub(super) fn forget_if_drained(&mut self, position: usize) {
        let Some(r) = self.services.list.get(position) else {
            return;
        };
        if let Some(why) = r.retired {
            if r.service.is_drained() {
                log::info!(
                    "reload: {} ({why}): every old process is down",
                    r.service.name()
                );
                self.services.list.remove(position);
            }
        }
    }

    fn current_service(&self, name: &str) -> Option<&Running> {
        self.services
            .list
            .iter()
            .find(|r| r.retired.is_none() && r.service.name() == name)
    }

    /// `reload: echo changed (mode), replacing 4 workers`.
    fn replacing_line(&self, old_id: u64, old: &Config, new: &ServiceConfig) -> String {
        let name = &new.name;
        let fields = old
            .services
            .iter()
            .find(|s| &s.name == name)
            .map_or_else(
                || vec!["settings"],
                |before| crate::config::service_changes(before, new),
            )
            .join(", ");
        let Some(r) = self.services.list.iter().find(|r| r.id == old_id) else {
            return format!("reload: {name} changed ({fields})");
        };
        let open = r.service.child_count();
        match r.service.config.mode {
            Mode::Fork => format!(
                "reload: {name} changed ({fields}), replacing it; the old one finishes {}",
                crate::logging::count(open, "open connection", "open connections")
            ),
            _ => format!(
                "reload: {name} changed ({fields}), replacing {}",
                crate::logging::count(open, "worker", "workers")
            ),
        }
    }
}

fn starting(config: &ServiceConfig) -> String {
    match config.mode {
        Mode::Fork => "accepting connections".into(),
        _ => format!(
            "starting {}",
            crate::logging::count(config.workers.max(1) as usize, "worker", "workers")
        ),
    }
}
