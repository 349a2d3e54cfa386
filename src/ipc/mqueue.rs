//! The mqueue transport: a request queue (supervisor → worker) and a
//! response queue (worker → supervisor), POSIX message queues named
//! `/forkd.<pid>.<pool>.<worker>.req` and `.rsp` (see [`names`]).
//!
//! Each queue holds 4 messages of 8192 bytes (`msgsize_default`; see the
//! limits below); the message size mq_getattr(3) reports is the one used. Frames travel
//! as a byte stream cut into messages of at most that size: a message may
//! end inside a frame and the next frame may start inside it, so a burst
//! of small frames shares messages, while the middle of a large frame is
//! sent straight from its payload (8 MiB is about 1024 messages). The
//! receiver feeds every message to a [`Decoder`]. A message is never
//! empty except one: mq_receive(3) has no end of file, so the supervisor's
//! end sends an empty message when it is dropped, and the worker takes it
//! as the end of its channel.
//!
//! The supervisor's [`Parent`] creates both queues (O_CREAT|O_EXCL, mode
//! 0600; a queue of the same name, left by a killed forkd of the same
//! pid, is unlinked and made again), holds them O_NONBLOCK, and owns the
//! names: dropping it unlinks both. The descriptors are pollable (on
//! Linux an mqd_t is an fd), so the loop watches them through mio. The
//! worker's [`Child`] holds blocking descriptors opened by name and never
//! unlinks; an exec'd worker reopens the queues by the names
//! [`Child::exec_setup`] puts in its environment.
//!
//! Syscalls: mq_open, mq_getattr, mq_send, mq_receive, mq_close,
//! mq_unlink. This module never writes the ledger of names (the pool
//! records [`names`] there before calling [`channel`]), never lists
//! /dev/mqueue (it need not be mounted) and never blocks in the
//! supervisor. The supervisor sees no end of file from a worker either:
//! it learns that a worker is gone when it reaps it.
//!
//! Where it bites: queues count against the creating user's
//! RLIMIT_MSGQUEUE (`ulimit -q`, 800 KiB by default, which a forkd without
//! CAP_SYS_RESOURCE cannot raise). A queue of Linux's default ten 8 KiB
//! messages costs about 80 KiB of it, leaving a user four workers; forkd's
//! queues hold four messages (about 33 KiB), so a user's forkds share 24
//! queues: twelve mqueue workers. The next mq_open fails with EMFILE, and
//! the error says why.

use std::io;
use std::mem::ManuallyDrop;
use std::os::fd::{AsRawFd, RawFd};

use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};
use nix::errno::Errno;
use nix::mqueue::{
    mq_attr_member_t, mq_close, mq_getattr, mq_open, mq_receive, mq_send, mq_unlink, MQ_OFlag,
    MqAttr, MqdT,
};
use nix::sys::stat::Mode;

use super::{
    frame, no_eintr, ChannelError, ChannelId, Decoder, ExecSetup, Outbox, Payload, Receive,
};

/// An exec'd worker's request queue (it opens it O_RDONLY).
pub const ENV_REQUESTS: &str = "FORKD_MQ_REQUESTS";
/// An exec'd worker's response queue (it opens it O_WRONLY).
pub const ENV_RESPONSES: &str = "FORKD_MQ_RESPONSES";

/// Messages a queue holds: fewer than the most a process without
/// CAP_SYS_RESOURCE may ask for (`msg_max`, 10), so that RLIMIT_MSGQUEUE
/// leaves room for twelve workers (module doc). 32 KiB in flight each way
/// still keeps a worker busy between the supervisor's wake-ups.
const MAX_MESSAGES: mq_attr_member_t = 4;
/// Bytes a message holds: `fs.mqueue.msgsize_default` and `msgsize_max`.
const MESSAGE_SIZE: mq_attr_member_t = 8192;

/// What one worker's two queues take of RLIMIT_MSGQUEUE: per queue the
/// message bytes plus the kernel's per-message bookkeeping (about 100
/// bytes; mq_open(3), `mq_bytes` in ipc/mqueue.c).
pub const BYTES_PER_WORKER: u64 = 2 * (MAX_MESSAGES as u64) * (MESSAGE_SIZE as u64 + 100);

