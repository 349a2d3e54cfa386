//! `event` mode inside one worker: many connections multiplexed with epoll
//! (nginx's model). Each connection is a non-blocking stream, a handler
//! [`Session`] and an output buffer. Reads are answered at once when the
//! socket takes the reply; otherwise the connection stops reading until its
//! output drains (back-pressure), and a reply stuck longer than
//! `request_timeout`, or a connection silent for `idle_timeout`, is cut.
//!
//! Level-triggered epoll, one read per readiness, so one busy client cannot
//! starve the others. Connections live in a slab indexed by their epoll
//! token. This module never accepts (the worker loop does) and never forks.

use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use nix::sys::epoll::{Epoll, EpollEvent, EpollFlags};

use nix::unistd::Pid;

use super::per_ip::PerIp;
use super::scoreboard::Slot;
use crate::handlers::{Connection, Flow, Limits, Outcome, Peer, Session, Stream};

/// Epoll tokens at or above this are connections (`token - BASE` = slot).
pub const SESSION_TOKEN_BASE: u64 = 1 << 32;

struct Conn {
    stream: Stream,
    session: Box<dyn Session>,
    out: Vec<u8>,
    sent: usize,
    /// Last read (idle clock) or, while output is pending, last write progress.
    last: Instant,
    peer: Peer,
    close_after_send: bool,
    /// Waiting for EPOLLOUT (interest switched from EPOLLIN).
    writing: bool,
    token: u64,
}

/// The connections of one event-mode worker.
pub struct Sessions<'a> {
    slab: Vec<Option<Conn>>,
    free: Vec<usize>,
    live: usize,
    /// The service's counts, shared with the other workers.
    per_ip: &'a PerIp,
    /// This worker's pid: the owner of what it claims in `per_ip`.
    me: Pid,
    limits: Limits,
    buf: Vec<u8>,
    next_sweep: Instant,
}

