//! Inter-process channels between the supervisor and a pool's workers.
//!
//! Everything that crosses a channel is a [`frame`]: a 4-byte big-endian
//! length and that many bytes, at most `max_frame`. Three transports carry
//! frames behind one small API:
//!
//! - [`pipe`]: a request pipe and a response pipe;
//! - [`mqueue`]: a request and a response POSIX message queue, frames cut
//!   into messages that fit Linux's default limits and joined again;
//! - [`shm`]: a shared-memory region with a request and a response ring of
//!   page-aligned slots, process-shared semaphores counting full and empty
//!   slots, and an eventfd doorbell for the supervisor's loop.
//!
//! [`channel`] makes both ends, in the supervisor, before the fork: the
//! [`Parent`] stays in the supervisor, the [`Child`] goes to the worker
//! (inherited across a fork, or described to an exec'd worker by
//! [`Child::exec_setup`] and reopened there with [`Child::from_env`]).
//!
//! A `Parent` never blocks: [`Parent::send`] queues a frame and writes what
//! the transport takes now, [`Parent::flush`] writes more once the loop
//! says the transport has room, [`Parent::recv`] returns a whole response
//! frame if one is in. A `Child` blocks (a worker has nothing else to do).
//! A channel is used for one worker's life: when the worker dies its
//! channel is dropped (half-sent frames with it) and its replacement gets
//! a new one. This module never forks, never logs and never starts a
//! thread.

pub mod frame;
pub mod mqueue;
pub mod names;
pub mod pipe;
pub mod shm;

use std::collections::VecDeque;
use std::io;
use std::os::fd::RawFd;
use std::rc::Rc;

pub use frame::{Decoder, FrameError};

pub use crate::config::Transport;

/// The environment variable naming an exec'd worker's transport
/// (`pipe`, `mqueue` or `shm`); each transport adds its own.
pub const ENV_TRANSPORT: &str = "FORKD_TRANSPORT";
/// The environment variable holding the channel's `max_frame`.
pub const ENV_MAX_FRAME: &str = "FORKD_MAX_FRAME";

/// What a channel is for: it names the queues and segments it creates,
/// `/forkd.<pid>.<pool>.<worker>...`, so that what a killed forkd left is
/// found again by name (see [`names`]).
#[derive(Debug, Clone, Copy)]
pub struct ChannelId<'a> {
    /// forkd's pid.
    pub pid: u32,
    pub pool: &'a str,
    pub worker: usize,
}

impl ChannelId<'_> {
    /// `/forkd.<pid>.<pool>.<worker>.<suffix>`: a POSIX IPC name (one
    /// leading slash, no other).
    pub fn name(&self, suffix: &str) -> String {
        format!(
            "/forkd.{}.{}.{}.{suffix}",
            self.pid,
            self.pool.replace('/', "_"),
            self.worker
        )
    }
}

/// Why a channel cannot go on; the worker behind it is then replaced.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    /// The other end is gone (EOF, EPIPE, or a shut-down region).
    #[error("the channel was closed")]
    Closed,
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The other side broke the transport's rules (a bad length or index
    /// in shared memory, a message of the wrong size).
    #[error("the channel is corrupt: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// A frame's payload, shared with whoever may need to send it again (the
/// pool keeps a job's payload for a retry).
pub type Payload = Rc<Vec<u8>>;

/// Creates both ends of a channel for one worker.
pub fn channel(
    transport: Transport,
    id: ChannelId<'_>,
    max_frame: usize,
) -> io::Result<(Parent, Child)> {
    Ok(match transport {
        Transport::Pipe => {
            let (p, c) = pipe::channel(max_frame)?;
            (Parent::Pipe(p), Child::Pipe(c))
        }
        Transport::Mqueue => {
            let (p, c) = mqueue::channel(id, max_frame)?;
            (Parent::Mqueue(p), Child::Mqueue(c))
        }
        Transport::Shm => {
            let (p, c) = shm::channel(id, max_frame)?;
            (Parent::Shm(p), Child::Shm(c))
        }
    })
}

