//! The shm transport: per worker channel, one shared-memory segment
//! (`shm_open` + `mmap(MAP_SHARED)`) holding a request ring (supervisor →
//! worker) and a response ring (worker → supervisor) of 16 page-aligned
//! slots, with counting semaphores of full and empty slots in each ring,
//! and an eventfd doorbell that tells the supervisor's loop when to look.
//!
//! Each direction is one byte stream of frames ([`frame`]) cut into
//! slot-sized chunks: the supervisor packs several small frames into a
//! slot and spreads a large one over many (slots hold up to 64 KiB, less
//! when `max_frame` is smaller); the receiver feeds chunks to a
//! [`Decoder`]. Producer: take an `empty` token, copy the chunk, store its
//! length, post a `full` token. Consumer: the reverse (`rings.rs`).
//!
//! The supervisor never blocks: it only tries for tokens. When it finds
//! the response ring empty (or the request ring full) it sets an "armed"
//! flag in the header and looks again (so a chunk posted in between is not
//! missed); the worker writes the eventfd only when it finds the flag set,
//! and clears it, so a busy channel costs no syscalls for wake-ups. The
//! supervisor never reads the eventfd (each write is an edge for its
//! edge-triggered epoll), so a round trip costs it no syscall beyond the
//! futex wake and the `epoll_wait`. The
//! worker blocks on a futex for at most a second at a time, then checks
//! that the supervisor has not closed the channel and is still its parent.
//!
//! The worker is not trusted: the supervisor reads each count and stamp
//! the worker wrote once, checks it against its own bookkeeping (the
//! semaphore count; the slot's stamp: which chunk, how long) and turns any
//! violation into [`ChannelError::Corrupt`]; it never reads outside a slot
//! and never panics or blocks on what it finds. Every `unsafe` but the
//! adoption of an exec'd worker's doorbell fd is in `region.rs` and
//! `semaphore.rs`.
//!
//! The [`Parent`] owns the segment's name: dropping it marks the channel
//! closed, wakes a blocked worker and unlinks the name ([`names()`] gives it
//! to the ledger first). The mapping survives a fork, so a forked worker
//! keeps only the doorbell fd; an exec'd worker reopens the segment by
//! name from `FORKD_SHM` ([`Child::from_env`]).
//!
//! Syscalls: shm_open, ftruncate, mmap, madvise, munmap, shm_unlink,
//! eventfd read/write, futex. This module never forks, never logs and
//! never starts a thread.
//!
//! [`frame`]: super::frame
//! [`Decoder`]: super::Decoder

mod region;
mod rings;
mod semaphore;
#[cfg(test)]
mod tests;

use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{fence, AtomicU32, Ordering::*};
use std::time::Duration;

use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};
use nix::errno::Errno;
use nix::sys::eventfd::{EfdFlags, EventFd};

use super::{
    frame, names, no_eintr, ChannelError, ChannelId, Decoder, ExecSetup, FrameError, Outbox,
    Payload, Receive,
};
use region::{Region, Ring, MAX_SLOT, PAGE};
use rings::{garbled, Rings};

/// The environment variable naming an exec'd worker's segment.
pub const ENV_NAME: &str = "FORKD_SHM";
/// The environment variable holding an exec'd worker's doorbell fd.
pub const ENV_DOORBELL: &str = "FORKD_SHM_DOORBELL";

/// How long a worker sleeps on a ring before it checks whether the
/// supervisor is still there.
const WORKER_POLL: Duration = Duration::from_secs(1);

/// The names [`channel`] creates for `id`, for the ledger.
pub fn names(id: ChannelId<'_>) -> [String; 1] {
    [id.name("shm")]
}

/// Bytes per slot: a whole largest frame when that is under 64 KiB (no
/// memory for slots that could never fill), else 64 KiB.
fn slot_size_for(max_frame: usize) -> usize {
    let pages = max_frame.saturating_add(frame::HEADER).div_ceil(PAGE);
    pages.clamp(1, MAX_SLOT / PAGE) * PAGE
}