impl<'a> Sessions<'a> {
    pub fn new(limits: Limits, per_ip: &'a PerIp) -> Sessions<'a> {
        Sessions {
            slab: Vec::new(),
            free: Vec::new(),
            live: 0,
            per_ip,
            me: nix::unistd::getpid(),
            buf: vec![0; limits.read_buffer()],
            limits,
            next_sweep: Instant::now() + sweep_interval(&limits),
        }
    }

    pub fn len(&self) -> usize {
        self.live
    }

    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Adds an accepted connection; false (and the connection closed) if
    /// the client's IP is over `per_ip` or the socket cannot be watched.
    pub fn add(
        &mut self,
        epoll: &Epoll,
        conn: Connection,
        session: Box<dyn Session>,
        slot: &Slot,
    ) -> bool {
        let peer = conn.peer;
        if !self.per_ip.admit(&peer, self.me) {
            return false;
        }
        if conn.stream.set_nonblocking(true).is_err() {
            self.per_ip.release(&peer, self.me);
            return false;
        }
        let index = self.free.pop().unwrap_or_else(|| {
            self.slab.push(None);
            self.slab.len() - 1
        });
        let token = SESSION_TOKEN_BASE + index as u64;
        if epoll
            .add(
                conn.stream.as_fd(),
                EpollEvent::new(EpollFlags::EPOLLIN, token),
            )
            .is_err()
        {
            self.free.push(index);
            self.per_ip.release(&peer, self.me);
            return false;
        }
        self.slab[index] = Some(Conn {
            stream: conn.stream,
            session,
            out: Vec::new(),
            sent: 0,
            last: Instant::now(),
            peer,
            close_after_send: false,
            writing: false,
            token,
        });
        self.live += 1;
        slot.add_claim();
        true
    }

    /// Handles readiness of the connection behind `token`.
    pub fn ready(&mut self, epoll: &Epoll, token: u64, flags: EpollFlags, slot: &Slot) {
        let index = (token - SESSION_TOKEN_BASE) as usize;
        let Some(Some(conn)) = self.slab.get_mut(index) else {
            return;
        };
        let step = if conn.sent < conn.out.len() {
            if flags.intersects(EpollFlags::EPOLLOUT | EpollFlags::EPOLLERR | EpollFlags::EPOLLHUP)
            {
                conn.flush(epoll)
            } else {
                Step::Keep
            }
        } else {
            conn.read_and_answer(epoll, &mut self.buf)
        };
        if let Step::End(outcome) = step {
            self.close(epoll, index, outcome, slot);
        }
    }

    /// Cuts connections idle past `idle_timeout` or with a reply stuck past
    /// `request_timeout`. Cheap to call often: it sweeps at most every
    /// quarter of the shorter timeout.
    pub fn expire(&mut self, epoll: &Epoll, now: Instant, slot: &Slot) {
        if now < self.next_sweep {
            return;
        }
        self.next_sweep = now + sweep_interval(&self.limits);
        let (idle, request) = (self.limits.idle_timeout, self.limits.request_timeout);
        let expired: Vec<usize> = self
            .slab
            .iter()
            .enumerate()
            .filter_map(|(i, c)| {
                let c = c.as_ref()?;
                let limit = if c.sent < c.out.len() { request } else { idle };
                (!limit.is_zero() && now.duration_since(c.last) >= limit).then_some(i)
            })
            .collect();
        for i in expired {
            self.close(epoll, i, Outcome::TimedOut, slot);
        }
    }

    /// When `expire` next wants to run.
    pub fn next_sweep(&self) -> Option<Instant> {
        (self.live > 0).then_some(self.next_sweep)
    }

    fn close(&mut self, epoll: &Epoll, index: usize, outcome: Outcome, slot: &Slot) {
        if let Some(conn) = self.slab[index].take() {
            let _ = epoll.delete(conn.stream.as_fd());
            self.per_ip.release(&conn.peer, self.me);
            slot.drop_claim();
            self.free.push(index);
            self.live -= 1;
            slot.add_outcome(outcome);
        }
    }
}

/// A quarter of the shorter timeout, between 10 ms and 1 s.
fn sweep_interval(limits: &Limits) -> Duration {
    let shortest = [limits.idle_timeout, limits.request_timeout]
        .into_iter()
        .filter(|d| !d.is_zero())
        .min()
        .unwrap_or(Duration::from_secs(4));
    (shortest / 4).clamp(Duration::from_millis(10), Duration::from_secs(1))
}

enum Step {
    Keep,
    End(Outcome),
}

impl Conn {
    fn read_and_answer(&mut self, epoll: &Epoll, buf: &mut [u8]) -> Step {
        let n = match self.stream.read(buf) {
            Ok(0) => return Step::End(Outcome::Done),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Step::Keep,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Step::Keep,
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                return Step::End(Outcome::Done)
            }
            Err(_) => return Step::End(Outcome::Failed),
        };
        self.last = Instant::now();
        self.out.clear();
        self.sent = 0;
        if self.session.input(&buf[..n], &mut self.out) == Flow::Close {
            self.close_after_send = true;
        }
        self.flush(epoll)
    }

    /// Writes pending output; switches the interest to EPOLLOUT while some
    /// remains (no reads meanwhile: back-pressure) and back to EPOLLIN.
    fn flush(&mut self, epoll: &Epoll) -> Step {
        while self.sent < self.out.len() {
            match self.stream.write(&self.out[self.sent..]) {
                Ok(0) => return Step::End(Outcome::Failed),
                Ok(n) => {
                    self.sent += n;
                    self.last = Instant::now();
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if !self.writing {
                        self.writing = true;
                        self.set_interest(epoll, EpollFlags::EPOLLOUT);
                    }
                    return Step::Keep;
                }
                Err(_) => return Step::End(Outcome::Failed),
            }
        }
        if self.writing {
            self.writing = false;
            self.set_interest(epoll, EpollFlags::EPOLLIN);
        }
        self.out.clear();
        self.sent = 0;
        if self.close_after_send {
            return Step::End(Outcome::Done);
        }
        Step::Keep
    }

    fn set_interest(&self, epoll: &Epoll, flags: EpollFlags) {
        let mut event = EpollEvent::new(flags, self.token);
        let _ = epoll.modify(self.stream.as_fd(), &mut event);
    }
}
