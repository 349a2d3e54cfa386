//! The pool of pre-forked workers of a service: how many there should be,
//! spawning into free scoreboard slots, replacing the dead (with a back-off
//! when they die young), recycling after `max_requests`, and Apache-style
//! spare-server upkeep between `min_spare` and `max_spare` idle workers,
//! checked once a second from the scoreboard.
//!
//! Runs in the supervisor; the workers themselves run `worker.rs`. It never
//! reaps: the supervisor reports exits through [`WorkerPool::exited`].

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::unistd::Pid;
use serde_json::{json, Value};

use super::listener::Listener;
use super::per_ip::PerIp;
use super::scoreboard::{Counts, Scoreboard, SlotState};
use super::service::Role;
use super::worker::{Style, Worker};
use crate::config::{Mode, ServiceConfig};
use crate::handlers::Handler;
use crate::process::ExitKind;

/// Spare-worker upkeep interval (Apache's maintenance tick).
const TICK: Duration = Duration::from_secs(1);
/// A worker that dies sooner than this after its start counts as failing.
const STABLE_AFTER: Duration = Duration::from_secs(1);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Workers started per tick at most when below `min_spare`.
const SPAWN_BURST: usize = 8;
/// `max_workers` when spares are managed and no maximum is given.
const DEFAULT_MAX_WORKERS: u32 = 256;

/// The supervisor's view of one slot.
#[derive(Debug, Default, Clone, Copy)]
struct SlotLife {
    pid: Option<Pid>,
    started: Option<Instant>,
    /// Told to exit (spare trimming or stop): do not replace.
    retiring: bool,
    /// Replace at this time (back-off after a fast failure).
    respawn_at: Option<Instant>,
    /// Should hold a worker.
    wanted: bool,
}

/// What a worker is forked with, borrowed from its service.
pub struct Spawn<'a> {
    pub config: &'a ServiceConfig,
    pub handler: &'a dyn Handler,
    pub listeners: &'a [Listener],
    pub per_ip: &'a PerIp,
    /// forkd's pid, for the workers' PDEATHSIG re-check.
    pub parent: Pid,
}

/// The pre-forked workers of one service.
#[derive(Debug)]
pub struct WorkerPool {
    board: Scoreboard,
    slots: Vec<SlotLife>,
    style: Style,
    /// Only the `udp://` listeners (fork mode's datagram workers).
    udp_only: bool,
    spares: Option<(usize, usize)>,
    next_tick: Instant,
    backoff: Duration,
    /// Counts of workers that are gone.
    retired: Counts,
}

impl WorkerPool {
    /// The pool a service needs, if any: prefork and event always; fork
    /// mode only for its `udp://` listeners.
    pub fn for_service(
        config: &ServiceConfig,
        listeners: &[Listener],
    ) -> std::io::Result<Option<WorkerPool>> {
        let has_udp = listeners.iter().any(|l| !l.is_stream());
        let (style, udp_only) = match config.mode {
            Mode::Fork if has_udp => (Style::OneAtATime, true),
            Mode::Fork => return Ok(None),
            Mode::Prefork => (Style::OneAtATime, false),
            Mode::Event => (Style::Multiplexed, false),
        };
        let spares = match (config.mode, config.min_spare, config.max_spare) {
            (Mode::Prefork, Some(min), max) => Some((
                min as usize,
                max.unwrap_or(min.max(1).saturating_mul(2)) as usize,
            )),
            (Mode::Prefork, None, Some(max)) => Some((1.min(max as usize), max as usize)),
            _ => None,
        };
        let workers = config.workers.max(1) as usize;
        let capacity = match spares {
            Some((min, max)) => (config.max_workers.unwrap_or(DEFAULT_MAX_WORKERS) as usize)
                .max(workers)
                .max(min)
                .max(max.min(DEFAULT_MAX_WORKERS as usize)),
            None => workers,
        };
        let initial = match spares {
            Some((min, _)) => workers.max(min).min(capacity),
            None => workers,
        };
        let mut slots = vec![SlotLife::default(); capacity];
        for s in slots.iter_mut().take(initial) {
            s.wanted = true;
        }
        Ok(Some(WorkerPool {
            board: Scoreboard::new(capacity)?,
            slots,
            style,
            udp_only,
            spares,
            next_tick: Instant::now() + TICK,
            backoff: BACKOFF_MIN,
            retired: Counts::default(),
        }))
    }

