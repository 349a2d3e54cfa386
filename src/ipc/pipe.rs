//! The pipe transport: a request pipe (supervisor → worker) and a response
//! pipe (worker → supervisor), carrying frames back to back. Both are made
//! 1 MiB deep where the system allows (fs.pipe-max-size), so a large frame
//! crosses in few wake-ups. An exec'd worker gets them as stdin and stdout.

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};

use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};
use nix::fcntl::{fcntl, FcntlArg, OFlag};

use super::{frame, no_eintr, ChannelError, Decoder, ExecSetup, Outbox, Payload};

/// Wished pipe capacity; the kernel keeps the default (64 KiB) if refused.
const PIPE_SIZE: i32 = 1 << 20;
/// Bytes read per `read(2)` on the supervisor's side.
const READ_CHUNK: usize = 64 << 10;

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
        buf: Vec::new(),
    };
    let child = Child {
        requests: io::BufReader::with_capacity(READ_CHUNK, std::fs::File::from(req_r)),
        responses: std::fs::File::from(rsp_w),
        max_frame,
    };
    Ok((parent, child))
}

#[derive(Debug)]
pub struct Parent {
    requests: OwnedFd,
    responses: OwnedFd,
    outbox: Outbox,
    decoder: Decoder,
    buf: Vec<u8>,
}

impl Parent {
    pub fn send(&mut self, payload: Payload) -> Result<(), ChannelError> {
        self.outbox.push(payload);
        self.flush().map(drop)
    }

    pub fn flush(&mut self) -> Result<bool, ChannelError> {
        loop {
            let (head, body) = self.outbox.front();
            if head.is_empty() && body.is_empty() {
                return Ok(true);
            }
            let slices = [io::IoSlice::new(head), io::IoSlice::new(body)];
            match no_eintr(|| nix::sys::uio::writev(&self.requests, &slices)) {
                Ok(n) => self.outbox.advance(n),
                Err(nix::errno::Errno::EAGAIN) => return Ok(false),
                Err(nix::errno::Errno::EPIPE) => return Err(ChannelError::Closed),
                Err(e) => return Err(io::Error::from(e).into()),
            }
        }
    }

    pub fn recv(&mut self) -> Result<Option<Vec<u8>>, ChannelError> {
        loop {
            if let Some(frame) = self.decoder.next_frame()? {
                return Ok(Some(frame));
            }
            if self.buf.len() < READ_CHUNK {
                self.buf.resize(READ_CHUNK, 0);
            }
            match no_eintr(|| nix::unistd::read(&self.responses, &mut self.buf)) {
                Ok(0) => return Err(ChannelError::Closed),
                Ok(n) => self.decoder.extend(&self.buf[..n]),
                Err(nix::errno::Errno::EAGAIN) => return Ok(None),
                Err(e) => return Err(io::Error::from(e).into()),
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
    requests: io::BufReader<std::fs::File>,
    responses: std::fs::File,
    max_frame: usize,
}

impl Child {
    /// An exec'd worker's end: frames on stdin, results on stdout.
    pub fn from_stdio(max_frame: usize) -> Child {
        // SAFETY: fds 0 and 1 are this worker's channel (exec_setup put the
        // pipes there), owned from here on by this process's only end.
        let (stdin, stdout) = unsafe {
            use std::os::fd::FromRawFd;
            (std::fs::File::from_raw_fd(0), std::fs::File::from_raw_fd(1))
        };
        Child {
            requests: io::BufReader::with_capacity(READ_CHUNK, stdin),
            responses: stdout,
            max_frame,
        }
    }

    pub fn recv(&mut self) -> Result<Option<Vec<u8>>, ChannelError> {
        Ok(frame::read_frame(&mut self.requests, self.max_frame)?)
    }

    pub fn send(&mut self, payload: &[u8]) -> Result<(), ChannelError> {
        let head = frame::header(payload.len());
        let mut slices = [io::IoSlice::new(&head), io::IoSlice::new(payload)];
        let mut slices = &mut slices[..];
        // write_all_vectored is unstable: the same loop by hand.
        while !slices.is_empty() {
            match self.responses.write_vectored(slices) {
                Ok(0) => return Err(ChannelError::Closed),
                Ok(n) => io::IoSlice::advance_slices(&mut slices, n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                    return Err(ChannelError::Closed)
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    pub fn fds(&self) -> Vec<RawFd> {
        vec![
            self.requests.get_ref().as_raw_fd(),
            self.responses.as_raw_fd(),
        ]
    }

    pub fn exec_setup(&self) -> ExecSetup {
        ExecSetup {
            stdin: Some(self.requests.get_ref().as_fd().as_raw_fd()),
            stdout: Some(self.responses.as_raw_fd()),
            ..ExecSetup::default()
        }
    }

    pub fn max_frame(&self) -> usize {
        self.max_frame
    }
}

impl Read for Child {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.requests.read(buf)
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
    fn frames_cross_both_ways_with_a_worker_thread() {
        let (parent, mut child) = channel(16 << 20).unwrap();
        let mut parent = super::super::Parent::Pipe(parent);
        let worker = std::thread::spawn(move || {
            while let Some(req) = child.recv().unwrap() {
                child
                    .send(&req.iter().rev().copied().collect::<Vec<u8>>())
                    .unwrap();
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
}
