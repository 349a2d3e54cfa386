//! `per_ip`: the connections each client address has open, counted once
//! for the whole service, whichever process accepted them (the supervisor
//! in fork mode, any of the workers in prefork and event mode).
//!
//! The table lives in a [`Mapping`] shared with the workers: one entry per
//! admitted connection (client address, local address, both ports, the pid
//! of the process that admitted it, and whether the client has closed it),
//! open addressing keyed by the client address, linear probing with
//! backward-shift deletion so it never fills with tombstones. One lock word
//! (holding the holder's pid) makes check-and-claim one atomic step across
//! processes.
//!
//! The table over-counts for a moment: a connection the client has closed
//! stays recorded until its process has noticed and let go. So when an
//! address looks full, the kernel decides ([`sockdiag::still_open`]): each
//! of that client's connections is looked up by its 4-tuple, and one the
//! client has closed (the server's end in `CLOSE_WAIT` or later) is marked
//! closed. A client below its limit is never refused; the (N+1)th
//! connection it holds open is. Unix peers are never limited. A client that
//! half-closes (`shutdown(SHUT_WR)`) while it waits for a reply counts as
//! closed too: it can send nothing more.
//!
//! Who takes the lock: in fork mode only the supervisor (its children never
//! touch the table), so the loop never waits; in prefork and event mode the
//! workers, and the supervisor only through [`PerIp::forget_owner`], which
//! never waits. A worker killed while it held the lock is reaped by the
//! supervisor, which takes the lock over from the dead pid and frees it. A
//! worker killed in the middle of a deletion can leave one entry twice: it
//! over-counts, and the kernel check corrects it. This module never forks
//! and never logs.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::rc::Rc;
use std::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, Ordering};

use nix::unistd::Pid;

use super::shm::{Mapping, Shared};
use super::sockdiag::{self, Tuple};
use crate::handlers::Peer;
use crate::open_addressing::{self, Probed};

const MAGIC: u32 = 0x666b_6970; // "fkip"
const VERSION: u32 = 1;
/// Most entries a table gets (48 MiB of address space; a page is touched
/// only where entries land, and by the scan after a worker crash).
const MAX_CAPACITY: usize = 1 << 20;

#[repr(C)]
struct Header {
    magic: AtomicU32,
    version: AtomicU32,
    capacity: AtomicU32,
    /// The pid holding the lock, 0 when free.
    lock: AtomicI32,
}

/// One open connection. Empty while `owner` is 0.
#[repr(C)]
struct Entry {
    /// The client's address (the key), as 128 bits (IPv4 v4-mapped).
    remote_high: AtomicU64,
    remote_low: AtomicU64,
    /// The address it arrived at.
    local_high: AtomicU64,
    local_low: AtomicU64,
    /// Client port << 16 | local port.
    ports: AtomicU32,
    /// The pid that admitted it and will release it.
    owner: AtomicI32,
    /// 1 once the kernel said the client has closed it.
    closed: AtomicU32,
    _reserved: AtomicU32,
}

// SAFETY: every field of Header and Entry is an atomic.
unsafe impl Shared for Header {}
// SAFETY: as above.
unsafe impl Shared for Entry {}

/// A connection as the table stores it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Key {
    remote: u128,
    local: u128,
    ports: u32,
}

impl Key {
    fn of(remote: SocketAddr, local: SocketAddr) -> Key {
        Key {
            remote: bits(remote.ip()),
            local: bits(local.ip()),
            ports: u32::from(remote.port()) << 16 | u32::from(local.port()),
        }
    }

    fn tuple(&self) -> Tuple {
        let ip = |b: u128| {
            let v6 = Ipv6Addr::from(b);
            v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
        };
        Tuple {
            local: SocketAddr::new(ip(self.local), self.ports as u16),
            remote: SocketAddr::new(ip(self.remote), (self.ports >> 16) as u16),
        }
    }
}