/// The supervisor's end of one worker's channel (non-blocking).
#[derive(Debug)]
pub enum Parent {
    Pipe(pipe::Parent),
    Mqueue(mqueue::Parent),
    Shm(shm::Parent),
}

macro_rules! each {
    ($self:expr, $end:ident => $body:expr) => {
        match $self {
            Parent::Pipe($end) => $body,
            Parent::Mqueue($end) => $body,
            Parent::Shm($end) => $body,
        }
    };
}

impl Parent {
    /// Queues one frame and writes as much of the queue as the transport
    /// takes now. Never blocks.
    pub fn send(&mut self, payload: Payload) -> Result<(), ChannelError> {
        each!(self, end => end.send(payload))
    }

    /// Queues one frame without writing anything: a caller with several
    /// frames for this channel queues them all, then calls [`flush`] once,
    /// so they go out in as few syscalls as the transport allows.
    ///
    /// [`flush`]: Parent::flush
    pub fn queue(&mut self, payload: Payload) -> Result<(), ChannelError> {
        each!(self, end => end.queue(payload))
    }

    /// Writes more of what is queued; `true` once nothing is left queued.
    /// Call when the loop reports the channel ready.
    pub fn flush(&mut self) -> Result<bool, ChannelError> {
        each!(self, end => end.flush())
    }

    /// The next whole response frame, if one is in. Call until `None`
    /// each time the loop reports the channel ready (the loop is
    /// edge-triggered).
    pub fn recv(&mut self) -> Result<Option<Vec<u8>>, ChannelError> {
        each!(self, end => end.recv())
    }

    /// Watches the channel in the loop under `token`: readable for
    /// responses, writable for room to send (for shm, one doorbell says
    /// both).
    pub fn register(&mut self, registry: &mio::Registry, token: mio::Token) -> io::Result<()> {
        each!(self, end => end.register(registry, token))
    }

    pub fn deregister(&mut self, registry: &mio::Registry) -> io::Result<()> {
        each!(self, end => end.deregister(registry))
    }

    /// Frames queued and not yet wholly handed to the transport.
    pub fn queued(&self) -> usize {
        each!(self, end => end.queued())
    }

    /// The loop's event for this channel (see [`Drain`]): with
    /// [`Hangup::Possible`], [`recv`] reads on to the end of the stream
    /// rather than stop after a short read.
    ///
    /// [`recv`]: Parent::recv
    pub fn ready(&mut self, hangup: Hangup) {
        if let Parent::Pipe(end) = self {
            end.drain.ready(hangup);
        }
    }
}

/// Whether the event that made a source ready said its peer may have hung
/// up (mio's `is_read_closed`: EPOLLHUP, or EPOLLRDHUP with input; or an
/// error, EPOLLERR, such as a request pipe whose worker is gone). A
/// reader may skip the read that would only fail with EAGAIN after a
/// short one only when it did not: an end of stream that arrived before
/// the event was collected brings no new edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hangup {
    No,
    Possible,
}

impl Hangup {
    pub fn of(event: &mio::event::Event) -> Hangup {
        if event.is_read_closed() || event.is_error() {
            Hangup::Possible
        } else {
            Hangup::No
        }
    }
}

/// The reading side of an edge-triggered pipe or socket: a read that
/// returned less than it asked for emptied it, so the read after it, which
/// could only fail with EAGAIN, is skipped (what arrives later is a new
/// edge). Unless the loop's event said the peer may have hung up: then
/// reads go on to the end of the stream, which brings no new edge, until a
/// read finds the fd empty.
#[derive(Debug, Default)]
pub struct Drain {
    drained: bool,
    hung_up: bool,
}

impl Drain {
    /// The loop reported the fd: something may have arrived since the last
    /// read.
    pub fn ready(&mut self, hangup: Hangup) {
        self.drained = false;
        self.hung_up |= hangup == Hangup::Possible;
    }

    /// A read returned data; `short`: less than it asked for.
    pub fn read(&mut self, short: bool) {
        self.drained = short && !self.hung_up;
    }