/// The names of a worker's request and response queues, in that order.
/// The pool records both in its ledger ([`super::names::Ledger::record`]
/// with [`super::names::Kind::Mqueue`]) before calling [`channel`], so
/// that a killed forkd's queues are removed at the next start.
pub fn names(id: ChannelId<'_>) -> [String; 2] {
    [id.name("req"), id.name("rsp")]
}

/// Creates a worker's two queues and opens both ends of each.
pub fn channel(id: ChannelId<'_>, max_frame: usize) -> io::Result<(Parent, Child)> {
    let [req_name, rsp_name] = names(id);
    let (req_owned, requests) = create(&req_name, MQ_OFlag::O_WRONLY)?;
    let (rsp_owned, responses) = create(&rsp_name, MQ_OFlag::O_RDONLY)?;
    let child = Child::open(req_name, rsp_name, max_frame)?;
    let parent = Parent {
        buf: vec![0; responses.msgsize],
        requests,
        responses,
        message: Vec::new(),
        message_frames: 0,
        outbox: Outbox::default(),
        decoder: Decoder::new(max_frame),
        _names: [req_owned, rsp_owned],
    };
    Ok((parent, child))
}

/// One open queue descriptor, closed when dropped (nix's `MqdT` is not),
/// and the message size the kernel gave its queue.
#[derive(Debug)]
struct Queue {
    mqd: ManuallyDrop<MqdT>,
    msgsize: usize,
}

impl Queue {
    /// Opens the existing queue `name` (the worker's ends).
    fn open(name: &str, flags: MQ_OFlag) -> io::Result<Queue> {
        let mqd = mq_open(name, flags | MQ_OFlag::O_CLOEXEC, Mode::empty(), None)
            .map_err(|e| open_error(name, e))?;
        Queue::new(mqd).map_err(|e| open_error(name, e))
    }

    fn new(mqd: MqdT) -> nix::Result<Queue> {
        let mut queue = Queue {
            mqd: ManuallyDrop::new(mqd),
            msgsize: 0,
        };
        let size = mq_getattr(&queue.mqd)?.msgsize();
        // A zero size would make every message the empty end-of-stream one.
        queue.msgsize = usize::try_from(size)
            .ok()
            .filter(|&n| n > 0)
            .ok_or(Errno::EINVAL)?;
        Ok(queue)
    }

    fn raw_fd(&self) -> RawFd {
        self.mqd.as_raw_fd()
    }

    /// Sends one message; `false` when a non-blocking queue is full.
    fn send(&self, message: &[u8]) -> Result<bool, ChannelError> {
        match no_eintr(|| mq_send(&self.mqd, message, 0)) {
            Ok(()) => Ok(true),
            Err(Errno::EAGAIN) => Ok(false),
            Err(e) => Err(self.error(e)),
        }
    }

    /// Receives one message into `buf` (at least `msgsize` long); `None`
    /// when a non-blocking queue is empty.
    fn receive(&self, buf: &mut [u8]) -> Result<Option<usize>, ChannelError> {
        let mut priority = 0;
        match no_eintr(|| mq_receive(&self.mqd, buf, &mut priority)) {
            Ok(n) => Ok(Some(n)),
            Err(Errno::EAGAIN) => Ok(None),
            Err(e) => Err(self.error(e)),
        }
    }

    fn error(&self, e: Errno) -> ChannelError {
        match e {
            Errno::EMSGSIZE => ChannelError::Corrupt(format!(
                "a message does not fit the queue's {}-byte messages",
                self.msgsize
            )),
            e => io::Error::from(e).into(),
        }
    }
}

impl Drop for Queue {
    fn drop(&mut self) {
        // SAFETY: `mqd` is taken here, once, as the queue goes away, and is
        // never used again.
        let mqd = unsafe { ManuallyDrop::take(&mut self.mqd) };
        let _ = mq_close(mqd);
    }
}

/// A queue name this process created; dropping it unlinks the name (the
/// queue itself lives on until its last descriptor closes).
#[derive(Debug)]
struct Owned(String);

impl Drop for Owned {
    fn drop(&mut self) {
        let _ = mq_unlink(self.0.as_str());
    }
}