/// Creates the segment `names(id)` and both ends of the channel.
pub fn channel(id: ChannelId<'_>, max_frame: usize) -> io::Result<(Parent, Child)> {
    let [name] = names(id);
    let doorbell = EventFd::from_flags(EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC)?;
    let worker_doorbell = doorbell.as_fd().try_clone_to_owned()?;
    let (parent_region, child_region) = Region::create(&name, slot_size_for(max_frame))?;
    let parent = Parent {
        rings: Rings::new(parent_region, Ring::Requests, max_frame),
        name: name.clone(),
        doorbell,
        outbox: Outbox::default(),
        max_frame,
    };
    // Armed from the start: the supervisor sends its first job without a
    // `recv` before it, and must hear about the first response.
    parent
        .rings
        .region
        .header()
        .responses_armed
        .store(1, SeqCst);
    let child = Child::new(child_region, name, worker_doorbell, max_frame);
    Ok((parent, child))
}

/// A frame of `len` bytes may be sent.
fn check_len(len: usize, max: usize) -> Result<(), ChannelError> {
    if len > max || u32::try_from(len).is_err() {
        return Err(FrameError::TooLarge {
            len: len as u64,
            max,
        }
        .into());
    }
    Ok(())
}

/// The supervisor's end (never blocks).
///
/// Its mapping is left out of forked workers (MADV_DONTFORK): a forked
/// worker must not touch the supervisor's `Parent`s, which it never does
/// since it ends in `_exit`.
#[derive(Debug)]
pub struct Parent {
    rings: Rings,
    name: String,
    doorbell: EventFd,
    outbox: Outbox,
    max_frame: usize,
}

impl Parent {
    /// With nothing queued before it, a frame that fits in one slot is
    /// copied straight from `payload` into a free slot: it never enters
    /// the outbox unless the ring is full.
    pub fn send(&mut self, payload: Payload) -> Result<(), ChannelError> {
        check_len(payload.len(), self.max_frame)?;
        let whole = frame::HEADER + payload.len();
        if self.outbox.is_empty() && whole <= self.rings.region.slot_size() && self.room()? {
            let head = frame::header(payload.len());
            let n = self.rings.fill(0, [&head, &payload]);
            debug_assert_eq!(n, whole, "a frame that fits in a slot is copied whole");
            return self.rings.post(n);
        }
        self.outbox.push(payload);
        self.flush().map(drop)
    }

    /// Queues without posting: [`Parent::flush`] then packs several small
    /// frames to a slot.
    pub fn queue(&mut self, payload: Payload) -> Result<(), ChannelError> {
        check_len(payload.len(), self.max_frame)?;
        self.outbox.push(payload);
        Ok(())
    }

    /// Copies queued frames into free request slots, several small frames
    /// to a slot. When none is free it arms `room_armed` for the doorbell.
    pub fn flush(&mut self) -> Result<bool, ChannelError> {
        let slot_size = self.rings.region.slot_size();
        while !self.outbox.is_empty() {
            if !self.room()? {
                return Ok(false);
            }
            let mut filled = 0;
            while filled < slot_size {
                let (head, body) = self.outbox.front();
                if head.is_empty() && body.is_empty() {
                    break;
                }
                let n = self.rings.fill(filled, [head, body]);
                self.outbox.advance(n);
                filled += n;
            }
            self.rings.post(filled)?;
        }
        Ok(true)
    }

    /// Takes a free request slot, or arms the doorbell for one and looks
    /// once more (a slot freed in between is then seen here, or rings).
    fn room(&mut self) -> Result<bool, ChannelError> {
        if self.rings.try_room()? {
            return Ok(true);
        }
        let armed = &self.rings.region.header().room_armed;
        armed.store(1, SeqCst);
        fence(SeqCst);
        if !self.rings.try_room()? {
            return Ok(false);
        }
        armed.store(0, Relaxed);
        Ok(true)
    }

    /// The next whole response, if one is in.
    ///
    /// The doorbell is never drained: every write to an eventfd is a new
    /// edge for an edge-triggered epoll, whatever the counter held
    /// (`eventfd_write` wakes its waiters on each write; mio's own `Waker`
    /// relies on the same), so a read here would only cost a syscall per
    /// turn of the loop. The worker resets the counter in the one case a
    /// write cannot make an edge: when it is full ([`Child`]'s
    /// `ring_if_armed`).
    pub fn recv(&mut self) -> Result<Option<Vec<u8>>, ChannelError> {
        loop {
            if let Some(frame) = self.rings.decoder.next_frame()? {
                return Ok(Some(frame));
            }
            if !self.rings.try_chunk()? {
                if !self.outbox.is_empty() {
                    self.flush()?;
                }
                let armed = &self.rings.region.header().responses_armed;
                armed.store(1, SeqCst);
                fence(SeqCst);
                if !self.rings.try_chunk()? {
                    return Ok(None);
                }
                armed.store(0, Relaxed);
            }
            self.rings.take()?;
        }
    }