    /// A read found the fd empty (EAGAIN): a hang-up from now on is a new
    /// edge.
    pub fn empty(&mut self) {
        self.hung_up = false;
    }

    /// Whether to stop instead of reading again; asked once per skip.
    pub fn stop(&mut self) -> bool {
        std::mem::take(&mut self.drained)
    }
}

/// The worker's end of its channel (blocking).
#[derive(Debug)]
pub enum Child {
    Pipe(pipe::Child),
    Mqueue(mqueue::Child),
    Shm(shm::Child),
}

/// What an exec'd worker is given to find its channel again.
#[derive(Debug, Default)]
pub struct ExecSetup {
    /// Variables for its environment ([`ENV_TRANSPORT`] and the
    /// transport's own).
    pub env: Vec<(String, String)>,
    /// Fds it keeps across exec, at the same numbers (named in `env`).
    pub keep: Vec<RawFd>,
    /// Fds to put on its stdin and stdout (the pipe transport speaks
    /// frames there, so any language can be a worker).
    pub stdin: Option<RawFd>,
    pub stdout: Option<RawFd>,
}

impl Child {
    /// The next request frame; `None` once the supervisor closed the
    /// channel (the worker should then exit).
    ///
    /// The frame is lent from the channel's own buffer (no allocation, no
    /// copy) until the channel is next used: copy out what must outlive
    /// the response.
    ///
    /// ```compile_fail,E0499
    /// fn keep_two(child: &mut forkd::ipc::Child) {
    ///     let first = child.recv().unwrap().unwrap();
    ///     let second = child.recv().unwrap().unwrap(); // `first` would dangle
    ///     assert_ne!(first, second);
    /// }
    /// ```
    pub fn recv(&mut self) -> Result<Option<&[u8]>, ChannelError> {
        match self {
            Child::Pipe(end) => end.recv(),
            Child::Mqueue(end) => end.recv(),
            Child::Shm(end) => end.recv(),
        }
    }

    /// [`Child::recv`] as an owned `Vec`, for a request that must outlive
    /// the next use of the channel (an echo sends it back): a large frame,
    /// collected in a `Vec` of its own, is handed over without a copy; a
    /// small one costs an allocation and a copy.
    pub fn recv_owned(&mut self) -> Result<Option<Vec<u8>>, ChannelError> {
        match self {
            Child::Pipe(end) => end.recv_owned(),
            Child::Mqueue(end) => end.recv_owned(),
            Child::Shm(end) => end.recv_owned(),
        }
    }

    /// Sends one response frame.
    pub fn send(&mut self, payload: &[u8]) -> Result<(), ChannelError> {
        match self {
            Child::Pipe(end) => end.send(payload),
            Child::Mqueue(end) => end.send(payload),
            Child::Shm(end) => end.send(payload),
        }
    }

    /// The fds a forked (not exec'd) worker must keep open.
    pub fn fds(&self) -> Vec<RawFd> {
        match self {
            Child::Pipe(end) => end.fds(),
            Child::Mqueue(end) => end.fds(),
            Child::Shm(end) => end.fds(),
        }
    }

    /// How an exec'd worker finds this channel.
    pub fn exec_setup(&self) -> ExecSetup {
        let mut setup = match self {
            Child::Pipe(end) => end.exec_setup(),
            Child::Mqueue(end) => end.exec_setup(),
            Child::Shm(end) => end.exec_setup(),
        };
        let (transport, max) = match self {
            Child::Pipe(end) => (Transport::Pipe, end.max_frame()),
            Child::Mqueue(end) => (Transport::Mqueue, end.max_frame()),
            Child::Shm(end) => (Transport::Shm, end.max_frame()),
        };
        setup
            .env
            .push((ENV_TRANSPORT.into(), transport.keyword().into()));
        setup.env.push((ENV_MAX_FRAME.into(), max.to_string()));
        setup
    }

