//! One end's view of both rings: the bounded buffer itself. An end posts
//! chunks on one ring and takes them from the other, keeping its own
//! counts of both; the stamps the other side writes are only checked
//! against them, once each, and every disagreement is a
//! [`ChannelError::Corrupt`].
//!
//! Producer: an `empty` token, the slot's stamp checked (freed for this
//! chunk), the chunk copied in, the stamp (this chunk, its length), a
//! `full` token. Consumer: a `full` token, the stamp checked (this chunk, a
//! length that fits), the chunk copied out, the stamp (freed for the chunk
//! `SLOTS` later), an `empty` token.

use super::region::{Region, Ring, Stamp, SLOTS};
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

    /// After an `empty` token: the next slot must have been freed for the
    /// chunk this end posts next.
    pub(super) fn check_room(&self) -> Result<(), ChannelError> {
        let slot = Rings::slot(self.posted);
        let stamp = Stamp::load(&self.region.control(self.out).stamps[slot]);
        if stamp != Stamp::free_for(self.posted) {
            return Err(ChannelError::Corrupt(format!(
                "{}: a free slot was signalled for chunk {}, but slot {slot} holds {stamp:?}",
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
        let stamp = Stamp {
            chunk: self.posted,
            len: len as u32,
        };
        stamp.store(&control.stamps[Rings::slot(self.posted)]);
        self.posted = self.posted.wrapping_add(1);
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
        let slot = Rings::slot(self.taken);
        let stamp = Stamp::load(&control.stamps[slot]);
        if stamp.chunk != self.taken || stamp.len == 0 {
            return Err(ChannelError::Corrupt(format!(
                "{}: chunk {} was signalled, but slot {slot} holds {stamp:?}",
                ring.name(),
                self.taken
            )));
        }
        let len = stamp.len as usize;
        if len > self.region.slot_size() {
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
        Stamp::free_for(self.taken.wrapping_add(SLOTS)).store(&control.stamps[slot]);
        self.taken = self.taken.wrapping_add(1);
        control.empty.give().map_err(|g| garbled(ring, "empty", g))
    }
}