/// An address as 128 bits: IPv4 as its v4-mapped IPv6 form, so a v4
/// client counts the same on a dual-stack listener.
fn bits(ip: IpAddr) -> u128 {
    u128::from(match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    })
}

/// The home slot of a client address (every connection of one client
/// lies in the probe run from there).
fn hash(remote: u128) -> usize {
    let mixed = (remote as u64) ^ ((remote >> 64) as u64).rotate_left(29);
    (mixed.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 24) as usize
}

impl Entry {
    fn owner(&self) -> i32 {
        self.owner.load(Ordering::Relaxed)
    }
    fn remote(&self) -> u128 {
        (u128::from(self.remote_high.load(Ordering::Relaxed)) << 64)
            | u128::from(self.remote_low.load(Ordering::Relaxed))
    }
    fn key(&self) -> Key {
        Key {
            remote: self.remote(),
            local: (u128::from(self.local_high.load(Ordering::Relaxed)) << 64)
                | u128::from(self.local_low.load(Ordering::Relaxed)),
            ports: self.ports.load(Ordering::Relaxed),
        }
    }
    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed) != 0
    }
    fn set(&self, key: Key, owner: i32, closed: bool) {
        self.remote_high
            .store((key.remote >> 64) as u64, Ordering::Relaxed);
        self.remote_low.store(key.remote as u64, Ordering::Relaxed);
        self.local_high
            .store((key.local >> 64) as u64, Ordering::Relaxed);
        self.local_low.store(key.local as u64, Ordering::Relaxed);
        self.ports.store(key.ports, Ordering::Relaxed);
        self.closed.store(u32::from(closed), Ordering::Relaxed);
        self.owner.store(owner, Ordering::Relaxed);
    }
    fn clear(&self) {
        self.set(Key::of(unspecified(), unspecified()), 0, false);
    }
}

fn unspecified() -> SocketAddr {
    SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0)
}

/// Table slots for a service of `max_connections`: four times as many, so
/// probe runs stay short even while a reload's old and new service both
/// hold connections.
fn capacity_for(max_connections: u32) -> usize {
    (max_connections as usize)
        .saturating_mul(4)
        .clamp(64, MAX_CAPACITY)
        .next_power_of_two()
}

/// A service's `per_ip` limit and its shared table of open connections.
#[derive(Debug)]
pub struct PerIp {
    limit: u32,
    /// None when there is no limit: nothing to count. Shared with the
    /// service a reload replaced ([`PerIp::shared_with`]).
    table: Option<Rc<Mapping>>,
    capacity: usize,
}

/// What the scan of a client's probe run found.
struct Probe {
    /// Its connections not known to be closed by the client.
    open: u32,
    /// The first empty slot after the run (None: the table is full).
    free: Option<usize>,
}

impl PerIp {
    /// A limit of `limit` open connections per client address (0: none)
    /// for a service of at most `max_connections` connections.
    pub fn new(limit: u32, max_connections: u32) -> std::io::Result<PerIp> {
        let capacity = capacity_for(max_connections);
        let table = if limit == 0 {
            None
        } else {
            let map = Mapping::new::<Header, Entry>(capacity)?;
            let (header, _) = map.parts::<Header, Entry>(capacity);
            header.magic.store(MAGIC, Ordering::Relaxed);
            header.version.store(VERSION, Ordering::Relaxed);
            header.capacity.store(capacity as u32, Ordering::Relaxed);
            Some(Rc::new(map))
        };
        Ok(PerIp {
            limit,
            table,
            capacity,
        })
    }

    /// This table under `limit`, for a service that replaces this one,
    /// when it is large enough for `max_connections` and both limit.
    pub fn shared_with(&self, limit: u32, max_connections: u32) -> Option<PerIp> {
        let fits = capacity_for(max_connections) <= self.capacity;
        (fits && limit > 0 && self.table.is_some()).then(|| PerIp {
            limit,
            table: self.table.clone(),
            capacity: self.capacity,
        })
    }

