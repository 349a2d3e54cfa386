//! The shared region of one shm channel: its layout, its creation and
//! attachment, and every access to it. Beside `semaphore.rs`, all of
//! the transport's `unsafe` (mmap, madvise, copies in and out of slots) is
//! here.
//!
//! ```text
//! 0         header page: magic, version, geometry, supervisor pid, closed,
//!           the two doorbell flags
//! PAGE      request ring:  control page | slot 0 | slot 1 | ... | slot 15
//! PAGE + R  response ring: control page | slot 0 | slot 1 | ... | slot 15
//! ```
//!
//! A ring's control page holds its `full` and `empty` semaphores and one
//! [`Stamp`] per slot, each in a cache line of its own; slot data starts on
//! a page boundary (unaligned 64 KiB copies measured 17 times slower on
//! forkd's reference machine). A stamp says which chunk of the stream a
//! slot holds and how long it is, or for which chunk it was freed: the one
//! word each side writes per chunk, so that checking the other side costs
//! no cache line beyond the semaphores and the slot itself (published head
//! and tail counts in lines of their own were two more lines crossing
//! between the CPUs per chunk, a fifth of the small-frame rate).
//!
//! Invariants:
//! - Every shared field is an atomic: the other process may write any bit
//!   pattern at any time, and every pattern is a valid value. Callers check
//!   what the other side wrote before using it.
//! - Slot data is only copied, with `ptr::copy_nonoverlapping`, between a
//!   raw pointer into the mapping and memory this process owns; no Rust
//!   reference to slot data is ever made, so a peer writing a slot while we
//!   copy it can garble the copy, never our own memory.
//! - Accessors bound against this process's copy of the geometry, checked
//!   once at attach and never read from the mapping again.
//!
//! A limit: whoever can open the segment by name (its owner's uid, or
//! root) can also shrink it, and the supervisor's next access past the new
//! end is a SIGBUS. A sealed memfd (`F_SEAL_SHRINK`) would close that.

use std::io;
use std::num::NonZeroUsize;
use std::os::fd::OwnedFd;
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::*};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::mman::{self, MapFlags, MmapAdvise, ProtFlags};
use nix::sys::stat::Mode;

use super::semaphore::Semaphore;
use crate::ipc::ChannelError;

pub(super) const MAGIC: u32 = u32::from_be_bytes(*b"fkrg");
pub(super) const VERSION: u32 = 2;
/// Slots per ring.
pub(super) const SLOTS: u32 = 16;
/// The layout's unit: the header, each control page and each slot start on
/// a multiple of it.
pub(super) const PAGE: usize = 4096;
/// The largest slot.
pub(super) const MAX_SLOT: usize = 64 << 10;

/// The two rings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ring {
    /// Supervisor → worker.
    Requests = 0,
    /// Worker → supervisor.
    Responses = 1,
}

impl Ring {
    pub(super) fn name(self) -> &'static str {
        match self {
            Ring::Requests => "request ring",
            Ring::Responses => "response ring",
        }
    }
}

/// A value in a cache line of its own, so the two sides do not contend
/// for fields they do not share.
#[repr(C, align(64))]
pub(super) struct Line<T>(T);

impl<T> std::ops::Deref for Line<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// The first page.
#[repr(C)]
pub(super) struct Header {
    pub magic: AtomicU32,
    pub version: AtomicU32,
    pub slots: AtomicU32,
    pub slot_size: AtomicU32,
    /// Bytes in the region.
    pub size: AtomicU64,
    /// Offsets of the request and the response ring.
    pub rings: [AtomicU64; 2],
    /// The pid of the forkd that made the region.
    pub supervisor: AtomicU32,
    /// Set by the supervisor when it drops the channel.
    pub closed: AtomicU32,
    /// The supervisor found the response ring empty and waits for the
    /// doorbell: the worker rings it after its next response chunk.
    pub responses_armed: Line<AtomicU32>,
    /// The supervisor found the request ring full and waits for the
    /// doorbell: the worker rings it once it frees a request slot.
    pub room_armed: Line<AtomicU32>,
}

