//! The connection a `pool` handler forwards frames on: a Unix stream to a
//! pool's endpoint (`@forkd.<pid>.pool.<name>`, see
//! [`crate::supervisor::endpoint_name`]), where each frame written is one
//! job and is answered by exactly one frame, in the order written.
//!
//! [`Upstream`] is non-blocking and owns no policy: frames go into an
//! outbox (written as the socket takes them), answers come out whole, each
//! paired with the owner its request was queued for (a FIFO, since the
//! pool answers one connection's jobs strictly in order). It connects
//! lazily, when the first request is written, and again after it broke.
//! Used by the blocking relay of `fork`/`prefork` (one owner) and by an
//! `event` worker (its sessions share one upstream). Never logs.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;

use crate::ipc::Decoder;

/// Bytes read from the pool per readiness.
const READ_CHUNK: usize = 64 << 10;
/// Answers are the pool's own frames, bounded by its max_frame (at most
/// what a 4-byte length can say).
const ANSWER_LIMIT: usize = u32::MAX as usize;

/// Where a pool listens, as seen from the forkd that runs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pool: String,
    /// The abstract socket name (no leading NUL or `@`).
    address: String,
}

impl Endpoint {
    /// Pool `pool` of the forkd whose pid is `forkd`.
    pub fn new(forkd: u32, pool: &str) -> Endpoint {
        Endpoint {
            pool: pool.to_string(),
            address: crate::supervisor::endpoint_name(forkd, pool),
        }
    }

    /// A blocking connect (the supervisor accepts promptly; a full backlog
    /// waits instead of failing), then non-blocking for the relay.
    fn connect(&self) -> io::Result<UnixStream> {
        use std::os::linux::net::SocketAddrExt;
        let address = std::os::unix::net::SocketAddr::from_abstract_name(self.address.as_bytes())?;
        let stream = UnixStream::connect_addr(&address)?;
        stream.set_nonblocking(true)?;
        Ok(stream)
    }
}

/// One connection to a pool, shared by the owners of its requests.
#[derive(Debug)]
pub struct Upstream<O> {
    endpoint: Endpoint,
    stream: Option<UnixStream>,
    /// Encoded requests not yet written, and how much of it is.
    outbox: Vec<u8>,
    written: usize,
    answers: Decoder,
    /// The owner of each request sent and not yet answered, oldest first.
    owners: VecDeque<O>,
    buf: Vec<u8>,
    /// The last connect failed (the answer says so, not "broke").
    unreachable: bool,
}

impl<O: Copy> Upstream<O> {
    pub fn new(endpoint: Endpoint) -> Upstream<O> {
        Upstream {
            endpoint,
            stream: None,
            outbox: Vec::new(),
            written: 0,
            answers: Decoder::new(ANSWER_LIMIT),
            owners: VecDeque::new(),
            buf: Vec::new(),
            unreachable: false,
        }
    }

    /// Queues the encoded requests `fill` appends (it returns how many
    /// frames) as `owner`'s; [`Upstream::flush`] sends them.
    pub fn queue(&mut self, owner: O, fill: impl FnOnce(&mut Vec<u8>) -> usize) {
        if self.written == self.outbox.len() {
            self.outbox.clear();
            self.written = 0;
        }
        let count = fill(&mut self.outbox);
        self.owners.extend((0..count).map(|_| owner));
    }