    /// Records a new connection for process `owner` (the caller, which
    /// will release it), or returns false
    /// (refuse it) when its client already holds `per_ip` others open.
    pub fn admit(&self, peer: &Peer, owner: Pid) -> bool {
        let (Peer::Tcp { remote, local }, Some((header, entries))) = (peer, self.parts()) else {
            return true;
        };
        let key = Key::of(*remote, *local);
        let _lock = Lock::take(header, owner.as_raw());
        let mut probe = self.probe(entries, key);
        if probe.open >= self.limit {
            self.ask_kernel(entries, key.remote);
            probe = self.probe(entries, key);
            if probe.open >= self.limit {
                return false;
            }
        }
        match probe.free {
            Some(i) => {
                entries[i].set(key, owner.as_raw(), false);
                true
            }
            // Full: more connections than four times max_connections.
            None => false,
        }
    }

    /// A connection that `owner` admitted has ended.
    pub fn release(&self, peer: &Peer, owner: Pid) {
        let (Peer::Tcp { remote, local }, Some((header, entries))) = (peer, self.parts()) else {
            return;
        };
        let key = Key::of(*remote, *local);
        let _lock = Lock::take(header, owner.as_raw());
        // Two entries may share the 4-tuple (see `probe`): the one already
        // known closed goes first, so the open one keeps counting.
        let mut found = None;
        for i in self.run(entries, key.remote) {
            if entries[i].owner() == owner.as_raw() && entries[i].key() == key {
                found = Some(i);
                if entries[i].is_closed() {
                    break;
                }
            }
        }
        if let Some(i) = found {
            self.remove(entries, i);
        }
    }

    /// Drops whatever `owner` (a reaped worker) had admitted. Never waits
    /// for the lock: returns false when another process holds it (call
    /// again later).
    pub fn forget_owner(&self, owner: Pid, me: Pid) -> bool {
        let Some((header, entries)) = self.parts() else {
            return true;
        };
        let Some(_lock) = Lock::try_take(header, me.as_raw(), owner.as_raw()) else {
            return false;
        };
        let mut i = 0;
        while i < entries.len() {
            if entries[i].owner() == owner.as_raw() {
                // Do not advance: a shifted entry may now sit at `i`.
                self.remove(entries, i);
            } else {
                i += 1;
            }
        }
        true
    }

    fn parts(&self) -> Option<(&Header, &[Entry])> {
        let map = self.table.as_ref()?;
        Some(map.parts::<Header, Entry>(self.capacity))
    }

