//! The prefork/event scoreboard: one slot per worker in anonymous shared
//! memory, written by the worker and read by the supervisor (Apache's
//! scoreboard).
//!
//! The mapping is a [`Mapping`] made by the supervisor before any worker
//! forks. The layout is `#[repr(C)]`: a header with a
//! magic and a version, then `slots` fixed-size [`Slot`]s whose fields are
//! atomics (workers and supervisor never lock). A worker writes only its own
//! slot; the supervisor resets a slot when it reaps the slot's worker, so a
//! SIGKILLed worker's slot recovers. This module never forks and never signals.

use std::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, Ordering::Relaxed};

use super::shm::{Mapping, Shared};

const MAGIC: u32 = 0x666b_7364; // "fksd"
const VERSION: u32 = 5;

#[repr(C)]
struct Header {
    magic: AtomicU32,
    version: AtomicU32,
    slots: AtomicU32,
    slot_size: AtomicU32,
}

// SAFETY: every field of Header and Slot is an atomic.
unsafe impl Shared for Header {}
// SAFETY: as above.
unsafe impl Shared for Slot {}

/// What a worker is doing, as stored in its slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotState {
    /// No worker.
    Empty = 0,
    /// Forked, not yet waiting for connections.
    Starting = 1,
    /// Waiting for a connection.
    Idle = 2,
    /// Serving at least one connection.
    Busy = 3,
    /// Told to stop: finishing its connections, accepting no more.
    Draining = 4,
}

impl SlotState {
    fn from_u32(v: u32) -> SlotState {
        match v {
            1 => SlotState::Starting,
            2 => SlotState::Idle,
            3 => SlotState::Busy,
            4 => SlotState::Draining,
            _ => SlotState::Empty,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SlotState::Empty => "empty",
            SlotState::Starting => "starting",
            SlotState::Idle => "idle",
            SlotState::Busy => "busy",
            SlotState::Draining => "draining",
        }
    }
}

/// One worker's record. 64 bytes, naturally aligned.
#[repr(C)]
#[derive(Debug)]
pub struct Slot {
    state: AtomicU32,
    pid: AtomicI32,
    /// Connections accepted since the worker started.
    served: AtomicU64,
    /// Unix time (seconds) the worker started.
    started: AtomicU64,
    /// Connections open right now (event mode: many; prefork: 0 or 1).
    connections: AtomicU32,
    /// Connections refused (per_ip) since the worker started.
    refused: AtomicU32,
    /// Connections accepted and closed at once because the worker was out
    /// of file descriptors (the reserve-descriptor shed).
    shed: AtomicU32,
    /// Connections that ended in an error / a timeout.
    errors: AtomicU32,
    timeouts: AtomicU32,
    /// Connections this worker holds in the service's `per_ip` table:
    /// what the supervisor must drop for it if it dies (0: nothing to do).
    claims: AtomicU32,
    /// Peers its datagram states keep (a chat room's members).
    peers: AtomicU32,
    /// Datagrams its datagram states ignored (malformed, or refused).
    ignored: AtomicU64,
}

/// A slot's counters, folded into the service's totals when its worker goes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub served: u64,
    /// Refused by `per_ip`.
    pub refused: u64,
    /// Closed at once for want of a file descriptor.
    pub shed: u64,
    pub errors: u64,
    pub timeouts: u64,
    /// Datagrams ignored.
    pub ignored: u64,
}

impl std::ops::AddAssign for Counts {
    fn add_assign(&mut self, o: Counts) {
        self.served += o.served;
        self.refused += o.refused;
        self.shed += o.shed;
        self.errors += o.errors;
        self.timeouts += o.timeouts;
        self.ignored += o.ignored;
    }
}

impl Slot {
    pub fn state(&self) -> SlotState {
        SlotState::from_u32(self.state.load(Relaxed))
    }
    pub fn set_state(&self, s: SlotState) {
        self.state.store(s as u32, Relaxed);
    }
    pub fn pid(&self) -> i32 {
        self.pid.load(Relaxed)
    }
    pub fn served(&self) -> u64 {
        self.served.load(Relaxed)
    }
    pub fn add_served(&self) -> u64 {
        self.served.fetch_add(1, Relaxed) + 1
    }
    pub fn started(&self) -> u64 {
        self.started.load(Relaxed)
    }
    pub fn connections(&self) -> u32 {
        self.connections.load(Relaxed)
    }
    pub fn set_connections(&self, n: u32) {
        self.connections.store(n, Relaxed);
    }

    pub fn add_refused(&self) {
        self.refused.fetch_add(1, Relaxed);
    }

    pub fn add_shed(&self) {
        self.shed.fetch_add(1, Relaxed);
    }

    /// Counts how a connection ended.
    pub fn add_outcome(&self, outcome: crate::handlers::Outcome) {
        match outcome {
            crate::handlers::Outcome::Done => {}
            crate::handlers::Outcome::Failed => {
                self.errors.fetch_add(1, Relaxed);
            }
            crate::handlers::Outcome::TimedOut => {
                self.timeouts.fetch_add(1, Relaxed);
            }
        }
    }

