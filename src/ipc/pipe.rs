//! The pipe transport: a request pipe (supervisor → worker) and a response
//! pipe (worker → supervisor), carrying frames back to back. Both are made
//! 1 MiB deep where the system allows (fs.pipe-max-size), so a large frame
//! crosses in few wake-ups. An exec'd worker gets them as stdin and stdout.
//!
//! Both ends read straight into their [`Decoder`] (a large frame into the
//! `Vec` it is returned in, with no zeroing first) and write a small frame
//! (or a run of small ones) with one `write(2)` of a copy in a reused
//! buffer, a large one with `writev(2)` of header and payload: no pass
//! over a payload that the pipe itself does not force.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};
use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};

use super::frame::Filled;
use super::{frame, no_eintr, ChannelError, Decoder, Drain, ExecSetup, Outbox, Payload, Receive};

/// Wished pipe capacity; the kernel keeps the default (64 KiB) if refused.
const PIPE_SIZE: i32 = 1 << 20;
/// Bytes read per `read(2)` between frames (a burst of small ones).
const READ_CHUNK: usize = 64 << 10;
/// Bytes read per `read(2)` into a large frame's own `Vec`: the pipe's
/// whole depth.
const READ_LARGE: usize = PIPE_SIZE as usize;
/// A frame part up to this size is copied together and written with one
/// `write(2)`: cheaper than the kernel importing a two-slice `writev`.
const SMALL_WRITE: usize = 512;
/// Most bytes of small frames the parent copies together for one write.
const BATCH_WRITE: usize = 16 << 10;

