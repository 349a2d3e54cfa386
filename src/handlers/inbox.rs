//! [`Inbox`]: messages from the supervisor to the worker that holds a
//! handler's datagram state (`forkctl chat` to a chat room's worker #0).
//!
//! It is a `SOCK_SEQPACKET` socket pair made when the handler is built, in
//! the supervisor, before any fork: one message per `send(2)`, boundaries
//! kept, both ends `O_CLOEXEC` and non-blocking. The supervisor writes on
//! one end and never waits: a full queue is refused as [`PostError::Full`].
//! Every worker inherits the other end (the handler names it in
//! `Handler::keep_open`, and child set-up closes the writing end), and the
//! worker serving the datagram sockets polls it beside them; a worker
//! forked after a crash inherits it the same way, so nothing has to be
//! handed over again. The supervisor keeps its copy of the reading end
//! open too, so a post never fails with `EPIPE` while no worker is alive;
//! the caller checks that one is. No threads, no allocation per message
//! on the reading side beyond the caller's buffer.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use nix::errno::Errno;
use nix::sys::socket::{self, AddressFamily, MsgFlags, SockFlag, SockType};

/// The supervisor's side and the workers' side of one handler's messages.
#[derive(Debug)]
pub struct Inbox {
    writer: OwnedFd,
    reader: OwnedFd,
    /// The longest message [`Inbox::post`] takes.
    max: usize,
}

/// Why a message was not posted.
#[derive(Debug, thiserror::Error)]
pub enum PostError {
    #[error("the text is {len} bytes; the most one datagram carries here is {max} bytes")]
    TooLong { len: usize, max: usize },
    #[error("the worker has not read the messages sent before; try again in a moment")]
    Full,
    #[error("cannot send to the worker: {0}")]
    Failed(io::Error),
}

impl Inbox {
    /// A new pair taking messages of up to `max` bytes.
    pub fn new(max: usize) -> io::Result<Inbox> {
        let flags = SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK;
        let (writer, reader) =
            socket::socketpair(AddressFamily::Unix, SockType::SeqPacket, None, flags)?;
        Ok(Inbox {
            writer,
            reader,
            max,
        })
    }

    pub fn max(&self) -> usize {
        self.max
    }

    /// Supervisor side: queues one message; never blocks.
    pub fn post(&self, message: &[u8]) -> Result<(), PostError> {
        if message.len() > self.max {
            return Err(PostError::TooLong {
                len: message.len(),
                max: self.max,
            });
        }
        let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL;
        loop {
            match socket::send(self.writer.as_raw_fd(), message, flags) {
                Ok(_) => return Ok(()),
                Err(Errno::EINTR) => continue,
                Err(Errno::EAGAIN | Errno::ENOBUFS) => return Err(PostError::Full),
                Err(e) => return Err(PostError::Failed(e.into())),
            }
        }
    }

    /// Worker side: the descriptor to poll (and to keep open in children).
    pub fn reader(&self) -> BorrowedFd<'_> {
        self.reader.as_fd()
    }

    /// Worker side: the next message into `buf` (sized by
    /// [`Inbox::buffer`]), `None` when none is waiting.
    pub fn receive<'b>(&self, buf: &'b mut [u8]) -> Option<&'b [u8]> {
        loop {
            match socket::recv(self.reader.as_raw_fd(), buf, MsgFlags::MSG_DONTWAIT) {
                Ok(n) => return Some(&buf[..n.min(self.max)]),
                Err(Errno::EINTR) => continue,
                Err(_) => return None,
            }
        }
    }

    /// A receive buffer for the longest message.
    pub fn buffer(&self) -> Vec<u8> {
        vec![0; self.max.max(1)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_keep_their_boundaries_and_a_full_queue_is_refused_without_waiting() {
        let inbox = Inbox::new(16).unwrap();
        let mut buf = inbox.buffer();
        assert!(inbox.receive(&mut buf).is_none(), "nothing waiting");
        inbox.post(b"hello all").unwrap();
        inbox.post(b"").unwrap();
        inbox.post(b"second").unwrap();
        assert_eq!(inbox.receive(&mut buf), Some(&b"hello all"[..]));
        assert_eq!(inbox.receive(&mut buf), Some(&b""[..]));
        assert_eq!(inbox.receive(&mut buf), Some(&b"second"[..]));
        assert!(matches!(
            inbox.post(&[b'x'; 17]),
            Err(PostError::TooLong { len: 17, max: 16 })
        ));
        let full = (0..100_000).find_map(|_| inbox.post(b"0123456789abcdef").err());
        assert!(matches!(full, Some(PostError::Full)), "{full:?}");
    }

    #[test]
    fn a_forked_reader_gets_what_the_parent_posts() {
        let inbox = Inbox::new(64).unwrap();
        inbox.post(b"to the child").unwrap();
        let pid = crate::process::fork_worker(|| {
            let mut buf = inbox.buffer();
            match inbox.receive(&mut buf) {
                Some(b"to the child") => 0,
                _ => 1,
            }
        })
        .unwrap();
        let status = nix::sys::wait::waitpid(pid, None).unwrap();
        assert_eq!(status, nix::sys::wait::WaitStatus::Exited(pid, 0));
    }
}