    /// Writes what the socket takes, connecting first when requests wait
    /// and there is no connection (the caller then watches the new fd).
    /// `Err`: the pool cannot be reached or the connection broke; call
    /// [`Upstream::break_off`].
    pub fn flush(&mut self) -> io::Result<()> {
        if self.written == self.outbox.len() {
            return Ok(());
        }
        if self.stream.is_none() {
            match self.endpoint.connect() {
                Ok(stream) => self.stream = Some(stream),
                Err(e) => {
                    self.unreachable = true;
                    return Err(e);
                }
            }
        }
        let Some(stream) = self.stream.as_mut() else {
            return Ok(());
        };
        while self.written < self.outbox.len() {
            match stream.write(&self.outbox[self.written..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.written += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        self.outbox.clear();
        self.written = 0;
        Ok(())
    }

    /// Requests are waiting for the socket to take them.
    pub fn wants_write(&self) -> bool {
        self.written < self.outbox.len()
    }

    /// One read of answers. `Err`: the connection broke (the pool closing
    /// it is `UnexpectedEof`); answers read before it still come out of
    /// [`Upstream::next_answer`].
    pub fn read(&mut self) -> io::Result<()> {
        let Some(stream) = self.stream.as_mut() else {
            return Ok(());
        };
        if self.buf.len() < READ_CHUNK {
            self.buf.resize(READ_CHUNK, 0);
        }
        loop {
            return match stream.read(&mut self.buf) {
                Ok(0) => Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the pool closed it",
                )),
                Ok(n) => {
                    self.answers.extend(&self.buf[..n]);
                    Ok(())
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
                Err(e) => Err(e),
            };
        }
    }

    /// The next whole answer and the owner of its request. `Err`: an
    /// answer for no request (the connection cannot be trusted).
    pub fn next_answer(&mut self) -> io::Result<Option<(O, Vec<u8>)>> {
        let answer = match self.answers.next_frame() {
            Ok(Some(answer)) => answer,
            Ok(None) => return Ok(None),
            Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e.to_string())),
        };
        match self.owners.pop_front() {
            Some(owner) => Ok(Some((owner, answer))),
            None => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "an answer for no request",
            )),
        }
    }

    /// After `e` from [`Upstream::flush`] or [`Upstream::read`]: drops
    /// the connection and returns the answer for every request it left
    /// unanswered, with their owners, oldest first. The next request
    /// connects again.
    pub fn break_off(&mut self, e: &io::Error) -> (Vec<u8>, Vec<O>) {
        let pool = &self.endpoint.pool;
        let answer = if std::mem::take(&mut self.unreachable) {
            format!("ERR cannot reach pool \"{pool}\": {e}")
        } else {
            format!("ERR the pool connection broke (pool \"{pool}\": {e})")
        };
        self.stream = None;
        self.outbox.clear();
        self.written = 0;
        self.answers = Decoder::new(ANSWER_LIMIT);
        (answer.into_bytes(), self.owners.drain(..).collect())
    }

    pub fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.stream.as_ref().map(AsFd::as_fd)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipc::frame;

    /// A stand-in for a pool's endpoint, bound under this process's pid.
    fn fake_pool(name: &str) -> (std::os::unix::net::UnixListener, Endpoint) {
        use std::os::linux::net::SocketAddrExt;
        let endpoint = Endpoint::new(std::process::id(), name);
        let address =
            std::os::unix::net::SocketAddr::from_abstract_name(endpoint.address.as_bytes())
                .unwrap();
        let listener = std::os::unix::net::UnixListener::bind_addr(&address).unwrap();
        (listener, endpoint)
    }

    fn one(payload: &[u8]) -> impl FnOnce(&mut Vec<u8>) -> usize + '_ {
        move |outbox| {
            frame::encode(payload, outbox);
            1
        }
    }

    #[test]
    fn answers_go_to_their_owners_in_order_and_a_break_fails_the_rest() {
        let (listener, endpoint) = fake_pool("upstream-test-break");
        let mut up: Upstream<char> = Upstream::new(endpoint);
        up.queue('a', one(b"1"));
        up.queue('b', one(b"2"));
        up.queue('a', one(b"3"));
        up.flush().unwrap();
        let (mut pool, _) = listener.accept().unwrap();
        for want in [&b"1"[..], b"2", b"3"] {
            assert_eq!(frame::read_frame(&mut pool, 64).unwrap().unwrap(), want);
        }
        frame::write_frame(&mut pool, b"one").unwrap();
        frame::write_frame(&mut pool, b"two").unwrap();
        drop(pool);
        up.read().unwrap();
        assert_eq!(up.next_answer().unwrap(), Some(('a', b"one".to_vec())));
        assert_eq!(up.next_answer().unwrap(), Some(('b', b"two".to_vec())));
        assert_eq!(up.next_answer().unwrap(), None);
        let e = up.read().unwrap_err();
        let (answer, owners) = up.break_off(&e);
        assert_eq!(owners, ['a'], "the third job was never answered");
        assert!(
            answer.starts_with(b"ERR the pool connection broke (pool \"upstream-test-break\""),
            "{}",
            String::from_utf8_lossy(&answer)
        );
        // The next request connects again.
        up.queue('c', one(b"4"));
        up.flush().unwrap();
        let (mut pool, _) = listener.accept().unwrap();
        assert_eq!(frame::read_frame(&mut pool, 64).unwrap().unwrap(), b"4");
    }

    #[test]
    fn a_pool_that_does_not_listen_is_unreachable() {
        let (listener, endpoint) = fake_pool("upstream-test-gone");
        drop(listener);
        let mut up: Upstream<()> = Upstream::new(endpoint);
        assert!(up.flush().is_ok(), "nothing to send: no connect");
        up.queue((), one(b"x"));
        let e = up.flush().unwrap_err();
        let (answer, owners) = up.break_off(&e);
        assert_eq!(owners.len(), 1);
        assert!(
            answer.starts_with(b"ERR cannot reach pool \"upstream-test-gone\": "),
            "{}",
            String::from_utf8_lossy(&answer)
        );
    }
}
