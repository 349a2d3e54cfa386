//! One control connection's bytes: a bounded input buffer read until
//! `WouldBlock` and split into request lines, and a bounded output buffer
//! flushed as the socket drains; too-long requests are answered and
//! skipped; idle connections expire (see [`Connection::idle_deadline`]).

use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::time::Instant;

use mio::net::UnixStream;
use nix::errno::Errno;
use nix::sys::socket::MsgFlags;

use super::access::Role;
use super::peer::Peer;
use super::{error_reply, reply_line, ErrorKind, IDLE_TIMEOUT, MAX_REQUEST};

/// Unsent reply bytes above which a connection's requests wait unread.
pub const OUTPUT_HIGH_WATER: usize = 1024 * 1024;
const READ_CHUNK: usize = 64 * 1024;

/// One served connection: bounded input and output buffers.
#[derive(Debug)]
pub struct Connection {
    stream: UnixStream,
    pub peer: Peer,
    /// What the peer may do, decided at accept.
    pub role: Role,
    input: Vec<u8>,
    output: Vec<u8>,
    /// Dropping the rest of a too-long request, up to its newline.
    skipping: bool,
    /// The peer has shut down its writing side.
    eof: bool,
    /// When a byte last moved either way (or the connection was accepted).
    last_active: Instant,
    /// A request turned this connection into something else (`call`):
    /// no more lines are read from it.
    upgraded: bool,
}

impl Connection {
    pub(super) fn new(stream: UnixStream, peer: Peer, role: Role, now: Instant) -> Connection {
        Connection {
            stream,
            peer,
            role,
            input: Vec::new(),
            output: Vec::new(),
            skipping: false,
            eof: false,
            last_active: now,
            upgraded: false,
        }
    }

    pub fn stream(&mut self) -> &mut UnixStream {
        &mut self.stream
    }

    /// Whether the peer has closed and sent nothing left to read: the next
    /// read would see EOF (or a reset) and close this connection anyway.
    pub fn hung_up(&self) -> bool {
        let mut byte = [0u8; 1];
        let peeked = nix::sys::socket::recv(
            self.stream.as_raw_fd(),
            &mut byte,
            MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT,
        );
        matches!(peeked, Ok(0) | Err(Errno::ECONNRESET | Errno::EPIPE))
    }

    /// When this connection is closed unless a byte moves before: a peer
    /// that neither asks nor reads must not hold a slot for good.
    pub fn idle_deadline(&self) -> Instant {
        self.last_active + IDLE_TIMEOUT
    }

    /// Moves bytes both ways until the socket would block, answering each
    /// complete request line with `answer` (the reply line, and whether
    /// the connection now carries something else: then pumping stops and
    /// [`Connection::is_upgraded`] is true). Returns false when the
    /// connection is finished (the peer closed and every reply was sent, or
    /// an error): the caller then deregisters and drops it.
    pub fn pump(&mut self, mut answer: impl FnMut(&[u8]) -> (Vec<u8>, bool)) -> bool {
        loop {
            if !self.flush() {
                return false;
            }
            if self.upgraded {
                return true;
            }
            let mut answered = false;
            while self.output.len() < OUTPUT_HIGH_WATER {
                let Some(line) = self.take_line() else { break };
                if line.len() > MAX_REQUEST {
                    self.too_long(line.len());
                } else if !line.iter().all(u8::is_ascii_whitespace) {
                    let (reply, upgrade) = answer(&line);
                    self.output.extend(reply);
                    if upgrade {
                        self.upgraded = true;
                        return self.flush();
                    }
                }
                answered = true;
            }
            if answered {
                continue;
            }
            if self.eof || self.output.len() >= OUTPUT_HIGH_WATER {
                break;
            }
            match self.read_some() {
                Ok(true) => {}
                Ok(false) => break,
                Err(_) => return false,
            }
        }
        !(self.eof && self.output.is_empty() && self.input.is_empty())
    }

    /// Whether a request turned this connection into something else.
    pub fn is_upgraded(&self) -> bool {
        self.upgraded
    }

    /// The socket, the bytes read past the upgrading request, the reply
    /// bytes not yet written, and the peer.
    pub fn into_parts(self) -> (UnixStream, Vec<u8>, Vec<u8>, Peer) {
        (self.stream, self.input, self.output, self.peer)
    }

    /// Writes queued output until done or `WouldBlock`; false on error.
    fn flush(&mut self) -> bool {
        let mut sent = 0;
        let ok = loop {
            if sent == self.output.len() {
                break true;
            }
            match self.stream.write(&self.output[sent..]) {
                Ok(0) => break false,
                Ok(n) => {
                    sent += n;
                    self.last_active = Instant::now();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break false,
            }
        };
        self.output.drain(..sent);
        ok
    }

    /// One read. Ok(false) when it would block; EOF sets `eof`.
    fn read_some(&mut self) -> io::Result<bool> {
        let mut buf = vec![0u8; READ_CHUNK];
        let n = match self.stream.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(true),
            Err(e) => return Err(e),
        };
        self.last_active = Instant::now();
        if n == 0 {
            self.eof = true;
            return Ok(true);
        }
        let mut bytes = &buf[..n];
        if self.skipping {
            match bytes.iter().position(|&b| b == b'\n') {
                Some(at) => {
                    self.skipping = false;
                    bytes = &bytes[at + 1..];
                }
                None => return Ok(true),
            }
        }
        self.input.extend_from_slice(bytes);
        if self.input.len() > MAX_REQUEST && !self.input.contains(&b'\n') {
            let seen = self.input.len();
            self.input.clear();
            self.skipping = true;
            self.too_long(seen);
        }
        Ok(true)
    }

    /// The next complete line; at EOF, the unterminated rest.
    fn take_line(&mut self) -> Option<Vec<u8>> {
        match self.input.iter().position(|&b| b == b'\n') {
            Some(at) => {
                let mut line: Vec<u8> = self.input.drain(..=at).collect();
                line.pop();
                Some(line)
            }
            None if self.eof && !self.input.is_empty() && !self.skipping => {
                Some(std::mem::take(&mut self.input))
            }
            None => None,
        }
    }

    fn too_long(&mut self, seen: usize) {
        let message = format!(
            "request too long: {seen} bytes or more without a newline; a request is one JSON object of at most {MAX_REQUEST} bytes on one line"
        );
        self.output
            .extend(reply_line(&error_reply(ErrorKind::TooLarge, message)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> Peer {
        Peer {
            uid: 65534,
            gid: 65534,
            pid: 1,
        }
    }

    #[test]
    fn a_connection_expires_after_the_idle_timeout_unless_bytes_move() {
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        let accepted = Instant::now();
        let mut conn = Connection::new(ours, peer(), Role::Operator, accepted);
        assert_eq!(conn.idle_deadline(), accepted + IDLE_TIMEOUT);
        // Nothing to read: pumping is not activity.
        assert!(conn.pump(|_| unreachable!()));
        assert_eq!(conn.idle_deadline(), accepted + IDLE_TIMEOUT);
        // A request and its reply are.
        theirs.write_all(b"{}\n").unwrap();
        let before = Instant::now();
        assert!(conn.pump(|_| (b"{\"ok\":true}\n".to_vec(), false)));
        assert!(conn.idle_deadline() >= before + IDLE_TIMEOUT);
    }
}