pub fn channel(max_frame: usize) -> io::Result<(Parent, Child)> {
    let (req_r, req_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
    let (rsp_r, rsp_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
    for fd in [&req_w, &rsp_r] {
        fcntl(fd, FcntlArg::F_SETFL(OFlag::O_NONBLOCK))?;
        // Best effort: a smaller pipe only costs more wake-ups.
        let _ = fcntl(fd, FcntlArg::F_SETPIPE_SZ(PIPE_SIZE));
    }
    let parent = Parent {
        requests: req_w,
        responses: rsp_r,
        outbox: Outbox::default(),
        decoder: Decoder::new(max_frame),
        staging: Vec::with_capacity(SMALL_WRITE),
        drain: Drain::default(),
    };
    let child = Child::new(req_r, rsp_w, max_frame);
    Ok((parent, child))
}

#[derive(Debug)]
pub struct Parent {
    requests: OwnedFd,
    responses: OwnedFd,
    outbox: Outbox,
    decoder: Decoder,
    /// A small frame copied together for one `write(2)`.
    staging: Vec<u8>,
    /// Once the frames a short read brought are handed out, `recv` says
    /// "nothing more" without the read that would only fail with EAGAIN.
    pub(super) drain: Drain,
}

impl Parent {
    /// With nothing queued before it, the frame is written straight from
    /// `payload` and only what the pipe did not take is queued: a frame
    /// the pipe takes whole never enters the outbox.
    pub fn send(&mut self, payload: Payload) -> Result<(), ChannelError> {
        if self.outbox.is_empty() {
            let head = frame::header(payload.len());
            let wrote = write_parts(self.requests.as_fd(), &mut self.staging, &head, &payload);
            let n = written(wrote)?.unwrap_or(0);
            if n == frame::HEADER + payload.len() {
                return Ok(());
            }
            // The pipe is full now: the loop says when it has room.
            self.outbox.push(payload);
            self.outbox.advance(n);
            return Ok(());
        }
        self.outbox.push(payload);
        self.flush().map(drop)
    }

    pub fn queue(&mut self, payload: Payload) -> Result<(), ChannelError> {
        self.outbox.push(payload);
        Ok(())
    }

    /// Writes queued frames: small ones several to a `write(2)` (copied
    /// together, up to [`BATCH_WRITE`] bytes), a large one as `writev` of
    /// its header and payload.
    pub fn flush(&mut self) -> Result<bool, ChannelError> {
        loop {
            let (head, body) = self.outbox.front();
            if head.is_empty() && body.is_empty() {
                return Ok(true);
            }
            let wrote = if head.len() + body.len() <= SMALL_WRITE {
                self.staging.clear();
                self.outbox
                    .copy_small(&mut self.staging, BATCH_WRITE, SMALL_WRITE);
                no_eintr(|| nix::unistd::write(&self.requests, &self.staging))
            } else {
                write_parts(self.requests.as_fd(), &mut self.staging, head, body)
            };
            match written(wrote)? {
                Some(n) => self.outbox.advance(n),
                None => return Ok(false),
            }
        }
    }

    pub fn recv(&mut self) -> Result<Option<Vec<u8>>, ChannelError> {
        loop {
            if let Some(frame) = self.decoder.next_frame()? {
                return Ok(Some(frame));
            }
            if self.drain.stop() {
                return Ok(None);
            }
            match read_into(self.responses.as_fd(), &mut self.decoder) {
                Ok(Filled { got: 0, .. }) => return Err(ChannelError::Closed),
                Ok(read) => self.drain.read(read.short),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.drain.empty();
                    return Ok(None);
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    pub fn register(&mut self, registry: &Registry, token: Token) -> io::Result<()> {
        let (w, r) = (self.requests.as_raw_fd(), self.responses.as_raw_fd());
        registry.register(&mut SourceFd(&r), token, Interest::READABLE)?;
        registry.register(&mut SourceFd(&w), token, Interest::WRITABLE)
    }

    pub fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        let (w, r) = (self.requests.as_raw_fd(), self.responses.as_raw_fd());
        registry.deregister(&mut SourceFd(&r))?;
        registry.deregister(&mut SourceFd(&w))
    }

    pub fn queued(&self) -> usize {
        self.outbox.len()
    }
}

#[derive(Debug)]
pub struct Child {
    requests: OwnedFd,
    responses: OwnedFd,
    decoder: Decoder,
    /// A small frame copied together for one `write(2)`.
    staging: Vec<u8>,
    max_frame: usize,
}

impl Child {
    fn new(requests: OwnedFd, responses: OwnedFd, max_frame: usize) -> Child {
        Child {
            requests,
            responses,
            decoder: Decoder::new(max_frame),
            staging: Vec::with_capacity(SMALL_WRITE),
            max_frame,
        }
    }

    /// An exec'd worker's end: frames on stdin, results on stdout.
    pub fn from_stdio(max_frame: usize) -> Child {
        // SAFETY: fds 0 and 1 are this worker's channel (exec_setup put the
        // pipes there), owned from here on by this process's only end.
        let (stdin, stdout) = unsafe {
            use std::os::fd::FromRawFd;
            (OwnedFd::from_raw_fd(0), OwnedFd::from_raw_fd(1))
        };
        Child::new(stdin, stdout, max_frame)
    }

    pub fn send(&mut self, payload: &[u8]) -> Result<(), ChannelError> {
        let head = frame::header(payload.len());
        let mut done = 0;
        while done < frame::HEADER + payload.len() {
            let head_rest = &head[done.min(frame::HEADER)..];
            let body_rest = &payload[done.saturating_sub(frame::HEADER)..];
            match write_parts(
                self.responses.as_fd(),
                &mut self.staging,
                head_rest,
                body_rest,
            ) {
                Ok(0) => return Err(ChannelError::Closed),
                Ok(n) => done += n,
                Err(Errno::EPIPE) => return Err(ChannelError::Closed),
                Err(e) => return Err(io::Error::from(e).into()),
            }
        }
        Ok(())
    }

    pub fn fds(&self) -> Vec<RawFd> {
        vec![self.requests.as_raw_fd(), self.responses.as_raw_fd()]
    }

    pub fn exec_setup(&self) -> ExecSetup {
        ExecSetup {
            stdin: Some(self.requests.as_raw_fd()),
            stdout: Some(self.responses.as_raw_fd()),
            ..ExecSetup::default()
        }
    }

    pub fn max_frame(&self) -> usize {
        self.max_frame
    }
}

/// Writes what it can of `head` then `body` (one frame's unwritten rest)
/// with one syscall: a `write(2)` of both copied into `staging` when they
/// are small, a `writev(2)` otherwise. Retries EINTR.
fn write_parts(
    fd: BorrowedFd<'_>,
    staging: &mut Vec<u8>,
    head: &[u8],
    body: &[u8],
) -> nix::Result<usize> {
    if head.len() + body.len() <= SMALL_WRITE {
        staging.clear();
        staging.extend_from_slice(head);
        staging.extend_from_slice(body);
        return no_eintr(|| nix::unistd::write(fd, staging));
    }
    let slices = [io::IoSlice::new(head), io::IoSlice::new(body)];
    no_eintr(|| nix::sys::uio::writev(fd, &slices))
}

/// A non-blocking write's outcome: the bytes taken, `None` for a full
/// pipe (EAGAIN), `Closed` once the worker's end is gone (EPIPE).
fn written(wrote: nix::Result<usize>) -> Result<Option<usize>, ChannelError> {
    match wrote {
        Ok(n) => Ok(Some(n)),
        Err(Errno::EAGAIN) => Ok(None),
        Err(Errno::EPIPE) => Err(ChannelError::Closed),
        Err(e) => Err(io::Error::from(e).into()),
    }
}

/// One `read(2)` from `fd` straight into `decoder`'s next bytes.
fn read_into(fd: BorrowedFd<'_>, decoder: &mut Decoder) -> io::Result<Filled> {
    decoder.read_with(READ_CHUNK, READ_LARGE, |into, want| {
        super::read_spare(fd, into, want)
    })
}

impl Receive for Child {
    fn decoder(&mut self) -> &mut Decoder {
        &mut self.decoder
    }

    fn await_frame(&mut self) -> Result<bool, ChannelError> {
        while !self.decoder.has_frame()? {
            match read_into(self.requests.as_fd(), &mut self.decoder) {
                Ok(Filled { got: 0, .. }) if self.decoder.pending() == 0 => return Ok(false),
                Ok(Filled { got: 0, .. }) => {
                    let have = self.decoder.pending();
                    return Err(frame::FrameError::Truncated { have }.into());
                }
                Ok(_) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use std::rc::Rc;
    use std::time::Duration;

    use super::*;

    /// Waits until `parent` has a response (the loop would be woken).
    pub(crate) fn recv_within(parent: &mut super::super::Parent) -> Vec<u8> {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(frame) = parent.recv().expect("channel works") {
                return frame;
            }
            parent.flush().expect("channel works");
            assert!(
                std::time::Instant::now() < deadline,
                "no response within 10 s"
            );
            std::thread::yield_now();
        }
    }

    #[test]
    fn a_short_read_ends_a_drain_and_a_hang_up_reads_on_to_the_end() {
        let (parent, mut child) = channel(1 << 20).unwrap();
        let mut parent = super::super::Parent::Pipe(parent);
        child.send(b"one").unwrap();
        child.send(b"two").unwrap();
        drop(child);
        assert_eq!(parent.recv().unwrap().as_deref(), Some(&b"one"[..]));
        assert_eq!(parent.recv().unwrap().as_deref(), Some(&b"two"[..]));
        // The read that brought both was short: the pipe was empty then,
        // so no read is made for what a new edge would announce.
        assert_eq!(parent.recv().unwrap(), None);
        // The loop's event said the worker's end may have hung up.
        parent.ready(crate::ipc::Hangup::Possible);
        assert!(matches!(parent.recv(), Err(ChannelError::Closed)));
    }

    #[test]
    fn frames_cross_both_ways_with_a_worker_thread() {
        let (parent, mut child) = channel(16 << 20).unwrap();
        let mut parent = super::super::Parent::Pipe(parent);
        let worker = std::thread::spawn(move || {
            while let Some(req) = child.recv().unwrap() {
                let rsp: Vec<u8> = req.iter().rev().copied().collect();
                child.send(&rsp).unwrap();
            }
        });
        for len in [0usize, 1, 64, 64 << 10, 1 << 20, 8 << 20] {
            let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            parent.send(Rc::new(payload.clone())).unwrap();
            let got = recv_within(&mut parent);
            assert_eq!(got.len(), len);
            assert!(
                got.iter().rev().eq(payload.iter()),
                "{len}-byte payload reversed"
            );
        }
        drop(parent);
        worker.join().unwrap();
    }

    #[test]
    fn queued_small_frames_are_written_by_one_flush_and_arrive_whole() {
        let (mut parent, mut child) = channel(1 << 20).unwrap();
        let frames: Vec<Vec<u8>> = (0..100u8).map(|i| vec![i; usize::from(i)]).collect();
        for f in &frames {
            parent.queue(Rc::new(f.clone())).unwrap();
        }
        assert_eq!(parent.queued(), 100, "queue writes nothing");
        assert!(parent.flush().unwrap(), "all taken by the pipe");
        assert_eq!(parent.queued(), 0);
        for f in &frames {
            assert_eq!(child.recv().unwrap(), Some(&f[..]));
        }
    }

    #[test]
    fn a_burst_of_small_and_large_frames_arrives_in_order() {
        let (mut parent, mut child) = channel(4 << 20).unwrap();
        let frames: Vec<Vec<u8>> = [7usize, 512, 509, 1 << 20, 0, 3, (2 << 20) + 1, 64]
            .iter()
            .enumerate()
            .map(|(i, &len)| (0..len).map(|b| ((b + i) % 251) as u8).collect())
            .collect();
        let sent = frames.clone();
        let worker = std::thread::spawn(move || {
            for f in &sent {
                assert_eq!(child.recv().unwrap(), Some(&f[..]));
                child.send(f).unwrap();
            }
            assert!(child.recv().unwrap().is_none(), "a clean end");
        });
        for f in &frames {
            parent.send(Rc::new(f.clone())).unwrap();
        }
        let mut parent = super::super::Parent::Pipe(parent);
        for f in &frames {
            assert_eq!(&recv_within(&mut parent), f);
        }
        drop(parent);
        worker.join().unwrap();
    }

    #[test]
    fn a_frame_cut_short_by_the_end_of_the_pipe_is_an_error() {
        let (parent, mut child) = channel(1024).unwrap();
        let cut = [&frame::header(9)[..], b"12345"].concat();
        assert_eq!(nix::unistd::write(&parent.requests, &cut), Ok(cut.len()));
        drop(parent);
        assert!(matches!(
            child.recv(),
            Err(ChannelError::Frame(frame::FrameError::Truncated {
                have: 9
            }))
        ));
    }
}