/// Creates `name` afresh and opens it non-blocking with `flags`.
fn create(name: &str, flags: MQ_OFlag) -> io::Result<(Owned, Queue)> {
    let attr = MqAttr::new(0, MAX_MESSAGES, MESSAGE_SIZE, 0);
    let flags = flags | MQ_OFlag::O_CREAT | MQ_OFlag::O_EXCL | MQ_OFlag::O_NONBLOCK;
    let mode = Mode::S_IRUSR | Mode::S_IWUSR;
    let open = || mq_open(name, flags | MQ_OFlag::O_CLOEXEC, mode, Some(&attr));
    let mqd = match open() {
        // Our pid, so a forkd that was killed before its ledger was swept.
        Err(Errno::EEXIST) => {
            let _ = mq_unlink(name);
            open()
        }
        other => other,
    }
    .map_err(|e| open_error(name, e))?;
    let owned = Owned(name.to_owned());
    let queue = Queue::new(mqd).map_err(|e| open_error(name, e))?;
    Ok((owned, queue))
}

/// mq_open's failure in the operator's words.
fn open_error(name: &str, e: Errno) -> io::Error {
    let hint = match e {
        Errno::EMFILE => {
            " (this user's RLIMIT_MSGQUEUE, `ulimit -q`, is used up: each queue takes about 33 KiB of it, so twelve mqueue workers per user; or the open-file limit is reached)"
        }
        Errno::ENOSPC => " (fs.mqueue.queues_max is reached)",
        Errno::EINVAL => {
            " (the system allows fewer than 4 messages of 8192 bytes: fs.mqueue.msg_max, msgsize_max)"
        }
        Errno::ENOSYS => " (this kernel has no POSIX message queues)",
        Errno::ENOENT => " (the supervisor has dropped this channel)",
        Errno::EACCES => " (the queue belongs to another user: mode 0600)",
        _ => "",
    };
    io::Error::new(
        io::Error::from(e).kind(),
        format!("mq_open {name}: {e}{hint}"),
    )
}

/// A worker's descriptor said EAGAIN: it was opened blocking, so something
/// other than this module changed it.
fn not_blocking() -> ChannelError {
    ChannelError::Corrupt("the worker's queue descriptor is non-blocking".into())
}

/// Appends to `message` as much of `head` then `body` as fits in `size`
/// bytes; returns how much it took.
fn fill(message: &mut Vec<u8>, size: usize, head: &[u8], body: &[u8]) -> usize {
    let room = size - message.len();
    let head = &head[..head.len().min(room)];
    let body = &body[..body.len().min(room - head.len())];
    message.extend_from_slice(head);
    message.extend_from_slice(body);
    head.len() + body.len()
}

/// The supervisor's end: non-blocking, and the owner of both names.
#[derive(Debug)]
pub struct Parent {
    /// O_WRONLY | O_NONBLOCK.
    requests: Queue,
    /// O_RDONLY | O_NONBLOCK.
    responses: Queue,
    /// The next request message, already cut off the outbox, that the
    /// queue refused (full) so far; empty when none.
    message: Vec<u8>,
    /// Frames whose last byte is in `message` (still queued, see
    /// [`Parent::queued`]).
    message_frames: usize,
    outbox: Outbox,
    decoder: Decoder,
    /// One response message.
    buf: Vec<u8>,
    /// Unlinked after the descriptors above are closed.
    _names: [Owned; 2],
}

impl Parent {
    /// With nothing queued before it, a frame that fits in one message is
    /// that message, cut straight from `payload` (the outbox is skipped).
    pub fn send(&mut self, payload: Payload) -> Result<(), ChannelError> {
        let size = self.requests.msgsize;
        let nothing_queued = self.outbox.is_empty() && self.message.is_empty();
        if nothing_queued && frame::HEADER + payload.len() <= size {
            fill(
                &mut self.message,
                size,
                &frame::header(payload.len()),
                &payload,
            );
            self.message_frames = 1;
            return self.flush().map(drop);
        }
        self.outbox.push(payload);
        self.flush().map(drop)
    }

    pub fn queue(&mut self, payload: Payload) -> Result<(), ChannelError> {
        self.outbox.push(payload);
        Ok(())
    }

    pub fn flush(&mut self) -> Result<bool, ChannelError> {
        let size = self.requests.msgsize;
        loop {
            if self.message.is_empty() {
                let (head, body) = self.outbox.front();
                if head.is_empty() && body.is_empty() {
                    return Ok(true);
                }
                // The middle of a large frame: straight from its payload.
                if head.is_empty() && body.len() >= size {
                    if !self.requests.send(&body[..size])? {
                        return Ok(false);
                    }
                    self.outbox.advance(size);
                    continue;
                }
                self.cut_message();
            }
            if !self.requests.send(&self.message)? {
                return Ok(false);
            }
            self.message.clear();
            self.message_frames = 0;
        }
    }

