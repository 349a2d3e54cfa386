//! The lingering close (nginx's `lingering_close`): how a connection whose
//! session gave up before the client finished sending is closed without
//! losing the reply.
//!
//! close(2) on a TCP socket with unread input (or input arriving after
//! it) makes Linux send RST instead of FIN (RFC 1122 section 4.2.2.13),
//! and a client that gets the RST before it has read the refusal loses
//! it: recv(2) fails with ECONNRESET and the queued data is discarded.
//! So the close lingers: `shutdown(SHUT_WR)` (the client reads the reply,
//! then EOF), then what the client still sends is read and thrown away
//! until its EOF, an error, or a bound: [`LINGER_TIME`] in all or
//! [`LINGER_BYTES`], whichever comes first, so a client that keeps
//! sending holds a worker or a slot no longer than that. Only then the
//! descriptor is closed.
//!
//! [`Linger`] is the state, read without blocking: `event` mode keeps a
//! lingering connection registered and reads it as it becomes readable,
//! its deadline in the timer heap; [`linger`] is the blocking form for
//! `fork` and `prefork` (the session driver, the command handler, the
//! pool relay), waiting with poll(2). Used only where input may be
//! unread ([`super::Session::unread_input`]): an ordinary close after a
//! whole request costs nothing more. Never logs.

use std::io::{self, Read};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout};

use super::Stream;

/// How long a close lingers at most. Long enough for a refused 16 MiB
/// frame to arrive over loopback or a LAN; short enough that a client
/// that never stops sending holds a prefork worker only briefly (nginx
/// allows 30 s, but its lingering costs no process).
pub const LINGER_TIME: Duration = Duration::from_secs(2);

/// How many bytes a close reads and drops at most: the default
/// `max_frame`, so a client refused one frame of the largest size forkd
/// speaks gets its refusal. A client that sends more is not listening.
pub const LINGER_BYTES: usize = 16 << 20;

/// The read size of [`linger`]'s stack buffer.
const DISCARD_READ: usize = 16 << 10;

/// A connection whose sending side is shut, whose input is being dropped.
#[derive(Debug)]
pub struct Linger {
    until: Instant,
    left: usize,
}

/// What one [`Linger::discard`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Discarded {
    /// Bytes were dropped: read again.
    Some,
    /// Nothing has arrived: wait until the socket is readable.
    Nothing,
    /// EOF, an error or a bound: close now.
    Over,
}

impl Linger {
    /// Shuts the sending side: the client reads what was written, then
    /// EOF. `None` when the socket is already gone (nothing to linger for).
    pub fn start(stream: &Stream, now: Instant) -> Option<Linger> {
        stream.shutdown_write().ok()?;
        Some(Linger {
            until: now + LINGER_TIME,
            left: LINGER_BYTES,
        })
    }

    /// When the close must happen even if the client still sends.
    pub fn deadline(&self) -> Instant {
        self.until
    }

    /// One non-blocking read into `buf`, dropped.
    pub fn discard(&mut self, stream: &Stream, buf: &mut [u8], now: Instant) -> Discarded {
        if now >= self.until || self.left == 0 {
            return Discarded::Over;
        }
        let room = buf.len().min(self.left);
        let read = match stream {
            Stream::Tcp(s) => {
                let mut s = s;
                s.read(&mut buf[..room])
            }
            Stream::Unix(s) => {
                let mut s = s;
                s.read(&mut buf[..room])
            }
        };
        match read {
            Ok(0) => Discarded::Over,
            Ok(n) => {
                self.left -= n;
                Discarded::Some
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Discarded::Nothing,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Discarded::Some,
            Err(_) => Discarded::Over,
        }
    }
}

/// The blocking lingering close of `stream` (its descriptor is closed
/// when the caller drops it): returns at the client's EOF, an error or a
/// bound.
pub fn linger(stream: &Stream) {
    let Some(mut linger) = Linger::start(stream, Instant::now()) else {
        return;
    };
    if stream.set_nonblocking(true).is_err() {
        return;
    }
    // The reads fill it anyway: zeroing it first costs nothing more.
    let mut buf = [0u8; DISCARD_READ];
    loop {
        match linger.discard(stream, &mut buf, Instant::now()) {
            Discarded::Some => {}
            Discarded::Over => return,
            Discarded::Nothing => {
                let left = linger.deadline().saturating_duration_since(Instant::now());
                let wait = PollTimeout::try_from(left.as_millis() + 1).unwrap_or(PollTimeout::MAX);
                let mut fds = [PollFd::new(stream.as_fd(), PollFlags::POLLIN)];
                match nix::poll::poll(&mut fds, wait) {
                    Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                    Err(_) => return,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;

    use super::*;

    fn pair() -> (UnixStream, Stream) {
        let (near, far) = UnixStream::pair().unwrap();
        (near, Stream::Unix(far))
    }

    #[test]
    fn the_client_reads_the_reply_then_eof_and_its_rest_is_dropped() {
        let (mut client, server) = pair();
        let mut server_side = server;
        server_side.write_all(b"refused").unwrap();
        client.write_all(&[b'x'; 50_000]).unwrap();
        let mut linger = Linger::start(&server_side, Instant::now()).unwrap();
        let mut got = Vec::new();
        client.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"refused", "the reply, then EOF");
        server_side.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 4096];
        let mut dropped = 0;
        while linger.discard(&server_side, &mut buf, Instant::now()) == Discarded::Some {
            dropped += 1;
        }
        assert!(dropped > 0);
        assert_eq!(
            linger.discard(&server_side, &mut buf, Instant::now()),
            Discarded::Nothing,
            "nothing more has come"
        );
        drop(client);
        assert_eq!(
            linger.discard(&server_side, &mut buf, Instant::now()),
            Discarded::Over,
            "the client's EOF ends it"
        );
    }

    #[test]
    fn the_byte_and_time_bounds_end_a_linger_while_the_client_still_sends() {
        let (mut client, server) = pair();
        client.set_nonblocking(true).unwrap();
        server.set_nonblocking(true).unwrap();
        let start = Instant::now();
        let mut linger = Linger::start(&server, start).unwrap();
        let mut buf = [0u8; DISCARD_READ];
        let chunk = [b'x'; DISCARD_READ];
        let mut rounds = 0;
        loop {
            let _ = client.write(&chunk);
            match linger.discard(&server, &mut buf, start) {
                Discarded::Over => break,
                _ => rounds += 1,
            }
            assert!(rounds <= 2 * LINGER_BYTES / DISCARD_READ, "never ends");
        }
        assert_eq!(linger.left, 0, "ended by the byte bound");
        let mut linger = Linger::start(&server, start).unwrap();
        let _ = client.write(&chunk);
        assert_eq!(
            linger.discard(&server, &mut buf, start + LINGER_TIME),
            Discarded::Over,
            "ended by the time bound with input waiting"
        );
    }

    #[test]
    fn a_blocking_linger_ends_at_a_bound_against_a_client_that_never_stops() {
        let (mut client, server) = pair();
        // A test thread stands in for the client that keeps sending;
        // forkd's own code never starts one.
        let sender = std::thread::spawn(move || {
            let chunk = [b'x'; 4096];
            // Ends when the server side is closed (EPIPE).
            while client.write_all(&chunk).is_ok() {}
        });
        let start = Instant::now();
        linger(&server);
        let took = start.elapsed();
        drop(server);
        sender.join().unwrap();
        assert!(took < LINGER_TIME + Duration::from_secs(1), "{took:?}");
    }
}