    /// An exec'd worker's end, from the environment [`Child::exec_setup`]
    /// described (the pipe transport: stdin and stdout).
    pub fn from_env() -> Result<Child, ChannelError> {
        let var = |name: &str| {
            std::env::var(name).map_err(|_| {
                ChannelError::Corrupt(format!(
                    "{name} is not set: is this process a forkd pool worker?"
                ))
            })
        };
        let max_frame: usize = var(ENV_MAX_FRAME)?
            .parse()
            .map_err(|_| ChannelError::Corrupt(format!("{ENV_MAX_FRAME} is not a number")))?;
        let named = var(ENV_TRANSPORT)?;
        match Transport::from_keyword(&named) {
            Some(Transport::Pipe) => Ok(Child::Pipe(pipe::Child::from_stdio(max_frame))),
            Some(Transport::Mqueue) => Ok(Child::Mqueue(mqueue::Child::from_env(max_frame)?)),
            Some(Transport::Shm) => Ok(Child::Shm(shm::Child::from_env(max_frame)?)),
            None => Err(ChannelError::Corrupt(format!(
                "{ENV_TRANSPORT}={named}: expected pipe, mqueue or shm"
            ))),
        }
    }
}

/// A worker's end of one transport: how it waits for a whole request;
/// lending or handing it over is the same for all.
pub(crate) trait Receive {
    fn decoder(&mut self) -> &mut Decoder;

    /// Reads until a whole request is in: `false` at the channel's end.
    fn await_frame(&mut self) -> Result<bool, ChannelError>;

    /// See [`Child::recv`].
    fn recv(&mut self) -> Result<Option<&[u8]>, ChannelError> {
        if !self.await_frame()? {
            return Ok(None);
        }
        Ok(Some(self.decoder().lend()))
    }

    /// See [`Child::recv_owned`].
    fn recv_owned(&mut self) -> Result<Option<Vec<u8>>, ChannelError> {
        if !self.await_frame()? {
            return Ok(None);
        }
        Ok(Some(self.decoder().take()))
    }
}

/// Frames waiting to be written, without copying their payloads: the
/// header and payload of the front frame are handed out as two slices,
/// and each transport takes what it can of them.
#[derive(Debug, Default)]
pub struct Outbox {
    frames: VecDeque<(Payload, [u8; frame::HEADER])>,
    /// Bytes of the front frame (header included) already written.
    done: usize,
}

impl Outbox {
    pub fn push(&mut self, payload: Payload) {
        let head = frame::header(payload.len());
        self.frames.push_back((payload, head));
    }

    /// The unwritten rest of the front frame: part of its header (maybe
    /// empty) and part of its payload. Both empty when nothing is queued.
    pub fn front(&self) -> (&[u8], &[u8]) {
        match self.frames.front() {
            None => (&[], &[]),
            Some((payload, head)) => {
                let head_rest = &head[self.done.min(frame::HEADER)..];
                let body_from = self.done.saturating_sub(frame::HEADER);
                (head_rest, &payload[body_from..])
            }
        }
    }

    /// Marks `n` more bytes of the front frame (and following ones) written.
    pub fn advance(&mut self, mut n: usize) {
        while n > 0 {
            let Some((payload, _)) = self.frames.front() else {
                return;
            };
            let left = frame::HEADER + payload.len() - self.done;
            if n < left {
                self.done += n;
                return;
            }
            n -= left;
            self.frames.pop_front();
            self.done = 0;
        }
    }