    pub fn board(&self) -> &Scoreboard {
        &self.board
    }

    /// Workers alive (forked and not yet reaped).
    pub fn alive(&self) -> usize {
        self.slots.iter().filter(|s| s.pid.is_some()).count()
    }

    /// Counts of all workers, gone and alive.
    pub fn totals(&self) -> Counts {
        let mut total = self.retired;
        total += self.board.counts();
        total
    }

    /// Forks a worker into every wanted, empty slot whose back-off is over.
    pub fn fill(&mut self, spawn: &Spawn<'_>, now: Instant, spawned: &mut dyn FnMut(Pid, Role)) {
        let Spawn {
            config,
            handler,
            listeners,
            per_ip,
            parent,
        } = *spawn;
        for index in 0..self.slots.len() {
            let life = self.slots[index];
            if !life.wanted || life.pid.is_some() || life.respawn_at.is_some_and(|t| t > now) {
                continue;
            }
            let Some(slot) = self.board.slot(index) else {
                continue;
            };
            // Claimed before the fork: the child marks itself idle, and that
            // must not be overwritten by the parent afterwards.
            slot.claim(0);
            let worker = Worker {
                config,
                handler,
                listeners: listeners
                    .iter()
                    .filter(|l| !self.udp_only || !l.is_stream())
                    .collect(),
                board: &self.board,
                per_ip,
                index,
                parent,
                style: self.style,
            };
            match crate::process::fork_worker(move || worker.run()) {
                Ok(pid) => {
                    slot.set_pid(pid.as_raw());
                    self.slots[index] = SlotLife {
                        pid: Some(pid),
                        started: Some(now),
                        retiring: false,
                        respawn_at: None,
                        wanted: true,
                    };
                    log::info!(
                        "service \"{}\" worker #{index} started (pid {pid})",
                        config.name
                    );
                    spawned(pid, Role::Worker(index));
                }
                Err(e) => {
                    slot.clear();
                    log::error!(
                        "service \"{}\": fork failed while spawning worker #{index}: {e}; retrying in {}",
                        config.name,
                        crate::logging::human_duration(self.backoff)
                    );
                    self.slots[index].respawn_at = Some(now + self.backoff);
                    self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }

    /// Worker `index` was reaped. Its slot's counters are kept in the
    /// totals and the slot is cleared; it is refilled unless it retired.
    pub fn exited(
        &mut self,
        config: &ServiceConfig,
        index: usize,
        pid: Pid,
        exit: ExitKind,
        running: bool,
        now: Instant,
    ) {
        let name = &config.name;
        let Some(slot) = self.board.slot(index) else {
            return;
        };
        let served = slot.served();
        self.retired += slot.counts();
        slot.clear();
        let Some(life) = self.slots.get_mut(index) else {
            return;
        };
        life.pid = None;
        let expected = life.retiring || !running;
        if expected {
            life.wanted = running && !life.retiring;
            log::info!("service \"{name}\" worker #{index} (pid {pid}) {exit}");
            return;
        }
        let recycled = exit.success() && config.max_requests > 0 && served >= config.max_requests;
        if recycled {
            log::info!("service \"{name}\" worker #{index} (pid {pid}) recycled after {served} connections (max_requests)");
            life.respawn_at = None;
            return;
        }
        let young = life
            .started
            .is_some_and(|t| now.duration_since(t) < STABLE_AFTER);
        if young {
            life.respawn_at = Some(now + self.backoff);
            log::warn!(
                "service \"{name}\" worker #{index} (pid {pid}) {} soon after starting; replacing it in {}",
                exit.unexpected(),
                crate::logging::human_duration(self.backoff)
            );
            self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
        } else {
            self.backoff = BACKOFF_MIN;
            life.respawn_at = None;
            log::warn!(
                "service \"{name}\" worker #{index} (pid {pid}) {}; replacing it",
                exit.unexpected()
            );
        }
    }

    /// Sends `sig` to every live worker and marks them retiring.
    pub fn signal_all(&mut self, sig: Signal) {
        for life in &mut self.slots {
            if let Some(pid) = life.pid {
                life.retiring = true;
                let _ = nix::sys::signal::kill(pid, sig);
            }
            life.wanted = false;
        }
    }

    /// When the pool next needs [`WorkerPool::tick`].
    pub fn deadline(&self, running: bool) -> Option<Instant> {
        if !running {
            return None;
        }
        let respawn = self
            .slots
            .iter()
            .filter(|s| s.wanted && s.pid.is_none())
            .filter_map(|s| s.respawn_at)
            .min();
        // Ticks also turn the workers' counters into log lines.
        let tick = Some(self.next_tick);
        respawn.into_iter().chain(tick).min()
    }

    /// Respawns due workers and keeps the idle count within the spares.
    pub fn tick(&mut self, spawn: &Spawn<'_>, now: Instant, spawned: &mut dyn FnMut(Pid, Role)) {
        if now >= self.next_tick {
            self.next_tick = now + TICK;
            self.keep_spares(&spawn.config.name);
        }
        self.fill(spawn, now, spawned);
    }

    /// Apache's rule: fewer than `min_spare` idle → start more (a burst, up
    /// to the slots); more than `max_spare` idle → retire one idle worker.
    fn keep_spares(&mut self, name: &str) {
        let Some((min, max)) = self.spares else {
            return;
        };
        let idle = self.board.idle();
        // Workers on their way count as idle-to-be: wanted slots not yet
        // forked (or waiting out a respawn back-off) and forked ones still
        // starting. Without them every tick would ask for more, overshoot,
        // and a crash-looping handler would spread to every slot.
        let coming = self
            .slots
            .iter()
            .enumerate()
            .filter(|(i, life)| {
                life.wanted
                    && !life.retiring
                    && (life.pid.is_none()
                        || self
                            .board
                            .slot(*i)
                            .is_some_and(|s| s.state() == SlotState::Starting))
            })
            .count();
        if idle + coming < min {
            let mut want = (min - idle - coming).min(SPAWN_BURST);
            for life in self.slots.iter_mut() {
                if want == 0 {
                    break;
                }
                if !life.wanted && life.pid.is_none() {
                    life.wanted = true;
                    life.respawn_at = None;
                    want -= 1;
                }
            }
        } else if idle > max {
            let victim = (0..self.slots.len()).rev().find(|&i| {
                let life = &self.slots[i];
                life.pid.is_some()
                    && !life.retiring
                    && self
                        .board
                        .slot(i)
                        .is_some_and(|s| s.state() == SlotState::Idle)
            });
            if let Some(i) = victim {
                let life = &mut self.slots[i];
                life.retiring = true;
                life.wanted = false;
                if let Some(pid) = life.pid {
                    log::info!("service \"{name}\": {idle} idle workers (max_spare {max}); retiring worker #{i} (pid {pid})");
                    let _ = nix::sys::signal::kill(pid, Signal::SIGTERM);
                }
            }
        }
    }

    /// One object per live worker for status.
    pub fn status(&self) -> Vec<Value> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, life)| {
                let pid = life.pid?;
                let slot = self.board.slot(i)?;
                Some(json!({
                    "index": i,
                    "state": slot.state().as_str(),
                    "pid": pid.as_raw(),
                    "served": slot.served(),
                    "connections": slot.connections(),
                    "started": slot.started(),
                    "role": if self.udp_only { "datagram" } else { "worker" },
                }))
            })
            .collect()
    }
}