/// The first page of each ring.
#[repr(C)]
pub(super) struct Control {
    /// Chunks posted and not yet taken.
    pub full: Semaphore,
    /// Slots free for the producer.
    pub empty: Semaphore,
    /// Each slot's [`Stamp`], written before the token that announces it.
    pub stamps: [Line<AtomicU64>; SLOTS as usize],
}

/// What a slot holds, as one word: the number (wrapping) of a chunk of the
/// ring's stream and a length. Length 0: the slot is free for that chunk
/// (the consumer wrote it after taking the chunk `SLOTS` before it, or the
/// region was just made); otherwise it holds that chunk, of that many bytes
/// (the producer wrote it). Any word is a valid stamp; the reader checks it
/// against its own count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Stamp {
    pub chunk: u32,
    pub len: u32,
}

impl Stamp {
    pub fn free_for(chunk: u32) -> Stamp {
        Stamp { chunk, len: 0 }
    }

    pub fn load(word: &AtomicU64) -> Stamp {
        let w = word.load(Acquire);
        Stamp {
            chunk: (w >> 32) as u32,
            len: w as u32,
        }
    }

    pub fn store(self, word: &AtomicU64) {
        word.store((u64::from(self.chunk) << 32) | u64::from(self.len), Release);
    }
}

const _: () = assert!(std::mem::size_of::<Header>() <= PAGE);
const _: () = assert!(std::mem::size_of::<Control>() <= PAGE);

fn ring_len(slot_size: usize) -> usize {
    PAGE + SLOTS as usize * slot_size
}

fn ring_offset(slot_size: usize, ring: Ring) -> usize {
    PAGE + ring as usize * ring_len(slot_size)
}

/// Bytes in a region whose slots hold `slot_size` bytes.
pub(super) fn region_size(slot_size: usize) -> usize {
    PAGE + 2 * ring_len(slot_size)
}

/// One mapping of a channel's segment; unmapped on drop.
#[derive(Debug)]
pub(super) struct Region {
    base: NonNull<u8>,
    size: usize,
    /// Checked at creation or attach; 0 until then.
    slot_size: usize,
}

// SAFETY: a mapping belongs to no thread. Shared fields are atomics and
// slot data is copied through raw pointers, so the owner may move to
// another thread.
unsafe impl Send for Region {}

impl Region {
    /// Creates the segment `name` and maps it twice: once for the
    /// supervisor's end, left out of forked workers (MADV_DONTFORK, so no
    /// worker inherits another's channel), once for the worker's end. On
    /// failure the segment is removed again.
    pub fn create(name: &str, slot_size: usize) -> io::Result<(Region, Region)> {
        assert!(slot_size % PAGE == 0 && (PAGE..=MAX_SLOT).contains(&slot_size));
        let fd = open_exclusive(name)?;
        let size = region_size(slot_size);
        let made = (|| {
            nix::unistd::ftruncate(&fd, size as libc::off_t)?;
            let parent = Region::map(&fd, size, slot_size)?;
            parent.init(slot_size);
            parent.dont_fork()?;
            let child = Region::map(&fd, size, slot_size)?;
            Ok((parent, child))
        })();
        if made.is_err() {
            let _ = mman::shm_unlink(name);
        }
        // `fd` closes here: the mappings keep the pages.
        made
    }

    /// Maps the segment `name` made by [`Region::create`] in another
    /// process, checking its magic, version and geometry.
    pub fn attach(name: &str) -> Result<Region, ChannelError> {
        let fd = match mman::shm_open(name, OFlag::O_RDWR, Mode::empty()) {
            Ok(fd) => fd,
            // The supervisor dropped the channel before we got here.
            Err(Errno::ENOENT) => return Err(ChannelError::Closed),
            Err(e) => return Err(io::Error::from(e).into()),
        };
        let size = nix::sys::stat::fstat(&fd).map_err(io::Error::from)?.st_size;
        let size = usize::try_from(size).unwrap_or(0);
        if !(PAGE..=region_size(MAX_SLOT)).contains(&size) {
            return Err(ChannelError::Corrupt(format!(
                "{name} is {size} bytes: not a forkd shm channel"
            )));
        }
        let mut region = Region::map(&fd, size, 0)?;
        region.slot_size = region.check(name)?;
        Ok(region)
    }