    /// Watches the doorbell: it says both "responses are in" and "request
    /// slots are free".
    pub fn register(&mut self, registry: &Registry, token: Token) -> io::Result<()> {
        let fd = self.doorbell.as_raw_fd();
        registry.register(&mut SourceFd(&fd), token, Interest::READABLE)
    }

    pub fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        registry.deregister(&mut SourceFd(&self.doorbell.as_raw_fd()))
    }

    pub fn queued(&self) -> usize {
        self.outbox.len()
    }
}

impl Drop for Parent {
    /// Marks the channel closed, wakes a worker waiting on either ring (it
    /// then sees `closed`) and removes the name; the mapping goes with
    /// `rings`.
    fn drop(&mut self) {
        let region = &self.rings.region;
        region.header().closed.store(1, SeqCst);
        region.control(Ring::Requests).full.wake_for_close();
        region.control(Ring::Responses).empty.wake_for_close();
        let _ = names::Kind::Shm.unlink(&self.name);
    }
}

/// The worker's end (blocking).
#[derive(Debug)]
pub struct Child {
    rings: Rings,
    name: String,
    doorbell: OwnedFd,
    max_frame: usize,
    /// The pid of the forkd that made the channel, read once.
    supervisor: u32,
}

impl Child {
    fn new(region: Region, name: String, doorbell: OwnedFd, max_frame: usize) -> Child {
        let supervisor = region.header().supervisor.load(Relaxed);
        Child {
            rings: Rings::new(region, Ring::Responses, max_frame),
            name,
            doorbell,
            max_frame,
            supervisor,
        }
    }

    /// An exec'd worker's end: the segment named by [`ENV_NAME`] and the
    /// doorbell fd in [`ENV_DOORBELL`], which this end then owns (call
    /// once per process).
    pub fn from_env(max_frame: usize) -> Result<Child, ChannelError> {
        let var = |name: &str| {
            std::env::var(name).map_err(|_| {
                ChannelError::Corrupt(format!(
                    "{name} is not set: is this process a forkd shm worker?"
                ))
            })
        };
        let name = var(ENV_NAME)?;
        let fd: RawFd = var(ENV_DOORBELL)?
            .parse()
            .map_err(|_| ChannelError::Corrupt(format!("{ENV_DOORBELL} is not an fd number")))?;
        let region = Region::attach(&name)?;
        let doorbell = inherited_doorbell(fd)?;
        Ok(Child::new(region, name, doorbell, max_frame))
    }

    /// Sends one response, waiting for free slots as it goes; `Closed` if
    /// the supervisor closed the channel or is gone meanwhile.
    pub fn send(&mut self, payload: &[u8]) -> Result<(), ChannelError> {
        check_len(payload.len(), self.max_frame)?;
        let head = frame::header(payload.len());
        let total = frame::HEADER + payload.len();
        let mut sent = 0;
        while sent < total {
            if !self.wait(Ring::Responses)? {
                return Err(ChannelError::Closed);
            }
            self.rings.check_room()?;
            let parts = match sent.checked_sub(frame::HEADER) {
                None => [&head[sent..], payload],
                Some(body) => [&[][..], &payload[body..]],
            };
            let n = self.rings.fill(0, parts);
            self.rings.post(n)?;
            sent += n;
            self.ring_if_armed(&self.rings.region.header().responses_armed)?;
        }
        Ok(())
    }

    /// Waits for a token: `full` of the request ring or `empty` of the
    /// response ring. `false` once the channel is closed or the supervisor
    /// is gone.
    fn wait(&self, ring: Ring) -> Result<bool, ChannelError> {
        let header = self.rings.region.header();
        let control = self.rings.region.control(ring);
        let (semaphore, which) = match ring {
            Ring::Requests => (&control.full, "full"),
            Ring::Responses => (&control.empty, "empty"),
        };
        loop {
            if header.closed.load(SeqCst) != 0 {
                return Ok(false);
            }
            match semaphore.take_within(WORKER_POLL) {
                Ok(true) => return Ok(header.closed.load(SeqCst) == 0),
                Ok(false) if self.supervisor_gone() => return Ok(false),
                Ok(false) => {}
                // Closing adds a token a full ring has no room for.
                Err(_) if header.closed.load(SeqCst) != 0 => return Ok(false),
                Err(g) => return Err(garbled(ring, which, g)),
            }
        }
    }

