//! The frame: a 4-byte big-endian unsigned length, then that many payload
//! bytes, at most `max_frame`. One codec for every transport and for the
//! `pool` handler's clients.
//!
//! [`Decoder`] is incremental, for non-blocking streams: bytes go in as
//! they arrive, whole frames come out, and a length over `max_frame` is an
//! error as soon as the four length bytes are in, before any of the
//! payload is buffered. [`read_frame`] / [`write_frame`] are the blocking
//! forms a worker uses. Nothing here does a syscall of its own.

use std::io::{self, Read, Write};

/// The length prefix.
pub const HEADER: usize = 4;

/// Why a stream of frames cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("a frame of {len} bytes is over max_frame ({max} bytes)")]
    TooLarge { len: u64, max: usize },
    #[error("the stream ended {have} bytes into a frame")]
    Truncated { have: usize },
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// The length prefix of a `len`-byte payload.
///
/// # Panics
/// If `len` does not fit in 32 bits (every caller bounds it by max_frame,
/// itself at most 1 GiB).
pub fn header(len: usize) -> [u8; HEADER] {
    u32::try_from(len)
        .expect("frame length fits in 32 bits")
        .to_be_bytes()
}

/// Appends one frame holding `payload` to `out`.
pub fn encode(payload: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&header(payload.len()));
    out.extend_from_slice(payload);
}

/// Writes one frame (blocking).
pub fn write_frame(w: &mut impl Write, payload: &[u8]) -> io::Result<()> {
    w.write_all(&header(payload.len()))?;
    w.write_all(payload)
}