    /// Appends to `into` the unwritten rest of the front frame, then whole
    /// following frames of at most `frame_limit` bytes (header included)
    /// while `into` stays within `limit` bytes: several small frames for
    /// one write. Marks nothing written ([`Outbox::advance`] does).
    pub fn copy_small(&self, into: &mut Vec<u8>, limit: usize, frame_limit: usize) {
        let (head, body) = self.front();
        into.extend_from_slice(head);
        into.extend_from_slice(body);
        for (payload, head) in self.frames.iter().skip(1) {
            let len = frame::HEADER + payload.len();
            if len > frame_limit || into.len() + len > limit {
                break;
            }
            into.extend_from_slice(head);
            into.extend_from_slice(payload);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Frames not wholly written.
    pub fn len(&self) -> usize {
        self.frames.len()
    }
}

/// Freed memory glibc's malloc keeps at the top of the heap instead of
/// returning it to the kernel (its default follows the largest freed
/// block: 2 MiB after 1 MiB frames).
pub const KEEP_FREED: usize = 64 << 20;
/// Blocks glibc's malloc takes from the heap rather than a fresh mmap(2)
/// (32 MiB is the most it accepts on 64-bit systems).
pub const HEAP_BLOCKS_UP_TO: usize = 32 << 20;

/// Tunes the process's allocator for large frames; the supervisor calls
/// it once at start, before any thread or fork.
///
/// Every received frame is a fresh `Vec`. With glibc's default, a turn
/// that takes in four 1 MiB responses grows the heap by 4 MiB, and
/// freeing them trims it back (brk), so the next frames are written into
/// new pages: a page fault every 4 KiB, measured as most of the time of
/// an shm transfer. Keeping [`KEEP_FREED`] bytes of freed heap, and
/// taking blocks up to [`HEAP_BLOCKS_UP_TO`] from the heap, makes that
/// memory reused instead; the cost is that the supervisor's resident size
/// stays at its peak, up to that much above what it holds. Does nothing
/// where the C library is not glibc.
pub fn tune_allocator_for_frames() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt(3) only sets two of malloc's parameters (it takes
    // malloc's own lock); any value is valid, and a refused one leaves
    // the default.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, HEAP_BLOCKS_UP_TO as libc::c_int);
        libc::mallopt(libc::M_TRIM_THRESHOLD, KEEP_FREED as libc::c_int);
    }
}

