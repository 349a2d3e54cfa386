//! One end's view of both rings: the bounded buffer itself. An end posts
//! chunks on one ring and takes them from the other, keeping its own
//! counts of both; the counts and lengths the other side publishes are
//! only checked against them, once each, and every disagreement is a
//! [`ChannelError::Corrupt`].
//!
//! Producer: an `empty` token, the chunk copied in, its length, the head
//! published, a `full` token. Consumer: a `full` token, the head and
//! length checked, the chunk copied out, the tail published, an `empty`
//! token.

use std::sync::atomic::Ordering::*;

use super::region::{Region, Ring, SLOTS};
use super::semaphore::Garbled;
use crate::ipc::{ChannelError, Decoder};

pub(super) fn garbled(ring: Ring, semaphore: &str, Garbled(count): Garbled) -> ChannelError {
    ChannelError::Corrupt(format!(
        "{}: the {semaphore} semaphore holds {count} (at most {SLOTS})",
        ring.name()
    ))
}

/// One end's view of both rings: it posts on `out` and takes from the
/// other, and keeps its own counts of both (the shared ones are only
/// checked against them).
pub(super) struct Rings {
    pub(super) region: Region,
    out: Ring,
    inbound: Ring,
    /// Chunks this end posted on `out` (wrapping).
    posted: u32,
    /// Chunks this end took from `inbound` (wrapping).
    taken: u32,
    pub(super) decoder: Decoder,
}

impl std::fmt::Debug for Rings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rings")
            .field("region", &self.region)
            .field("out", &self.out)
            .field("posted", &self.posted)
            .field("taken", &self.taken)
            .field("pending", &self.decoder.pending())
            .finish()
    }
}

impl Rings {
    pub(super) fn new(region: Region, out: Ring, max_frame: usize) -> Rings {
        let inbound = match out {
            Ring::Requests => Ring::Responses,
            Ring::Responses => Ring::Requests,
        };
        Rings {
            region,
            out,
            inbound,
            posted: 0,
            taken: 0,
            decoder: Decoder::new(max_frame),
        }
    }

    fn slot(count: u32) -> usize {
        (count % SLOTS) as usize
    }

    /// Takes an `empty` token of `out` if there is one (never blocks).
    pub(super) fn try_room(&self) -> Result<bool, ChannelError> {
        let empty = &self.region.control(self.out).empty;
        if !empty
            .try_take()
            .map_err(|g| garbled(self.out, "empty", g))?
        {
            return Ok(false);
        }
        self.check_room()?;
        Ok(true)
    }

    /// After an `empty` token: the consumer's published count must leave
    /// the next slot free.
    pub(super) fn check_room(&self) -> Result<(), ChannelError> {
        let tail = self.region.control(self.out).tail.load(Acquire);
        if self.posted.wrapping_sub(tail) >= SLOTS {
            return Err(ChannelError::Corrupt(format!(
                "{}: a free slot was signalled with {} chunks posted and {tail} taken",
                self.out.name(),
                self.posted
            )));
        }
        Ok(())
    }

    /// Copies as much of `parts`, in order, as fits into the next `out`
    /// slot from byte `at`; returns the bytes copied.
    pub(super) fn fill(&self, mut at: usize, parts: [&[u8]; 2]) -> usize {
        let start = at;
        let slot = Rings::slot(self.posted);
        for part in parts {
            let n = part.len().min(self.region.slot_size() - at);
            self.region.write_slot(self.out, slot, at, &part[..n]);
            at += n;
        }
        at - start
    }

    /// Posts the next `out` slot, filled with `len` bytes.
    pub(super) fn post(&mut self, len: usize) -> Result<(), ChannelError> {
        let control = self.region.control(self.out);
        control.lengths[Rings::slot(self.posted)].store(len as u32, Release);
        self.posted = self.posted.wrapping_add(1);
        control.head.store(self.posted, Release);
        control
            .full
            .give()
            .map_err(|g| garbled(self.out, "full", g))
    }

    /// Takes a `full` token of `inbound` if there is one (never blocks).
    pub(super) fn try_chunk(&self) -> Result<bool, ChannelError> {
        let full = &self.region.control(self.inbound).full;
        full.try_take()
            .map_err(|g| garbled(self.inbound, "full", g))
    }

    /// After a `full` token: checks the chunk, copies it straight into the
    /// decoder (into the `Vec` a large frame is returned in) and frees its
    /// slot.
    pub(super) fn take(&mut self) -> Result<(), ChannelError> {
        let ring = self.inbound;
        let control = self.region.control(ring);
        let head = control.head.load(Acquire);
        let ready = head.wrapping_sub(self.taken);
        if ready == 0 || ready > SLOTS {
            return Err(ChannelError::Corrupt(format!(
                "{}: a chunk was signalled with {head} chunks posted and {} taken",
                ring.name(),
                self.taken
            )));
        }
        let slot = Rings::slot(self.taken);
        let len = control.lengths[slot].load(Acquire) as usize;
        if len == 0 || len > self.region.slot_size() {
            return Err(ChannelError::Corrupt(format!(
                "{}: slot {slot} claims {len} bytes (a chunk holds 1 to {})",
                ring.name(),
                self.region.slot_size()
            )));
        }
        let mut from = 0;
        while from < len {
            let (into, room) = self.decoder.target();
            let n = room.min(len - from);
            self.region.append_slot(ring, slot, from, n, into);
            from += n;
        }
        self.taken = self.taken.wrapping_add(1);
        control.tail.store(self.taken, Release);
        control.empty.give().map_err(|g| garbled(ring, "empty", g))
    }
}