    /// Neither this process (a worker thread, in tests) nor its parent is
    /// the forkd that made the channel: it died and we were reparented.
    fn supervisor_gone(&self) -> bool {
        let me = std::process::id();
        me != self.supervisor && std::os::unix::process::parent_id() != self.supervisor
    }

    /// Rings the doorbell if the supervisor armed `flag`, clearing it.
    fn ring_if_armed(&self, flag: &AtomicU32) -> Result<(), ChannelError> {
        // Pairs with the supervisor's fence between arming and looking
        // again: its look (a read-modify-write of the semaphore, which
        // reads the latest count) sees our token, or this SeqCst load,
        // after the fence in the total order, sees its flag.
        if flag.load(SeqCst) == 0 || flag.swap(0, SeqCst) == 0 {
            return Ok(());
        }
        let ring = || no_eintr(|| nix::unistd::write(&self.doorbell, &1u64.to_ne_bytes()));
        match ring() {
            Ok(_) => Ok(()),
            // The counter is full (nobody drains it): a write that fails
            // makes no edge, so reset it and ring again, as mio's `Waker`
            // does. EAGAIN on the read: the supervisor's side raced us to
            // it, which is fine.
            Err(Errno::EAGAIN) => {
                let mut count = [0u8; 8];
                match no_eintr(|| nix::unistd::read(&self.doorbell, &mut count)) {
                    Ok(_) | Err(Errno::EAGAIN) => {}
                    Err(e) => return Err(io::Error::from(e).into()),
                }
                match ring() {
                    Ok(_) | Err(Errno::EAGAIN) => Ok(()),
                    Err(e) => Err(io::Error::from(e).into()),
                }
            }
            Err(e) => Err(io::Error::from(e).into()),
        }
    }

    /// The doorbell: the one fd a forked worker keeps (the mapping
    /// survives fork by itself).
    pub fn fds(&self) -> Vec<RawFd> {
        vec![self.doorbell.as_raw_fd()]
    }

    pub fn exec_setup(&self) -> ExecSetup {
        let fd = self.doorbell.as_raw_fd();
        ExecSetup {
            env: vec![
                (ENV_NAME.into(), self.name.clone()),
                (ENV_DOORBELL.into(), fd.to_string()),
            ],
            keep: vec![fd],
            ..ExecSetup::default()
        }
    }

    pub fn max_frame(&self) -> usize {
        self.max_frame
    }
}

impl Receive for Child {
    fn decoder(&mut self) -> &mut Decoder {
        &mut self.rings.decoder
    }

    /// `false` once the supervisor closed the channel or is gone.
    fn await_frame(&mut self) -> Result<bool, ChannelError> {
        while !self.rings.decoder.has_frame()? {
            if !self.wait(Ring::Requests)? {
                return Ok(false);
            }
            self.rings.take()?;
            self.ring_if_armed(&self.rings.region.header().room_armed)?;
        }
        Ok(true)
    }
}

/// Takes over the doorbell fd an exec'd worker inherited, once it is
/// known to be an open eventfd.
fn inherited_doorbell(fd: RawFd) -> Result<OwnedFd, ChannelError> {
    let bad = |what: &str| ChannelError::Corrupt(format!("{ENV_DOORBELL}={fd}: {what}"));
    if fd < 3 {
        return Err(bad("fds 0 to 2 are stdio, not a doorbell"));
    }
    match std::fs::read_link(format!("/proc/self/fd/{fd}")) {
        Ok(target) if target.as_os_str() == "anon_inode:[eventfd]" => {}
        Ok(target) => return Err(bad(&format!("{} is not an eventfd", target.display()))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(bad("no such open fd")),
        // No /proc to ask: trust the number forkd gave.
        Err(_) => {}
    }
    // SAFETY: `fd` is open (checked above where /proc allows) and was
    // handed to this process by forkd for this channel alone (exec_setup's
    // `keep`); nothing else in the process owns it, as `from_env` is
    // called once.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // The worker's own children must not inherit it.
    nix::fcntl::fcntl(
        &fd,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    )
    .map_err(io::Error::from)?;
    Ok(fd)
}
