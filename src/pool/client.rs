//! One caller's connection to a pool: frames in (one job each), results
//! out as frames in the order the jobs came, whatever order the workers
//! finish them in. `forkctl call` and the `pool` handler speak this.
//!
//! Bounded both ways: at most [`MAX_PENDING`] jobs per connection are
//! unanswered before forkd stops reading from it (the caller then blocks
//! in its own send: back-pressure, not loss), and a frame over
//! `max_frame` is answered with an `ERR` frame, after which the
//! connection is closed (its byte stream cannot be resynchronised).
//! Never blocks; the loop calls [`Client::readable`] and
//! [`Client::writable`] on its events.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::rc::Rc;

use crate::ipc::{frame, Decoder, Drain, FrameError, Hangup, Payload};

/// Unanswered jobs per connection before forkd stops reading it.
pub const MAX_PENDING: usize = 256;
/// After a refused frame, bytes read and dropped while waiting for the
/// caller's end of stream: closing with unread input would reset the
/// connection and could destroy the refusal before the caller reads it.
const DISCARD_MAX: usize = 64 << 20;

/// A caller's stream as a client uses it: read straight into the
/// decoder's memory, and its writing side shut down on its own.
pub trait CallerStream: Read + Write {
    /// One read of at most `want` bytes appended to `into` (0 at end of
    /// stream).
    fn read_into(&mut self, into: &mut Vec<u8>, want: usize) -> io::Result<usize>;
    fn shutdown_write(&self);
}

impl CallerStream for mio::net::UnixStream {
    fn read_into(&mut self, into: &mut Vec<u8>, want: usize) -> io::Result<usize> {
        use std::os::fd::AsFd;
        crate::ipc::read_spare(self.as_fd(), into, want)
    }

    fn shutdown_write(&self) {
        let _ = self.shutdown(std::net::Shutdown::Write);
    }
}
/// Bytes read per read between frames (a burst of small ones).
const READ_CHUNK: usize = 64 << 10;
/// Bytes read per read into a large frame's own `Vec`: what the socket
/// may hold.
const READ_LARGE: usize = 4 << 20;
/// The output buffer's capacity kept between writes.
const OUT_KEEP: usize = 1 << 20;

#[derive(Debug)]
pub struct Client<S> {
    pub stream: S,
    decoder: Decoder,
    /// Encoded results not yet written, back to back (so results ready
    /// together leave in one write and wake the caller once), and how far
    /// they are written. Cleared, not dropped, once written: the next
    /// results reuse it.
    out: Vec<u8>,
    out_at: usize,
    /// Results of jobs `first_seq..next_seq`, `None` until done.
    pending: VecDeque<Option<Vec<u8>>>,
    first_seq: u64,
    next_seq: u64,
    /// No more requests will be read (end of stream or a bad frame).
    closing: bool,
    /// A frame was refused: input is dropped until the caller's end of
    /// stream (at most [`DISCARD_MAX`] bytes), after our answers went out.
    discarding: Option<usize>,
    /// Our writing side is shut down (after the last answer of a refused
    /// caller).
    shut: bool,
    /// A short read ends the reading, unless the caller may have hung up.
    drain: Drain,
    buf: Vec<u8>,
}

impl<S: CallerStream> Client<S> {
    pub fn new(stream: S, max_frame: usize) -> Client<S> {
        Client {
            stream,
            decoder: Decoder::new(max_frame),
            out: Vec::new(),
            out_at: 0,
            pending: VecDeque::new(),
            first_seq: 0,
            next_seq: 0,
            closing: false,
            discarding: None,
            shut: false,
            drain: Drain::default(),
            buf: Vec::new(),
        }
    }

    /// Bytes that arrived before this became a caller (read past an
    /// upgrading request), and bytes still to write ahead of any result.
    pub fn preload(&mut self, read: &[u8], unsent: Vec<u8>) {
        self.decoder.extend(read);
        self.out.extend_from_slice(&unsent);
    }

    /// The loop's event for this caller (see [`Drain`]): with
    /// [`Hangup::Possible`], reads go on to the end of the stream rather
    /// than stop after a short one.
    pub fn ready(&mut self, hangup: Hangup) {
        self.drain.ready(hangup);
    }