    pub fn counts(&self) -> Counts {
        Counts {
            served: self.served.load(Relaxed),
            refused: self.refused.load(Relaxed).into(),
            shed: self.shed.load(Relaxed).into(),
            errors: self.errors.load(Relaxed).into(),
            timeouts: self.timeouts.load(Relaxed).into(),
            ignored: self.ignored.load(Relaxed),
        }
    }

    /// The worker's datagram states: the peers they keep now and the
    /// datagrams they ignored since it started.
    pub fn set_datagrams(&self, peers: usize, ignored: u64) {
        self.peers
            .store(u32::try_from(peers).unwrap_or(u32::MAX), Relaxed);
        self.ignored.store(ignored, Relaxed);
    }

    pub fn peers(&self) -> u32 {
        self.peers.load(Relaxed)
    }

    /// A new worker takes the slot (called by the supervisor at spawn).
    pub fn claim(&self, pid: i32) {
        self.reset_counts();
        self.connections.store(0, Relaxed);
        self.claims.store(0, Relaxed);
        self.peers.store(0, Relaxed);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.started.store(now, Relaxed);
        self.pid.store(pid, Relaxed);
        self.set_state(SlotState::Starting);
    }

    /// The worker recorded one more connection in `per_ip`.
    pub fn add_claim(&self) {
        self.claims.fetch_add(1, Relaxed);
    }

    /// The worker released one from `per_ip`.
    pub fn drop_claim(&self) {
        self.claims.fetch_sub(1, Relaxed);
    }

    /// Connections the worker still holds in `per_ip`.
    pub fn claims(&self) -> u32 {
        self.claims.load(Relaxed)
    }

    /// The worker's pid, once the fork returned it.
    pub fn set_pid(&self, pid: i32) {
        self.pid.store(pid, Relaxed);
    }

    /// The slot's worker is gone (reaped). Its counters are zeroed: the
    /// caller has folded them into the service's totals, and an empty slot
    /// waiting out a respawn back-off must not count them a second time.
    pub fn clear(&self) {
        self.pid.store(0, Relaxed);
        self.connections.store(0, Relaxed);
        self.peers.store(0, Relaxed);
        self.reset_counts();
        self.set_state(SlotState::Empty);
    }

    fn reset_counts(&self) {
        self.served.store(0, Relaxed);
        self.refused.store(0, Relaxed);
        self.shed.store(0, Relaxed);
        self.errors.store(0, Relaxed);
        self.timeouts.store(0, Relaxed);
        self.ignored.store(0, Relaxed);
    }
}

/// The shared mapping: header plus slots.
#[derive(Debug)]
pub struct Scoreboard {
    map: Mapping,
    slots: usize,
}

impl Scoreboard {
    /// Maps a zeroed scoreboard of `slots` slots.
    pub fn new(slots: usize) -> std::io::Result<Scoreboard> {
        let slots = slots.max(1);
        let map = Mapping::new::<Header, Slot>(slots)?;
        let board = Scoreboard { map, slots };
        let header = board.header();
        header.magic.store(MAGIC, Relaxed);
        header.version.store(VERSION, Relaxed);
        header.slots.store(slots as u32, Relaxed);
        header
            .slot_size
            .store(std::mem::size_of::<Slot>() as u32, Relaxed);
        Ok(board)
    }

    pub fn len(&self) -> usize {
        self.slots
    }

    pub fn is_empty(&self) -> bool {
        self.slots == 0
    }

    /// Slot `i`, or `None` past the end.
    pub fn slot(&self, i: usize) -> Option<&Slot> {
        self.map.parts::<Header, Slot>(self.slots).1.get(i)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Slot> {
        self.map.parts::<Header, Slot>(self.slots).1.iter()
    }

    /// Counters of every slot, summed.
    pub fn counts(&self) -> Counts {
        let mut total = Counts::default();
        for s in self.iter() {
            total += s.counts();
        }
        total
    }

    /// Open connections over every worker.
    pub fn live_connections(&self) -> u64 {
        self.iter().map(|s| u64::from(s.connections())).sum()
    }

    /// Peers kept by the datagram states of every worker.
    pub fn peers(&self) -> u64 {
        self.iter().map(|s| u64::from(s.peers())).sum()
    }

    /// Workers waiting for a connection.
    pub fn idle(&self) -> usize {
        self.iter().filter(|s| s.state() == SlotState::Idle).count()
    }

    fn header(&self) -> &Header {
        self.map.parts::<Header, Slot>(self.slots).0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_shared_with_a_forked_child_and_recover_after_clear() {
        let board = Scoreboard::new(4).unwrap();
        assert!(board.slot(4).is_none());
        let slot = board.slot(2).unwrap();
        slot.claim(1234);
        assert_eq!(slot.state(), SlotState::Starting);
        let pid = crate::process::fork_worker(|| {
            let s = board.slot(2).unwrap();
            s.set_state(SlotState::Busy);
            s.add_served();
            s.add_served();
            0
        })
        .unwrap();
        nix::sys::wait::waitpid(pid, None).unwrap();
        assert_eq!(slot.state(), SlotState::Busy);
        assert_eq!(slot.served(), 2);
        slot.clear();
        assert_eq!(slot.state(), SlotState::Empty);
        slot.claim(99);
        assert_eq!((slot.pid(), slot.served()), (99, 0));
        assert_eq!(board.header().version.load(Relaxed), VERSION);
    }
}
