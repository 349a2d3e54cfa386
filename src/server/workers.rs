//! The pool of pre-forked workers of a service: how many there should be,
//! spawning into free scoreboard slots, replacing the dead (with a back-off
//! when they die young), recycling after `max_requests`, and Apache-style
//! spare-server upkeep between `min_spare` and `max_spare` idle workers,
//! checked once a second from the scoreboard. A handler whose datagram
//! state is one for all peers (the table's `one_datagram_worker`: chat)
//! has its `udp://` sockets read by worker #0 only. Each slot's life is a
//! [`lifecycle::Slot`]: this file turns its actions into forks, signals and
//! log lines.
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
use super::worker::{Style, Worker};
use super::Role;
use crate::config::{Mode, ServiceConfig};
use crate::handlers::Handler;
use crate::lifecycle::{self, Action, Event, Policy, State};
use crate::process::ExitKind;

/// Spare-worker upkeep interval (Apache's maintenance tick).
const TICK: Duration = Duration::from_secs(1);
/// A worker that dies sooner than this after its start failed fast; the
/// replacement waits 100 ms, doubling (with jitter) up to 5 s.
const POLICY: Policy = Policy {
    stable_after: Duration::from_secs(1),
    backoff_initial: Duration::from_millis(100),
    backoff_max: Duration::from_secs(5),
};
/// Workers started per tick at most when below `min_spare`.
const SPAWN_BURST: usize = 8;
/// `max_workers` when spares are managed and no maximum is given.
const DEFAULT_MAX_WORKERS: u32 = 256;

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
    slots: Vec<lifecycle::Slot>,
    style: Style,
    /// Only the `udp://` listeners (fork mode's datagram workers).
    udp_only: bool,
    spares: Option<(usize, usize)>,
    next_tick: Instant,
    /// Counts of workers that are gone.
    retired: Counts,
    /// Workers forked since the supervisor last took them (slot, pid), for
    /// its event stream; taken every loop turn.
    started: Vec<(usize, Pid)>,
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
        let now = Instant::now();
        let mut slots: Vec<lifecycle::Slot> = (0..capacity)
            .map(|i| lifecycle::Slot::new(&POLICY, (i as u64 + 1) * 0x9E37_79B9))
            .collect();
        for s in slots.iter_mut().take(initial) {
            s.step(Event::Want { now });
        }
        Ok(Some(WorkerPool {
            board: Scoreboard::new(capacity)?,
            slots,
            style,
            udp_only,
            spares,
            next_tick: now + TICK,
            retired: Counts::default(),
            started: Vec::new(),
        }))
    }

    pub fn board(&self) -> &Scoreboard {
        &self.board
    }

    /// Workers alive (forked and not yet reaped).
    pub fn alive(&self) -> usize {
        self.slots.iter().filter(|s| s.pid().is_some()).count()
    }

    /// Whether worker `index` is alive (forked and not yet reaped).
    pub fn is_alive(&self, index: usize) -> bool {
        self.slots.get(index).is_some_and(|s| s.pid().is_some())
    }

    /// The workers forked since the last call: (slot, pid), in order.
    pub fn take_started(&mut self) -> Vec<(usize, Pid)> {
        crate::process::take_unless_empty(&mut self.started)
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
        let one_datagram_worker = crate::config::support(config.handler).one_datagram_worker;
        for index in 0..self.slots.len() {
            if self.slots[index].step(Event::Tick { now }) != Action::Spawn {
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
                    .filter(|l| match l.is_stream() {
                        true => !self.udp_only,
                        false => index == 0 || !one_datagram_worker,
                    })
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
                    self.slots[index].step(Event::Spawned { pid, now });
                    log::info!(
                        "service \"{}\" worker #{index} started (pid {pid})",
                        config.name
                    );
                    spawned(pid, Role::Worker(index));
                    self.started.push((index, pid));
                }
                Err(e) => {
                    slot.clear();
                    if let Action::Retry { delay } =
                        self.slots[index].step(Event::SpawnFailed { now })
                    {
                        log::error!(
                            "service \"{}\": fork failed while spawning worker #{index}: {e}; retrying in {}",
                            config.name,
                            crate::logging::human_duration(delay)
                        );
                    }
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
        if life.pid() != Some(pid) {
            return;
        }
        let recycled = exit.success() && config.max_requests > 0 && served >= config.max_requests;
        match life.step(Event::Exited { now, recycled }) {
            // Stopping, or retired on purpose: an expected exit.
            action if !running || action == Action::Vacated => {
                log::info!("service \"{name}\" worker #{index} (pid {pid}) {exit}")
            }
            Action::Replace { .. } if recycled => log::info!(
                "service \"{name}\" worker #{index} (pid {pid}) recycled after {served} connections (max_requests)"
            ),
            Action::Replace { delay, young: true } => log::warn!(
                "service \"{name}\" worker #{index} (pid {pid}) {} soon after starting; replacing it in {}",
                exit.unexpected(),
                crate::logging::human_duration(delay)
            ),
            _ => log::warn!(
                "service \"{name}\" worker #{index} (pid {pid}) {}; replacing it",
                exit.unexpected()
            ),
        }
    }

    /// Sends `sig` to every live worker and marks them retiring.
    pub fn signal_all(&mut self, sig: Signal) {
        for life in &mut self.slots {
            if let Action::Signal(pid, sig) = life.step(Event::Retire { signal: sig }) {
                let _ = nix::sys::signal::kill(pid, sig);
            }
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
            .filter_map(lifecycle::Slot::deadline)
            .min();
        // Ticks also turn the workers' counters into log lines.
        let tick = Some(self.next_tick);
        respawn.into_iter().chain(tick).min()
    }

    /// Respawns due workers and keeps the idle count within the spares.
    pub fn tick(&mut self, spawn: &Spawn<'_>, now: Instant, spawned: &mut dyn FnMut(Pid, Role)) {
        if now >= self.next_tick {
            self.next_tick = now + TICK;
            self.keep_spares(&spawn.config.name, now);
        }
        self.fill(spawn, now, spawned);
    }

    /// Apache's rule: fewer than `min_spare` idle → start more (a burst, up
    /// to the slots); more than `max_spare` idle → retire one idle worker.
    fn keep_spares(&mut self, name: &str, now: Instant) {
        let Some((min, max)) = self.spares else {
            return;
        };
        let idle = self.board.idle();
        // Workers on their way count as idle-to-be: slots waiting to fork
        // (or waiting out a respawn back-off) and forked ones still
        // starting. Without them every tick would ask for more, overshoot,
        // and a crash-looping handler would spread to every slot.
        let starting = |i: usize| {
            self.board
                .slot(i)
                .is_some_and(|s| s.state() == SlotState::Starting)
        };
        let coming = (0..self.slots.len())
            .filter(|&i| match self.slots[i].state {
                State::Pending { .. } => true,
                State::Running { .. } => starting(i),
                State::Vacant | State::Retiring { .. } => false,
            })
            .count();
        if idle + coming < min {
            let want = (min - idle - coming).min(SPAWN_BURST);
            for life in self
                .slots
                .iter_mut()
                .filter(|l| l.state == State::Vacant)
                .take(want)
            {
                life.step(Event::Want { now });
            }
        } else if idle > max {
            let victim = (0..self.slots.len()).rev().find(|&i| {
                matches!(self.slots[i].state, State::Running { .. })
                    && self
                        .board
                        .slot(i)
                        .is_some_and(|s| s.state() == SlotState::Idle)
            });
            if let Some(i) = victim {
                let retire = Event::Retire {
                    signal: Signal::SIGTERM,
                };
                if let Action::Signal(pid, sig) = self.slots[i].step(retire) {
                    log::info!("service \"{name}\": {idle} idle workers (max_spare {max}); retiring worker #{i} (pid {pid})");
                    let _ = nix::sys::signal::kill(pid, sig);
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
                let pid = life.pid()?;
                let slot = self.board.slot(i)?;
                Some(json!({
                    "index": i,
                    "state": slot.state().as_str(),
                    "pid": pid.as_raw(),
                    "served": slot.served(),
                    "connections": slot.connections(),
                    "members": slot.peers(),
                    "started": slot.started(),
                    "role": if self.udp_only { "datagram" } else { "worker" },
                }))
            })
            .collect()
    }
}