    /// Cuts the next message off the outbox, across frame boundaries: as
    /// many queued bytes as fit in one message.
    fn cut_message(&mut self) {
        let size = self.requests.msgsize;
        let before = self.outbox.len();
        while self.message.len() < size {
            let (head, body) = self.outbox.front();
            if head.is_empty() && body.is_empty() {
                break;
            }
            let taken = fill(&mut self.message, size, head, body);
            self.outbox.advance(taken);
        }
        self.message_frames = before - self.outbox.len();
    }

    pub fn recv(&mut self) -> Result<Option<Vec<u8>>, ChannelError> {
        loop {
            if let Some(frame) = self.decoder.next_frame()? {
                return Ok(Some(frame));
            }
            match self.responses.receive(&mut self.buf)? {
                None => return Ok(None),
                Some(0) => return Err(ChannelError::Closed),
                Some(n) => self.decoder.extend(&self.buf[..n]),
            }
        }
    }

    pub fn register(&mut self, registry: &Registry, token: Token) -> io::Result<()> {
        let (w, r) = (self.requests.raw_fd(), self.responses.raw_fd());
        registry.register(&mut SourceFd(&r), token, Interest::READABLE)?;
        registry.register(&mut SourceFd(&w), token, Interest::WRITABLE)
    }

    pub fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        let (w, r) = (self.requests.raw_fd(), self.responses.raw_fd());
        registry.deregister(&mut SourceFd(&r))?;
        registry.deregister(&mut SourceFd(&w))
    }

    pub fn queued(&self) -> usize {
        self.outbox.len() + self.message_frames
    }
}

impl Drop for Parent {
    fn drop(&mut self) {
        // The worker's end of file. Best effort: if the queue is full the
        // worker is still reading, and the pool stops it by signal.
        let _ = self.requests.send(&[]);
    }
}

/// The worker's end: blocking, and never unlinks.
#[derive(Debug)]
pub struct Child {
    /// O_RDONLY.
    requests: Queue,
    /// O_WRONLY.
    responses: Queue,
    /// Request and response queue names, for an exec'd worker.
    names: [String; 2],
    decoder: Decoder,
    /// One request message.
    incoming: Vec<u8>,
    /// One response message, when it is copied together.
    outgoing: Vec<u8>,
    max_frame: usize,
}

impl Child {
    /// An exec'd worker's end, reopened by the names in its environment.
    pub fn from_env(max_frame: usize) -> Result<Child, ChannelError> {
        let var = |name: &str| {
            std::env::var(name).map_err(|_| {
                ChannelError::Corrupt(format!(
                    "{name} is not set: is this process a forkd pool worker?"
                ))
            })
        };
        let (requests, responses) = (var(ENV_REQUESTS)?, var(ENV_RESPONSES)?);
        Ok(Child::open(requests, responses, max_frame)?)
    }

    fn open(requests: String, responses: String, max_frame: usize) -> io::Result<Child> {
        let req = Queue::open(&requests, MQ_OFlag::O_RDONLY)?;
        let rsp = Queue::open(&responses, MQ_OFlag::O_WRONLY)?;
        Ok(Child {
            incoming: vec![0; req.msgsize],
            outgoing: Vec::with_capacity(rsp.msgsize),
            requests: req,
            responses: rsp,
            names: [requests, responses],
            decoder: Decoder::new(max_frame),
            max_frame,
        })
    }

    pub fn send(&mut self, payload: &[u8]) -> Result<(), ChannelError> {
        let head = frame::header(payload.len());
        let size = self.responses.msgsize;
        let mut sent = 0;
        while sent < frame::HEADER + payload.len() {
            let head_rest = &head[sent.min(frame::HEADER)..];
            let body_rest = &payload[sent.saturating_sub(frame::HEADER)..];
            let message = if head_rest.is_empty() && body_rest.len() >= size {
                &body_rest[..size]
            } else {
                self.outgoing.clear();
                fill(&mut self.outgoing, size, head_rest, body_rest);
                &self.outgoing[..]
            };
            if !self.responses.send(message)? {
                return Err(not_blocking());
            }
            sent += message.len();
        }
        Ok(())
    }

    pub fn fds(&self) -> Vec<RawFd> {
        vec![self.requests.raw_fd(), self.responses.raw_fd()]
    }