    /// The occupied slots of the probe run that starts at `remote`'s home.
    fn run<'e>(&self, entries: &'e [Entry], remote: u128) -> impl Iterator<Item = usize> + 'e {
        let mask = self.capacity - 1;
        let home = hash(remote) & mask;
        (0..self.capacity)
            .map(move |step| (home + step) & mask)
            .take_while(move |&i| entries[i].owner() != 0)
    }

    /// Counts `new`'s client's open connections. An entry with `new`'s own
    /// 4-tuple is a connection that ended with its process not yet done
    /// (Linux reuses a loopback client's port while the old socket lingers,
    /// tcp_tw_reuse = 2): a 4-tuple names one live socket, so that one is
    /// closed.
    fn probe(&self, entries: &[Entry], new: Key) -> Probe {
        let mut open = 0u32;
        let mut last = None;
        for i in self.run(entries, new.remote) {
            last = Some(i);
            let e = &entries[i];
            if e.remote() != new.remote || e.is_closed() {
                continue;
            }
            if e.key() == new {
                e.closed.store(1, Ordering::Relaxed);
            } else {
                open = open.saturating_add(1);
            }
        }
        let mask = self.capacity - 1;
        let next = last.map_or(hash(new.remote) & mask, |i| (i + 1) & mask);
        let free = (entries[next].owner() == 0).then_some(next);
        Probe { open, free }
    }

    /// Marks the client's connections that the kernel says it has closed.
    /// An error marks nothing: the counts stay, and the limit holds.
    fn ask_kernel(&self, entries: &[Entry], remote: u128) {
        let candidates: Vec<usize> = self
            .run(entries, remote)
            .filter(|&i| entries[i].remote() == remote && !entries[i].is_closed())
            .collect();
        let tuples: Vec<Tuple> = candidates
            .iter()
            .map(|&i| entries[i].key().tuple())
            .collect();
        let Ok(open) = sockdiag::still_open(&tuples) else {
            return;
        };
        for (i, open) in candidates.into_iter().zip(open) {
            if !open {
                entries[i].closed.store(1, Ordering::Relaxed);
            }
        }
    }

    /// Empties slot `hole` without a tombstone ([`open_addressing`]).
    fn remove(&self, entries: &[Entry], hole: usize) {
        let mut table = Slots {
            entries,
            mask: self.capacity - 1,
        };
        let vacant = open_addressing::remove_at(&mut table, hole);
        entries[vacant].clear();
    }

    /// Connections recorded for `ip`, closed or not.
    #[cfg(test)]
    fn counted(&self, ip: IpAddr) -> usize {
        let (_, entries) = self.parts().expect("a limit");
        let remote = bits(ip);
        self.run(entries, remote)
            .filter(|&i| entries[i].remote() == remote)
            .count()
    }
}

/// The entries as a linear-probing table (writes go through the atomics,
/// under the table's lock).
struct Slots<'e> {
    entries: &'e [Entry],
    mask: usize,
}

impl Probed for Slots<'_> {
    fn capacity(&self) -> usize {
        self.entries.len()
    }

    fn home_of(&self, index: usize) -> Option<usize> {
        let e = &self.entries[index];
        (e.owner() != 0).then(|| hash(e.remote()) & self.mask)
    }

    fn shift(&mut self, from: usize, to: usize) {
        let e = &self.entries[from];
        self.entries[to].set(e.key(), e.owner(), e.is_closed());
    }
}

/// The table's lock, held until dropped.
struct Lock<'a> {
    word: &'a AtomicI32,
}

impl<'a> Lock<'a> {
    /// Spins (yielding the CPU) until the lock is ours. A dead holder's
    /// lock is freed by the supervisor when it reaps it, never taken over
    /// here: a pid can be reused, a reap cannot be undone.
    fn take(header: &'a Header, me: i32) -> Lock<'a> {
        loop {
            let taken = header
                .lock
                .compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed);
            if taken.is_ok() {
                return Lock { word: &header.lock };
            }
            std::thread::yield_now();
        }
    }