    /// Reads requests and hands each to `submit(seq, payload)`; an `Err`
    /// from it is the job's answer (busy, stopping). Stops at
    /// [`MAX_PENDING`] unanswered jobs.
    pub fn readable(&mut self, submit: &mut dyn FnMut(u64, Payload) -> Result<(), String>) {
        if self.discarding.is_some() {
            self.discard();
            return;
        }
        while !self.closing && self.pending.len() < MAX_PENDING {
            match self.decoder.next_frame() {
                Ok(Some(payload)) => {
                    let seq = self.next_seq;
                    self.next_seq += 1;
                    self.pending.push_back(None);
                    if let Err(reason) = submit(seq, Rc::new(payload)) {
                        self.complete(seq, format!("ERR {reason}").into_bytes());
                    }
                    continue;
                }
                Ok(None) => {}
                Err(FrameError::TooLarge { len, max }) => {
                    let seq = self.next_seq;
                    self.next_seq += 1;
                    self.pending.push_back(None);
                    let reason = format!("ERR a frame of {len} bytes is over max_frame ({max} bytes); closing the connection");
                    self.complete(seq, reason.into_bytes());
                    self.closing = true;
                    self.discarding = Some(0);
                    self.discard();
                    break;
                }
                Err(_) => {
                    self.closing = true;
                    break;
                }
            }
            if self.drain.stop() {
                break;
            }
            let stream = &mut self.stream;
            let read = self
                .decoder
                .read_with(READ_CHUNK, READ_LARGE, |into, want| {
                    stream.read_into(into, want)
                });
            match read {
                Ok(read) if read.got == 0 => self.closing = true,
                Ok(read) => self.drain.read(read.short),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.drain.empty();
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => self.closing = true,
            }
        }
    }