    fn map(fd: &OwnedFd, size: usize, slot_size: usize) -> io::Result<Region> {
        let len = NonZeroUsize::new(size).expect("a region holds at least its header");
        // SAFETY: a new MAP_SHARED mapping of the segment aliases no Rust
        // object. Its bytes are only touched through atomics and raw
        // copies (module invariants), so any content is fine.
        let base = unsafe {
            mman::mmap(
                None,
                len,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
                fd,
                0,
            )?
        };
        Ok(Region {
            base: base.cast(),
            size,
            slot_size,
        })
    }

    fn dont_fork(&self) -> io::Result<()> {
        // SAFETY: advice on exactly our own mapping; MADV_DONTFORK changes
        // what a later fork copies, not what this process sees.
        unsafe { mman::madvise(self.base.cast(), self.size, MmapAdvise::MADV_DONTFORK)? };
        Ok(())
    }

    /// Writes the header, the semaphores and the stamps of a zero-filled
    /// segment; the magic last, so whoever sees it sees the rest.
    fn init(&self, slot_size: usize) {
        let header = self.header();
        header.version.store(VERSION, Relaxed);
        header.slots.store(SLOTS, Relaxed);
        header.slot_size.store(slot_size as u32, Relaxed);
        header.size.store(self.size as u64, Relaxed);
        for ring in [Ring::Requests, Ring::Responses] {
            header.rings[ring as usize].store(ring_offset(slot_size, ring) as u64, Relaxed);
            let control = self.control(ring);
            control.full.init(0);
            control.empty.init(SLOTS);
            for (slot, stamp) in (0..SLOTS).zip(&control.stamps) {
                Stamp::free_for(slot).store(stamp);
            }
        }
        header.supervisor.store(std::process::id(), Relaxed);
        header.magic.store(MAGIC, Release);
    }

    /// The slot size of a segment someone else made, once its header
    /// proves it is a forkd channel of this layout.
    fn check(&self, name: &str) -> Result<usize, ChannelError> {
        let corrupt = |what: String| Err(ChannelError::Corrupt(format!("{name}: {what}")));
        let header = self.header();
        let magic = header.magic.load(Acquire);
        if magic != MAGIC {
            return corrupt(format!(
                "magic {magic:#010x}, expected {MAGIC:#010x}: not a forkd shm channel"
            ));
        }
        let version = header.version.load(Relaxed);
        if version != VERSION {
            return corrupt(format!(
                "layout version {version}, this worker reads version {VERSION}"
            ));
        }
        let slots = header.slots.load(Relaxed);
        let slot_size = header.slot_size.load(Relaxed) as usize;
        if slots != SLOTS || slot_size % PAGE != 0 || !(PAGE..=MAX_SLOT).contains(&slot_size) {
            return corrupt(format!(
                "{slots} slots of {slot_size} bytes, expected {SLOTS} of a multiple of \
                 {PAGE} up to {MAX_SLOT}"
            ));
        }
        let size = region_size(slot_size);
        let offsets = [Ring::Requests, Ring::Responses].map(|r| ring_offset(slot_size, r) as u64);
        let stored = [0, 1].map(|i| header.rings[i].load(Relaxed));
        if header.size.load(Relaxed) != size as u64 || self.size != size || stored != offsets {
            return corrupt(format!(
                "the layout does not add up ({} bytes, rings at {stored:?}; expected {size} \
                 bytes, rings at {offsets:?})",
                self.size
            ));
        }
        Ok(slot_size)
    }

    pub fn slot_size(&self) -> usize {
        self.slot_size
    }

    pub fn header(&self) -> &Header {
        // SAFETY: every mapping is at least PAGE bytes (create, attach) and
        // page-aligned; Header fits in PAGE (asserted at compile time) and
        // holds only atomics, valid for any bytes another process writes.
        // The reference borrows `self`, so it cannot outlive the mapping.
        unsafe { self.base.cast::<Header>().as_ref() }
    }