    /// The lock if it is free or held by `dead` (a worker just reaped).
    fn try_take(header: &'a Header, me: i32, dead: i32) -> Option<Lock<'a>> {
        for from in [0, dead] {
            let taken =
                header
                    .lock
                    .compare_exchange(from, me, Ordering::Acquire, Ordering::Relaxed);
            if taken.is_ok() {
                return Some(Lock { word: &header.lock });
            }
        }
        None
    }
}

impl Drop for Lock<'_> {
    fn drop(&mut self) {
        self.word.store(0, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};

    /// A connection from `client` (no such socket in the kernel).
    fn peer(client: &str, port: u16) -> Peer {
        Peer::Tcp {
            remote: SocketAddr::new(client.parse().unwrap(), port),
            local: "192.0.2.1:7000".parse().unwrap(),
        }
    }

    fn served(stream: &TcpStream) -> Peer {
        Peer::Tcp {
            remote: stream.peer_addr().unwrap(),
            local: stream.local_addr().unwrap(),
        }
    }

    #[test]
    fn counts_over_owners_and_refuses_the_one_past_the_limit() {
        let p = PerIp::new(2, 8).unwrap();
        let (a, b) = (Pid::from_raw(100), Pid::from_raw(200));
        assert!(p.admit(&peer("10.0.0.1", 1), a));
        assert!(p.admit(&peer("10.0.0.1", 2), b));
        assert!(
            p.admit(&peer("10.0.0.2", 1), a),
            "another address has its own count"
        );
        assert!(p.admit(&Peer::Unix, a), "unix peers are not limited");
        p.release(&peer("10.0.0.1", 2), b);
        assert_eq!(p.counted("10.0.0.1".parse().unwrap()), 1);
        assert!(PerIp::new(0, 8).unwrap().admit(&peer("10.0.0.1", 3), a));
    }

    #[test]
    fn a_reaped_owner_gives_back_everything_it_held() {
        let p = PerIp::new(3, 32).unwrap();
        let (dead, live) = (Pid::from_raw(300), Pid::from_raw(400));
        for i in 0..40u16 {
            let owner = if i < 20 { dead } else { live };
            assert!(p.admit(&peer(&format!("10.0.1.{}", i % 20), i), owner));
        }
        assert!(p.forget_owner(dead, Pid::from_raw(1)));
        for i in 0..20 {
            let n = p.counted(format!("10.0.1.{i}").parse().unwrap());
            assert_eq!(n, 1, "10.0.1.{i}: only the live owner's connection is left");
        }
        for i in 20..40u16 {
            p.release(&peer(&format!("10.0.1.{}", i % 20), i), live);
        }
        let (_, entries) = p.parts().unwrap();
        assert!(
            entries.iter().all(|e| e.owner() == 0),
            "the table is empty again"
        );
    }

    #[test]
    fn the_limit_holds_for_connections_the_client_keeps_open() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let local = listener.local_addr().unwrap();
        let p = PerIp::new(2, 8).unwrap();
        let (a, b) = (Pid::from_raw(11), Pid::from_raw(12));
        let clients: Vec<TcpStream> = (0..3).map(|_| TcpStream::connect(local).unwrap()).collect();
        let served: Vec<TcpStream> = (0..3).map(|_| listener.accept().unwrap().0).collect();
        assert!(p.admit(&super::tests::served(&served[0]), a));
        assert!(p.admit(&super::tests::served(&served[1]), b));
        assert!(
            !p.admit(&super::tests::served(&served[2]), a),
            "a third one held open"
        );
        drop(clients);
    }