/// Reads one frame (blocking); `None` at a clean end of stream, between
/// frames.
pub fn read_frame(r: &mut impl Read, max: usize) -> Result<Option<Vec<u8>>, FrameError> {
    let mut head = [0u8; HEADER];
    let mut have = 0;
    while have < HEADER {
        match r.read(&mut head[have..]) {
            Ok(0) if have == 0 => return Ok(None),
            Ok(0) => return Err(FrameError::Truncated { have }),
            Ok(n) => have += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    let len = u32::from_be_bytes(head) as usize;
    if len > max {
        return Err(FrameError::TooLarge {
            len: len as u64,
            max,
        });
    }
    let mut payload = vec![0u8; len];
    let mut got = 0;
    while got < len {
        match r.read(&mut payload[got..]) {
            Ok(0) => return Err(FrameError::Truncated { have: HEADER + got }),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Some(payload))
}

/// A frame at least this large is collected straight into the `Vec` that
/// [`Decoder::next_frame`] returns, instead of into the shared buffer and
/// then copied out: one pass over a large payload fewer (for 1 MiB jobs,
/// a fifth of the supervisor's time went to that copy). The `Vec` is
/// allocated whole when the length is read; it is bounded by `max_frame`
/// like the buffer was, and pages not yet written cost no memory.
const LARGE: usize = 64 << 10;

/// What one [`Decoder::read_with`] did.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Filled {
    /// Bytes read; 0 at end of stream.
    pub got: usize,
    /// Fewer than asked for: the stream held no more at that moment.
    pub short: bool,
}

/// Whole frames out of bytes that arrive in pieces.
///
/// A frame comes out owned ([`Decoder::next_frame`]) or lent
/// ([`Decoder::has_frame`], then [`Decoder::lend`]): a lent frame is a
/// slice of the decoder's own buffer (or of the `Vec` a large frame was
/// collected in), valid until the decoder is next changed, which the
/// borrow checker enforces. Lending costs no allocation and no copy.
#[derive(Debug)]
pub struct Decoder {
    buf: Vec<u8>,
    /// Where the next frame starts in `buf` (consumed bytes are dropped
    /// lazily, so a burst of small frames is not a memmove each).
    start: usize,
    max: usize,
    /// A large frame whose header is consumed: its payload so far,
    /// complete once it holds `large_len` bytes. Bytes after it wait in
    /// `buf`.
    large: Option<Vec<u8>>,
    large_len: usize,
    /// The last large frame lent; its memory is reused for the next one.
    lent: Vec<u8>,
}

impl Decoder {
    pub fn new(max: usize) -> Decoder {
        Decoder {
            buf: Vec::new(),
            start: 0,
            max,
            large: None,
            large_len: 0,
            lent: Vec::new(),
        }
    }

    /// Adds bytes read from the stream.
    pub fn extend(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let (into, room) = self.target();
            let n = data.len().min(room);
            into.extend_from_slice(&data[..n]);
            data = &data[n..];
        }
    }

    /// Where the next bytes of the stream go, for a transport that copies
    /// them in itself (a `read(2)` or a shared-memory slot straight into
    /// place, no buffer in between): append at most `room` bytes to the
    /// returned `Vec` (more go in by calling again), never change what is
    /// in it already.
    pub(crate) fn target(&mut self) -> (&mut Vec<u8>, usize) {
        if let Some(large) = self.large.as_mut() {
            let room = self.large_len - large.len();
            if room > 0 {
                return (large, room);
            }
        }
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        (&mut self.buf, usize::MAX)
    }

    /// Reads the stream's next bytes straight into place with `read(into,
    /// want)`, which appends at most `want` bytes to `into` and returns how
    /// many (0 at end of stream): a large frame's own `Vec`, or the buffer
    /// between frames, with no buffer in between. Between frames `want` is
    /// `chunk`; into a large frame, what it has left, at most `large`.
    pub(crate) fn read_with<E>(
        &mut self,
        chunk: usize,
        large: usize,
        read: impl FnOnce(&mut Vec<u8>, usize) -> Result<usize, E>,
    ) -> Result<Filled, E> {
        let (into, room) = self.target();
        let want = if room == usize::MAX {
            chunk
        } else {
            room.min(large)
        };
        let got = read(into, want)?;
        Ok(Filled {
            got,
            short: got < want,
        })
    }

    /// The next whole frame, if one is in; an error (and the stream must be
    /// closed) when a length is over `max_frame`.
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        if !self.has_frame()? {
            return Ok(None);
        }
        Ok(Some(self.take()))
    }

    /// Consumes the whole frame [`Decoder::has_frame`] found and hands it
    /// over: a large frame's own `Vec`, or a small one copied out.
    ///
    /// # Panics
    /// If no whole frame is in (call `has_frame` first).
    pub fn take(&mut self) -> Vec<u8> {
        if let Some(large) = self.large.take() {
            assert_eq!(large.len(), self.large_len, "a large frame is whole");
            return large;
        }
        self.lend().to_vec()
    }

    /// Whether a whole frame is in, for [`Decoder::lend`]; an error (and
    /// the stream must be closed) when a length is over `max_frame`.
    pub fn has_frame(&mut self) -> Result<bool, FrameError> {
        if let Some(large) = &self.large {
            // `target` hands out no more room than the frame has left.
            assert!(large.len() <= self.large_len, "a large frame overfilled");
            return Ok(large.len() == self.large_len);
        }
        // What was lent before is no longer borrowed: drop it (all of
        // it, the usual case, without a drain's memmove).
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        } else if self.start > self.buf.len() / 2 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        let pending = &self.buf[self.start..];
        let Some(head) = pending.get(..HEADER) else {
            return Ok(false);
        };
        let len = u32::from_be_bytes(head.try_into().expect("4 bytes")) as usize;
        if len > self.max {
            return Err(FrameError::TooLarge {
                len: len as u64,
                max: self.max,
            });
        }
        if pending.len() >= HEADER + len {
            return Ok(true);
        }
        if len >= LARGE {
            // Unfinished and large: the rest goes straight into it.
            let mut large = std::mem::take(&mut self.lent);
            large.clear();
            large.reserve_exact(len);
            large.extend_from_slice(&pending[HEADER..]);
            self.buf.clear();
            self.start = 0;
            self.large = Some(large);
            self.large_len = len;
        }
        Ok(false)
    }

    /// Consumes the whole frame [`Decoder::has_frame`] found and lends its
    /// payload until the decoder is next changed.
    ///
    /// # Panics
    /// If no whole frame is in (call `has_frame` first).
    pub fn lend(&mut self) -> &[u8] {
        if let Some(large) = self.large.take() {
            assert_eq!(large.len(), self.large_len, "a large frame is whole");
            self.lent = large;
            return &self.lent;
        }
        let pending = &self.buf[self.start..];
        let len = u32::from_be_bytes(pending[..HEADER].try_into().expect("4 bytes")) as usize;
        assert!(pending.len() >= HEADER + len, "a whole frame is in");
        let from = self.start + HEADER;
        self.start = from + len;
        &self.buf[from..from + len]
    }

    /// Bytes of an unfinished frame (nonzero at the end of a stream means
    /// it was cut short).
    pub fn pending(&self) -> usize {
        let large = self.large.as_ref().map_or(0, |l| HEADER + l.len());
        large + self.buf.len() - self.start
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_whole_and_byte_by_byte() {
        let payloads: Vec<Vec<u8>> = vec![vec![], vec![7], vec![1; 64], (0..=255).collect()];
        let mut wire = Vec::new();
        for p in &payloads {
            encode(p, &mut wire);
        }
        let mut whole = Decoder::new(1024);
        whole.extend(&wire);
        let mut out = Vec::new();
        while let Some(f) = whole.next_frame().unwrap() {
            out.push(f);
        }
        assert_eq!(out, payloads);
        let mut trickle = Decoder::new(1024);
        let mut out = Vec::new();
        for b in &wire {
            trickle.extend(std::slice::from_ref(b));
            while let Some(f) = trickle.next_frame().unwrap() {
                out.push(f);
            }
        }
        assert_eq!(out, payloads);
        assert_eq!(trickle.pending(), 0);
    }

    #[test]
    fn a_large_frame_in_pieces_comes_out_whole_between_its_neighbours() {
        let large: Vec<u8> = (0..3 * LARGE + 5).map(|i| (i % 251) as u8).collect();
        let payloads = vec![b"before".to_vec(), large, b"after".to_vec(), vec![9; LARGE]];
        let mut wire = Vec::new();
        for p in &payloads {
            encode(p, &mut wire);
        }
        for piece in [1usize, 3, 4096, LARGE - 1, LARGE + 7] {
            let mut d = Decoder::new(1 << 20);
            let mut out = Vec::new();
            for chunk in wire.chunks(piece) {
                d.extend(chunk);
                while let Some(f) = d.next_frame().unwrap() {
                    out.push(f);
                }
            }
            assert_eq!(out, payloads, "in pieces of {piece} bytes");
            assert_eq!(d.pending(), 0);
        }
        let mut cut = Decoder::new(1 << 20);
        cut.extend(&wire[..wire.len() - 1]);
        while cut.next_frame().unwrap().is_some() {}
        assert_eq!(
            cut.pending(),
            HEADER + LARGE - 1,
            "a cut large frame is pending"
        );
    }

    #[test]
    fn bytes_appended_through_target_make_the_same_frames_as_extend() {
        let large: Vec<u8> = (0..2 * LARGE + 3).map(|i| (i % 253) as u8).collect();
        let payloads = vec![b"a".to_vec(), large, vec![], vec![5; LARGE], b"z".to_vec()];
        let mut wire = Vec::new();
        for p in &payloads {
            encode(p, &mut wire);
        }
        for piece in [1usize, 5, 4096, LARGE + 1, 3 * LARGE] {
            let mut d = Decoder::new(1 << 20);
            let mut out = Vec::new();
            let mut rest = &wire[..];
            while !rest.is_empty() {
                // As a transport does: at most `room`, at most one piece.
                let (into, room) = d.target();
                let n = rest.len().min(room).min(piece);
                into.extend_from_slice(&rest[..n]);
                rest = &rest[n..];
                while let Some(f) = d.next_frame().unwrap() {
                    out.push(f);
                }
            }
            assert_eq!(out, payloads, "in pieces of {piece} bytes");
            assert_eq!(d.pending(), 0);
        }
    }

    #[test]
    fn lent_frames_are_the_owned_frames_and_reuse_a_large_frames_memory() {
        let large: Vec<u8> = (0..2 * LARGE + 9).map(|i| (i % 247) as u8).collect();
        let payloads = vec![
            b"one".to_vec(),
            large.clone(),
            vec![],
            b"two".to_vec(),
            large[1..].to_vec(),
            vec![3; 700],
        ];
        let mut wire = Vec::new();
        for p in &payloads {
            encode(p, &mut wire);
        }
        for piece in [1usize, 7, 4096, LARGE + 3, wire.len()] {
            let mut d = Decoder::new(1 << 20);
            let mut out: Vec<Vec<u8>> = Vec::new();
            let mut large_at = Vec::new();
            for chunk in wire.chunks(piece) {
                d.extend(chunk);
                while d.has_frame().unwrap() {
                    let frame = d.lend();
                    if frame.len() >= LARGE {
                        large_at.push(frame.as_ptr());
                    }
                    out.push(frame.to_vec());
                }
            }
            assert_eq!(out, payloads, "in pieces of {piece} bytes");
            assert_eq!(d.pending(), 0);
            if piece < LARGE {
                // Both collected in place: the second in the first's memory.
                assert_eq!(large_at.len(), 2);
                assert_eq!(large_at[0], large_at[1], "in pieces of {piece} bytes");
            }
        }
    }

    #[test]
    fn a_lent_frame_is_consumed_and_a_refused_length_stays_an_error() {
        let mut d = Decoder::new(16);
        d.extend(&[&header(2)[..], b"hi", &header(17)[..]].concat());
        assert!(d.has_frame().unwrap());
        assert_eq!(d.lend(), b"hi");
        assert!(matches!(
            d.has_frame(),
            Err(FrameError::TooLarge { len: 17, max: 16 })
        ));
        assert!(d.next_frame().is_err(), "the owned form agrees");
    }

    #[test]
    fn a_length_over_max_frame_is_refused_before_its_payload_arrives() {
        let mut d = Decoder::new(16);
        d.extend(&header(17));
        assert!(matches!(
            d.next_frame(),
            Err(FrameError::TooLarge { len: 17, max: 16 })
        ));
        let mut r: &[u8] = &[0, 0, 0, 17];
        assert!(matches!(
            read_frame(&mut r, 16),
            Err(FrameError::TooLarge { .. })
        ));
    }

    #[test]
    fn blocking_reads_tell_a_clean_end_from_a_cut_frame() {
        let mut wire = Vec::new();
        write_frame(&mut wire, b"hello").unwrap();
        let mut r: &[u8] = &wire;
        assert_eq!(read_frame(&mut r, 64).unwrap().unwrap(), b"hello");
        assert!(read_frame(&mut r, 64).unwrap().is_none(), "clean end");
        let mut cut: &[u8] = &wire[..6];
        assert!(matches!(
            read_frame(&mut cut, 64),
            Err(FrameError::Truncated { have: 6 })
        ));
        let mut cut: &[u8] = &wire[..2];
        assert!(matches!(
            read_frame(&mut cut, 64),
            Err(FrameError::Truncated { have: 2 })
        ));
    }
}