    pub fn control(&self, ring: Ring) -> &Control {
        let offset = ring_offset(self.slot_size, ring);
        assert!(self.slot_size != 0 && offset + PAGE <= self.size);
        // SAFETY: as for `header`: the page lies inside the mapping
        // (asserted), its offset is a multiple of PAGE, and Control holds
        // only atomics.
        unsafe { self.base.add(offset).cast::<Control>().as_ref() }
    }

    fn slot(&self, ring: Ring, slot: usize) -> *mut u8 {
        assert!(self.slot_size != 0 && slot < SLOTS as usize);
        let offset = ring_offset(self.slot_size, ring) + PAGE + slot * self.slot_size;
        assert!(offset + self.slot_size <= self.size);
        // SAFETY: `offset` is inside the mapping (asserted above).
        unsafe { self.base.as_ptr().add(offset) }
    }

    /// Copies `src` into `slot` of `ring`, `at` bytes into it.
    pub fn write_slot(&self, ring: Ring, slot: usize, at: usize, src: &[u8]) {
        assert!(at <= self.slot_size && src.len() <= self.slot_size - at);
        let dst = self.slot(ring, slot);
        // SAFETY: the destination range lies inside the slot (asserted),
        // inside our mapping, and `src` is this process's own memory, so
        // they do not overlap. The peer may touch those bytes meanwhile;
        // they are plain bytes and no reference to them exists.
        unsafe { ptr::copy_nonoverlapping(src.as_ptr(), dst.add(at), src.len()) };
    }

    /// Appends bytes `from..from + len` of `slot` of `ring` to `dst`.
    pub fn append_slot(&self, ring: Ring, slot: usize, from: usize, len: usize, dst: &mut Vec<u8>) {
        assert!(from <= self.slot_size && len <= self.slot_size - from);
        let src = self.slot(ring, slot);
        dst.reserve(len);
        // SAFETY: the source range lies inside the slot (asserted), inside
        // our mapping; the destination is `len` bytes of `dst`'s spare
        // capacity (reserved above), this process's own memory, so they do
        // not overlap. A peer writing the slot meanwhile changes which
        // bytes land in `dst`, which is ours; it can break nothing else.
        // The copy initialises those bytes, so `set_len` may cover them.
        unsafe {
            ptr::copy_nonoverlapping(src.add(from), dst.as_mut_ptr().add(dst.len()), len);
            dst.set_len(dst.len() + len);
        }
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: `base` and `size` are what mmap returned, and every
        // reference into the mapping borrows `self`.
        let _ = unsafe { mman::munmap(self.base.cast(), self.size) };
    }
}

/// `shm_open(O_CREAT | O_EXCL)`, mode 0600. A segment of that name is one
/// a killed forkd of the same pid left: it is removed and the open tried
/// once more.
fn open_exclusive(name: &str) -> io::Result<OwnedFd> {
    let open = || {
        mman::shm_open(
            name,
            OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_RDWR,
            Mode::S_IRUSR | Mode::S_IWUSR,
        )
    };
    match open() {
        Err(Errno::EEXIST) => {
            mman::shm_unlink(name)?;
            Ok(open()?)
        }
        other => Ok(other?),
    }
}

#[cfg(test)]
impl Region {
    /// Overwrites `bytes.len()` bytes of the header page (`ring` `None`)
    /// or of a ring's control page.
    pub fn scribble(&self, ring: Option<Ring>, bytes: &[u8]) {
        assert!(bytes.len() <= PAGE);
        let offset = ring.map_or(0, |r| ring_offset(self.slot_size, r));
        // SAFETY: the page lies inside the mapping; its fields are atomics,
        // valid for any bytes, and no reference to them is live across
        // this copy on this thread (other threads only use atomics).
        unsafe {
            ptr::copy_nonoverlapping(bytes.as_ptr(), self.base.as_ptr().add(offset), bytes.len())
        };
    }
}