    #[test]
    fn a_connection_the_client_closed_does_not_count_against_it() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let local = listener.local_addr().unwrap();
        let p = PerIp::new(1, 8).unwrap();
        let me = Pid::from_raw(9);
        let first = TcpStream::connect(local).unwrap();
        let (served_first, _) = listener.accept().unwrap();
        assert!(p.admit(&served(&served_first), me));
        // The client closes it, but its process has not let go yet.
        drop(first);
        let _second = TcpStream::connect(local).unwrap();
        let (served_second, _) = listener.accept().unwrap();
        assert!(p.admit(&served(&served_second), me));
        assert_eq!(p.counted("127.0.0.1".parse().unwrap()), 2);
        p.release(&served(&served_first), me);
        assert_eq!(p.counted("127.0.0.1".parse().unwrap()), 1);
    }

    #[test]
    fn a_reused_client_port_does_not_count_twice() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let local = listener.local_addr().unwrap();
        let p = PerIp::new(1, 8).unwrap();
        let me = Pid::from_raw(13);
        let _client = TcpStream::connect(local).unwrap();
        let (stream, _) = listener.accept().unwrap();
        // An earlier connection with the same 4-tuple, not yet released.
        assert!(p.admit(&served(&stream), me));
        assert!(p.admit(&served(&stream), me), "the old one is known closed");
        // Its release takes the closed one: the open one still counts.
        p.release(&served(&stream), me);
        let (_, entries) = p.parts().unwrap();
        let left: Vec<&Entry> = entries.iter().filter(|e| e.owner() != 0).collect();
        assert_eq!(left.len(), 1);
        assert!(!left[0].is_closed());
    }

    #[test]
    fn a_v4_client_of_a_dual_stack_listener_is_looked_up_as_v4() {
        let Ok(listener) = TcpListener::bind("[::]:0") else {
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "skipping the dual-stack test: [::] cannot be bound here"
            );
            return;
        };
        let port = listener.local_addr().unwrap().port();
        let p = PerIp::new(1, 8).unwrap();
        let me = Pid::from_raw(21);
        let first = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let (served_first, _) = listener.accept().unwrap();
        assert!(p.admit(&served(&served_first), me));
        let _second = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let (served_second, _) = listener.accept().unwrap();
        assert!(
            !p.admit(&served(&served_second), me),
            "the first is found open"
        );
        drop(first);
        assert!(
            p.admit(&served(&served_second), me),
            "and then found closed"
        );
    }

    #[test]
    fn v4_and_v4_mapped_v6_are_one_client() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let local = listener.local_addr().unwrap();
        let p = PerIp::new(1, 8).unwrap();
        let _client = TcpStream::connect(local).unwrap();
        let (stream, _) = listener.accept().unwrap();
        assert!(p.admit(&served(&stream), Pid::from_raw(7)));
        let Peer::Tcp { remote, .. } = served(&stream) else {
            unreachable!()
        };
        let mapped = Peer::Tcp {
            remote: SocketAddr::new(bits(remote.ip()).to_be_bytes().into(), 1),
            local: "[::1]:7000".parse().unwrap(),
        };
        assert!(!p.admit(&mapped, Pid::from_raw(7)));
    }

    #[test]
    fn the_reaper_frees_a_dead_holders_lock_and_waits_for_a_live_one() {
        let p = PerIp::new(1, 8).unwrap();
        let (header, _) = p.parts().unwrap();
        let (dead, live, me) = (Pid::from_raw(41), Pid::from_raw(42), Pid::from_raw(1));
        header.lock.store(live.as_raw(), Ordering::Relaxed);
        assert!(
            !p.forget_owner(dead, me),
            "another worker holds it: try later"
        );
        header.lock.store(dead.as_raw(), Ordering::Relaxed);
        assert!(p.forget_owner(dead, me));
        assert_eq!(header.lock.load(Ordering::Relaxed), 0);
        assert!(p.admit(&peer("10.0.0.9", 1), Pid::from_raw(5)));
    }

    #[test]
    fn deletion_keeps_every_entry_reachable_across_the_wrap() {
        // 48 connections in the smallest table (64 slots): runs collide and
        // wrap around its end. Release two in three, out of insertion
        // order, and find every one that is left.
        let p = PerIp::new(48, 1).unwrap();
        let me = Pid::from_raw(3);
        let clients: Vec<Peer> = (0..48u16)
            .map(|i| peer(&format!("10.9.{}.1", i % 5), i))
            .collect();
        for c in &clients {
            assert!(p.admit(c, me));
        }
        for c in clients
            .iter()
            .skip(1)
            .step_by(3)
            .chain(clients.iter().step_by(3))
            .rev()
        {
            p.release(c, me);
        }
        for (n, c) in clients.iter().enumerate().filter(|(n, _)| n % 3 == 2) {
            let Peer::Tcp { remote, local } = *c else {
                unreachable!()
            };
            let key = Key::of(remote, local);
            let (_, entries) = p.parts().unwrap();
            let found = p.run(entries, key.remote).any(|i| entries[i].key() == key);
            assert!(
                found,
                "connection {n} is no longer reachable from its home slot"
            );
        }
        let (_, entries) = p.parts().unwrap();
        assert_eq!(entries.iter().filter(|e| e.owner() != 0).count(), 16);
    }
}