    pub fn exec_setup(&self) -> ExecSetup {
        let [requests, responses] = self.names.clone();
        ExecSetup {
            env: vec![
                (ENV_REQUESTS.into(), requests),
                (ENV_RESPONSES.into(), responses),
            ],
            ..ExecSetup::default()
        }
    }

    pub fn max_frame(&self) -> usize {
        self.max_frame
    }
}

impl Receive for Child {
    fn decoder(&mut self) -> &mut Decoder {
        &mut self.decoder
    }

    fn await_frame(&mut self) -> Result<bool, ChannelError> {
        while !self.decoder.has_frame()? {
            match self.requests.receive(&mut self.incoming)? {
                Some(0) if self.decoder.pending() == 0 => return Ok(false),
                Some(0) => {
                    let have = self.decoder.pending();
                    return Err(frame::FrameError::Truncated { have }.into());
                }
                Some(n) => self.decoder.extend(&self.incoming[..n]),
                None => return Err(not_blocking()),
            }
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use std::rc::Rc;
    use std::sync::{Mutex, MutexGuard};
    use std::time::{Duration, Instant};

    use mio::{Events, Poll};

    use super::*;

    /// Each channel takes about 160 KiB of this user's RLIMIT_MSGQUEUE
    /// (800 KiB by default): one at a time keeps the tests clear of it
    /// however many threads libtest runs.
    static ONE_CHANNEL_AT_A_TIME: Mutex<()> = Mutex::new(());

    fn one_channel_at_a_time() -> MutexGuard<'static, ()> {
        ONE_CHANNEL_AT_A_TIME
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn id(test: &'static str) -> ChannelId<'static> {
        ChannelId {
            pid: std::process::id(),
            pool: test,
            worker: 0,
        }
    }

    /// A fresh channel for `test`, whatever an earlier failed run left.
    fn test_channel(test: &'static str, max_frame: usize) -> (Parent, Child) {
        for name in names(id(test)) {
            let _ = mq_unlink(name.as_str());
        }
        channel(id(test), max_frame).expect("queues are created")
    }

    /// A worker thread answering each request with its bytes reversed,
    /// until the supervisor's end is dropped.
    fn reversing_worker(mut child: Child) -> std::thread::JoinHandle<()> {
        std::thread::spawn(move || {
            while let Some(req) = child.recv().expect("requests arrive whole") {
                let rsp: Vec<u8> = req.iter().rev().copied().collect();
                child.send(&rsp).expect("responses go out");
            }
        })
    }

    /// Collects `n` responses the way the supervisor's loop does: drain
    /// and flush on each readiness event, never blocking on the channel.
    fn responses(parent: &mut Parent, n: usize) -> Vec<Vec<u8>> {
        let mut poll = Poll::new().unwrap();
        parent.register(poll.registry(), Token(0)).unwrap();
        let mut events = Events::with_capacity(8);
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut got = Vec::new();
        loop {
            while let Some(frame) = parent.recv().expect("channel works") {
                got.push(frame);
            }
            parent.flush().expect("channel works");
            if got.len() >= n {
                break;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "{} of {n} responses within 30 s",
                got.len()
            );
            poll.poll(&mut events, Some(left)).unwrap();
        }
        parent.deregister(poll.registry()).unwrap();
        got
    }

    fn pattern(len: usize, seed: usize) -> Vec<u8> {
        (0..len).map(|i| ((i + seed) % 251) as u8).collect()
    }

    #[test]
    fn frames_of_every_size_cross_both_ways_with_a_worker_thread() {
        let _lock = one_channel_at_a_time();
        let (mut parent, child) = test_channel("mqtest-sizes", 16 << 20);
        assert_eq!(parent.requests.msgsize, 8192);
        let worker = reversing_worker(child);
        for len in [0usize, 1, 64, 64 << 10, 1 << 20, 8 << 20] {
            let payload = pattern(len, 0);
            parent.send(Rc::new(payload.clone())).unwrap();
            let got = responses(&mut parent, 1);
            assert_eq!(got.len(), 1);
            assert_eq!(got[0].len(), len);
            assert!(
                got[0].iter().rev().eq(payload.iter()),
                "{len}-byte payload reversed"
            );
        }
        drop(parent);
        worker.join().unwrap();
    }

    #[test]
    fn a_thousand_pipelined_frames_wait_in_the_outbox_while_the_queue_is_full() {
        let _lock = one_channel_at_a_time();
        let (mut parent, child) = test_channel("mqtest-pipelined", 1 << 20);
        let (start, started) = std::sync::mpsc::channel::<()>();
        let worker = std::thread::spawn(move || {
            started.recv().unwrap();
            reversing_worker(child).join().unwrap();
        });
        // Sizes that end frames at every offset of a message.
        let requests: Vec<Vec<u8>> = (0..1000).map(|i| pattern(i * 37 % 3001, i)).collect();
        for req in &requests {
            parent.send(Rc::new(req.clone())).unwrap();
        }
        // 1.5 MB against a queue of 80 KiB that nobody reads yet.
        assert!(parent.queued() > 900, "queued {}", parent.queued());
        assert!(!parent.flush().unwrap(), "the request queue is full");
        start.send(()).unwrap();
        let got = responses(&mut parent, requests.len());
        assert_eq!(got.len(), requests.len());
        for (i, (req, rsp)) in requests.iter().zip(&got).enumerate() {
            assert!(req.iter().rev().eq(rsp.iter()), "frame {i} in order");
        }
        assert_eq!(parent.queued(), 0);
        drop(parent);
        worker.join().unwrap();
    }

    #[test]
    fn dropping_the_supervisors_end_ends_the_workers_and_unlinks_both_names() {
        let _lock = one_channel_at_a_time();
        let (parent, mut child) = test_channel("mqtest-drop", 1024);
        drop(parent);
        assert!(child.recv().unwrap().is_none(), "the worker sees the end");
        for name in names(id("mqtest-drop")) {
            let again = mq_open(name.as_str(), MQ_OFlag::O_RDONLY, Mode::empty(), None);
            assert_eq!(again.err(), Some(Errno::ENOENT), "{name} is unlinked");
        }
    }

    #[test]
    fn a_frame_over_max_frame_is_an_error_at_either_end() {
        let _lock = one_channel_at_a_time();
        let (mut parent, mut child) = test_channel("mqtest-max", 16);
        child.send(&[7; 17]).unwrap();
        assert!(matches!(
            parent.recv(),
            Err(ChannelError::Frame(frame::FrameError::TooLarge {
                len: 17,
                max: 16
            }))
        ));
        parent.send(Rc::new(vec![7; 17])).unwrap();
        assert!(matches!(
            child.recv(),
            Err(ChannelError::Frame(frame::FrameError::TooLarge {
                len: 17,
                max: 16
            }))
        ));
    }

    #[test]
    fn a_queue_left_by_a_killed_forkd_of_the_same_pid_is_made_again() {
        let _lock = one_channel_at_a_time();
        let [requests, _] = names(id("mqtest-stale"));
        let _ = mq_unlink(requests.as_str());
        let flags = MQ_OFlag::O_CREAT | MQ_OFlag::O_RDWR;
        let small = MqAttr::new(0, 2, 64, 0);
        let stale = mq_open(requests.as_str(), flags, Mode::S_IRUSR, Some(&small)).unwrap();
        mq_close(stale).unwrap();
        let (parent, _child) = channel(id("mqtest-stale"), 1024).unwrap();
        assert_eq!(parent.requests.msgsize, 8192, "made with forkd's sizes");
    }

    #[test]
    fn an_execd_worker_reopens_its_queues_by_the_names_in_its_environment() {
        let _lock = one_channel_at_a_time();
        let (mut parent, child) = test_channel("mqtest-exec", 1024);
        let setup = child.exec_setup();
        assert!(setup.keep.is_empty() && setup.stdin.is_none() && setup.stdout.is_none());
        let env = |key: &str| {
            let (_, value) = setup.env.iter().find(|(k, _)| k == key).expect(key);
            value.clone()
        };
        let [requests, responses] = names(id("mqtest-exec"));
        assert_eq!(env(ENV_REQUESTS), requests);
        assert_eq!(env(ENV_RESPONSES), responses);
        drop(child);
        let mut reopened = Child::open(env(ENV_REQUESTS), env(ENV_RESPONSES), 1024).unwrap();
        parent.send(Rc::new(b"ping".to_vec())).unwrap();
        assert_eq!(reopened.recv().unwrap().unwrap(), b"ping");
        reopened.send(b"pong").unwrap();
        assert_eq!(parent.recv().unwrap().unwrap(), b"pong");
    }
}