    /// Reads and drops what a refused caller still sends, up to its end
    /// of stream or [`DISCARD_MAX`] bytes.
    fn discard(&mut self) {
        let Some(mut dropped) = self.discarding else {
            return;
        };
        if self.buf.len() < READ_CHUNK {
            self.buf.resize(READ_CHUNK, 0);
        }
        loop {
            match self.stream.read(&mut self.buf) {
                Ok(0) => break,
                Ok(n) if dropped + n < DISCARD_MAX => dropped += n,
                Ok(_) => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.discarding = Some(dropped);
                    return;
                }
                Err(_) => break,
            }
        }
        self.discarding = None;
    }

    /// Whether reading stopped only because of [`MAX_PENDING`] (the loop
    /// reads again once results went out: no new edge will come).
    pub fn paused(&self) -> bool {
        !self.closing && self.pending.len() >= MAX_PENDING
    }

    /// The result of job `seq`; results leave in job order.
    pub fn complete(&mut self, seq: u64, result: Vec<u8>) {
        let Some(at) = seq.checked_sub(self.first_seq) else {
            return;
        };
        if let Some(slot) = self.pending.get_mut(at as usize) {
            *slot = Some(result);
        }
        while let Some(Some(_)) = self.pending.front() {
            let result = self.pending.pop_front().flatten().expect("checked Some");
            self.first_seq += 1;
            frame::encode(&result, &mut self.out);
        }
    }

    /// Writes what is ready; `Err` when the peer is gone.
    pub fn writable(&mut self) -> io::Result<()> {
        while self.out_at < self.out.len() {
            match self.stream.write(&self.out[self.out_at..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.out_at += n;
                    if self.out_at == self.out.len() {
                        self.out_at = 0;
                        self.out.clear();
                        // A large result's buffer is not kept for small ones.
                        if self.out.capacity() > OUT_KEEP {
                            self.out = Vec::new();
                        }
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        // A refused caller hears the end of our answers while we still
        // drain what it sends.
        if self.discarding.is_some() && self.pending.is_empty() && !self.shut {
            self.stream.shutdown_write();
            self.shut = true;
        }
        Ok(())
    }

    /// Nothing more will be read, every job is answered and written.
    pub fn finished(&self) -> bool {
        self.closing && self.pending.is_empty() && self.out.is_empty() && self.discarding.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stream whose input is fixed (then end of stream) and whose output
    /// is collected; it counts the reads made of it.
    struct Pipe {
        input: io::Cursor<Vec<u8>>,
        output: Vec<u8>,
        reads: usize,
    }

    impl Read for Pipe {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.reads += 1;
            self.input.read(buf)
        }
    }

    impl CallerStream for Pipe {
        fn read_into(&mut self, into: &mut Vec<u8>, want: usize) -> io::Result<usize> {
            let at = into.len();
            into.resize(at + want, 0);
            let n = self.read(&mut into[at..])?;
            into.truncate(at + n);
            Ok(n)
        }

        fn shutdown_write(&self) {}
    }

    impl Write for Pipe {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.output.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn frames(bytes: &[u8]) -> Vec<Vec<u8>> {
        let mut d = Decoder::new(1 << 20);
        d.extend(bytes);
        std::iter::from_fn(|| d.next_frame().unwrap()).collect()
    }

    #[test]
    fn results_leave_in_job_order_and_errors_answer_their_own_job() {
        let mut input = Vec::new();
        for p in [&b"a"[..], b"b", b"c"] {
            frame::encode(p, &mut input);
        }
        let mut c = Client::new(
            Pipe {
                input: io::Cursor::new(input),
                output: Vec::new(),
                reads: 0,
            },
            1024,
        );
        // The caller's jobs and its end of stream came in one event.
        c.ready(Hangup::Possible);
        let mut seen = Vec::new();
        c.readable(&mut |seq, p| {
            seen.push((seq, p.to_vec()));
            if seq == 1 {
                Err("busy: full".into())
            } else {
                Ok(())
            }
        });
        assert_eq!(seen.len(), 3);
        c.complete(2, b"C".to_vec());
        c.writable().unwrap();
        assert!(
            c.stream.output.is_empty(),
            "job 0 is not done: nothing leaves"
        );
        c.complete(0, b"A".to_vec());
        c.writable().unwrap();
        assert_eq!(
            frames(&c.stream.output),
            [&b"A"[..], b"ERR busy: full", b"C"]
        );
        assert!(c.finished());
    }

    #[test]
    fn a_large_job_read_in_pieces_straight_into_its_frame_arrives_whole() {
        // Two large jobs and a small one between them, in one stream.
        let big = |seed: u8| -> Vec<u8> { (0..300_000u32).map(|i| (i as u8) ^ seed).collect() };
        let mut input = Vec::new();
        frame::encode(&big(1), &mut input);
        frame::encode(b"small", &mut input);
        frame::encode(&big(2), &mut input);
        let mut c = Client::new(
            Pipe {
                input: io::Cursor::new(input),
                output: Vec::new(),
                reads: 0,
            },
            1 << 20,
        );
        c.ready(Hangup::Possible);
        let mut jobs = Vec::new();
        c.readable(&mut |_, p| {
            jobs.push(p.to_vec());
            Ok(())
        });
        assert_eq!(jobs, [big(1), b"small".to_vec(), big(2)]);
        // Between frames a read asks for a chunk; into a large frame for
        // what it has left: far fewer reads than chunks of the stream.
        assert!(c.stream.reads <= 6, "{} reads", c.stream.reads);
    }

    #[test]
    fn a_frame_over_max_frame_is_answered_then_the_connection_ends() {
        let mut input = Vec::new();
        frame::encode(b"ok", &mut input);
        frame::encode(&[0; 100], &mut input);
        frame::encode(b"never", &mut input);
        let mut c = Client::new(
            Pipe {
                input: io::Cursor::new(input),
                output: Vec::new(),
                reads: 0,
            },
            16,
        );
        c.ready(Hangup::Possible);
        let mut submitted = 0;
        c.readable(&mut |_, _| {
            submitted += 1;
            Ok(())
        });
        assert_eq!(submitted, 1);
        c.complete(0, b"OK".to_vec());
        c.writable().unwrap();
        let out = frames(&c.stream.output);
        assert_eq!(out[0], b"OK");
        assert!(String::from_utf8_lossy(&out[1])
            .starts_with("ERR a frame of 100 bytes is over max_frame (16 bytes)"));
        assert!(c.finished());
    }

    #[test]
    fn a_short_read_ends_the_reading_unless_the_caller_may_have_hung_up() {
        let caller = |input: Vec<u8>| {
            Client::new(
                Pipe {
                    input: io::Cursor::new(input),
                    output: Vec::new(),
                    reads: 0,
                },
                1024,
            )
        };
        let mut input = Vec::new();
        frame::encode(b"job", &mut input);
        // No hang-up in the event: one read brought less than it asked
        // for, so the socket was empty and the next data is a new edge.
        let mut c = caller(input.clone());
        c.ready(Hangup::No);
        let mut jobs = 0;
        c.readable(&mut |_, _| {
            jobs += 1;
            Ok(())
        });
        assert_eq!((jobs, c.stream.reads), (1, 1));
        assert!(!c.closing, "the end of stream is not read yet");
        // A later event that may carry the end of stream reads on to it.
        c.ready(Hangup::Possible);
        c.readable(&mut |_, _| Ok(()));
        assert!(c.closing, "the end of stream is read");
        // Told of a possible hang-up first: the end is read at once.
        let mut c = caller(input);
        c.ready(Hangup::Possible);
        c.readable(&mut |_, _| Ok(()));
        assert!(c.closing);
        assert_eq!(c.stream.reads, 2);
    }
}