/// One `read(2)` from `fd` of at most `want` bytes into `into`'s spare
/// capacity, appended, with no zeroing of the room first
/// ([`crate::process::raw::read`]); retries EINTR. For
/// [`Decoder::read_with`].
pub(crate) fn read_spare(
    fd: std::os::fd::BorrowedFd<'_>,
    into: &mut Vec<u8>,
    want: usize,
) -> io::Result<usize> {
    into.reserve(want);
    let n = loop {
        match crate::process::raw::read(fd, &mut into.spare_capacity_mut()[..want]) {
            Ok(filled) => break filled.len(),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    };
    // SAFETY: read(2) initialised the first `n` bytes of the spare capacity.
    unsafe { into.set_len(into.len() + n) };
    Ok(n)
}

/// Retries `f` while it fails with EINTR.
pub(crate) fn no_eintr<T>(mut f: impl FnMut() -> nix::Result<T>) -> nix::Result<T> {
    loop {
        match f() {
            Err(nix::errno::Errno::EINTR) => continue,
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_outbox_hands_out_frames_in_pieces_and_drops_them_once_written() {
        let mut out = Outbox::default();
        out.push(Rc::new(b"abc".to_vec()));
        out.push(Rc::new(Vec::new()));
        out.push(Rc::new(b"z".to_vec()));
        assert_eq!(out.front(), (&[0, 0, 0, 3][..], &b"abc"[..]));
        out.advance(2);
        assert_eq!(out.front(), (&[0, 3][..], &b"abc"[..]));
        out.advance(3);
        assert_eq!(out.front(), (&[][..], &b"bc"[..]));
        out.advance(2);
        assert_eq!(out.len(), 2);
        assert_eq!(out.front(), (&[0, 0, 0, 0][..], &[][..]));
        out.advance(4 + 4);
        assert_eq!(out.front(), (&[][..], &b"z"[..]));
        out.advance(1);
        assert!(out.is_empty());
        assert_eq!(out.front(), (&[][..], &[][..]));
    }

    /// Frames sent while the worker does not read fill the transport, wait
    /// in the outbox, and all arrive in order once it reads.
    fn frames_wait_while_the_worker_is_not_reading(transport: Transport, pool: &str) {
        let id = ChannelId {
            pid: std::process::id(),
            pool,
            worker: 0,
        };
        let (mut parent, mut child) = channel(transport, id, 1 << 20).unwrap();
        // 2.5 MB: more than a 1 MiB pipe or 16 slots of 64 KiB hold.
        let frames: Vec<Vec<u8>> = (0..20_000)
            .map(|i: usize| vec![(i % 251) as u8; 64 + i % 128])
            .collect();
        for f in &frames {
            parent.send(Rc::new(f.clone())).unwrap();
        }
        assert!(parent.queued() > 0, "the transport filled up");
        let sent = frames.clone();
        let worker = std::thread::spawn(move || {
            for f in &sent {
                assert_eq!(child.recv().unwrap(), Some(&f[..]));
            }
        });
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while parent.queued() > 0 {
            parent.flush().unwrap();
            assert!(std::time::Instant::now() < deadline, "flushed within 30 s");
            std::thread::yield_now();
        }
        worker.join().unwrap();
    }

    #[test]
    fn a_worker_takes_requests_lent_or_owned_in_order() {
        let id = ChannelId {
            pid: std::process::id(),
            pool: "lentowned",
            worker: 0,
        };
        for transport in [Transport::Shm, Transport::Pipe] {
            let (mut parent, mut child) = channel(transport, id, 1 << 20).unwrap();
            let large: Vec<u8> = (0..300_000).map(|i| (i % 241) as u8).collect();
            for payload in [&b"first"[..], &large, b"third", &large[7..]] {
                parent.send(Rc::new(payload.to_vec())).unwrap();
            }
            let (got_tx, got) = std::sync::mpsc::channel();
            let worker = std::thread::spawn(move || {
                let first = child.recv_owned().unwrap().unwrap();
                let second = child.recv().unwrap().unwrap().to_vec();
                let third = child.recv_owned().unwrap().unwrap();
                let fourth = child.recv_owned().unwrap().unwrap();
                got_tx.send((first, second, third, fourth)).unwrap();
                child.recv().unwrap().is_none()
            });
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
            while parent.queued() > 0 {
                parent.flush().unwrap();
                assert!(std::time::Instant::now() < deadline, "flushed within 30 s");
                std::thread::yield_now();
            }
            let (first, second, third, fourth) = got
                .recv_timeout(std::time::Duration::from_secs(30))
                .unwrap();
            // Only now: a closed shm channel drops what its worker has not
            // read yet.
            drop(parent);
            let ended = worker.join().unwrap();
            assert_eq!(first, b"first");
            assert_eq!(second, large);
            assert_eq!(third, b"third");
            assert_eq!(fourth, large[7..]);
            assert!(ended, "the end of the channel after the last request");
        }
    }

    #[test]
    fn pipe_frames_wait_while_the_worker_is_not_reading() {
        frames_wait_while_the_worker_is_not_reading(Transport::Pipe, "waitpipe");
    }

    #[test]
    fn shm_frames_wait_while_the_worker_is_not_reading() {
        frames_wait_while_the_worker_is_not_reading(Transport::Shm, "waitshm");
    }

    #[test]
    fn small_frames_are_copied_together_up_to_the_limits() {
        let mut out = Outbox::default();
        for payload in [&b"ab"[..], b"c", b"0123456789", b"d", b"e"] {
            out.push(Rc::new(payload.to_vec()));
        }
        out.advance(3); // into the first frame's header
        let mut into = Vec::new();
        out.copy_small(&mut into, 64, 8);
        // The rest of "ab", then "c"; the 14-byte frame is over the frame
        // limit, and nothing after it is taken (order is kept).
        assert_eq!(into, [&[2u8][..], b"ab", &[0, 0, 0, 1], b"c"].concat());
        out.advance(into.len());
        assert_eq!(out.len(), 3);
        into.clear();
        out.copy_small(&mut into, 14 + 5, 64);
        assert_eq!(into.len(), 14 + 5, "two frames fit the byte limit");
        out.advance(into.len());
        assert_eq!(out.front(), (&[0, 0, 0, 1][..], &b"e"[..]));
    }

    #[test]
    fn names_carry_pid_pool_and_worker_with_one_slash() {
        let id = ChannelId {
            pid: 42,
            pool: "up/per",
            worker: 3,
        };
        assert_eq!(id.name("req"), "/forkd.42.up_per.3.req");
    }
}
