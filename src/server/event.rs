//! `event` mode inside one worker: many connections multiplexed with epoll
//! (nginx's model). Each connection is a non-blocking stream, a handler
//! [`Session`] and its [`Output`] (bytes and file ranges, the latter sent
//! with sendfile). A session may speak first (`Session::start`, run when
//! the connection is added). Reads are answered at once when the socket
//! takes the reply; otherwise the connection stops reading until its
//! output drains (back-pressure), and each time it is all out the session
//! is asked for more (`Session::drained`). A reply stuck longer than
//! `request_timeout`, or a connection silent for `idle_timeout`, is cut.
//!
//! Level-triggered epoll, one read per readiness, so one busy client cannot
//! starve the others. Connections live in a slab indexed by their epoll
//! token. This module never accepts (the worker loop does) and never forks.
//!
//! Sessions' timers ([`Session::deadline`], a pause a classic client
//! relies on) sit in one heap; the worker waits no longer than the
//! soonest, then [`Sessions::run_timers`] wakes what is due, so a pausing
//! session never holds up the others.
//!
//! A session that closes with its client's input unread
//! ([`Session::unread_input`]: a refused request whose rest is still
//! arriving) is not closed at once: its connection lingers, registered,
//! its sending side shut and its input read and dropped, until the
//! client's EOF or the bounds of `handlers::linger` (a heap timer), so the
//! close is not a reset that could cost the client the refusal.
//!
//! A handler with an upstream (`pool`) gets one connection to it per
//! worker, shared by every session (`forward.rs`). A session may also hold
//! its input back ([`Session::wants_input`]): its connection is then not
//! read. `tests.rs` drives sessions turn by turn.

mod forward;

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::{self, Read};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use nix::sys::epoll::{Epoll, EpollEvent, EpollFlags};

use nix::unistd::Pid;

use super::per_ip::PerIp;
use super::scoreboard::Slot;
use crate::handlers::{
    write_out, Connection, Discarded, Endpoint, Flow, Limits, Linger, Outcome, Output, Peer,
    Session, Stream,
};

use forward::Forwarding;
pub use forward::UPSTREAM_TOKEN;

/// Epoll tokens at or above this are connections (`token - BASE` = slot).
pub const SESSION_TOKEN_BASE: u64 = 1 << 32;

struct Conn {
    stream: Stream,
    session: Box<dyn Session>,
    out: Output,
    /// Last read (idle clock) or, while output is pending, last write progress.
    last: Instant,
    peer: Peer,
    close_after_send: bool,
    /// The interest registered: EPOLLIN to read, EPOLLOUT while output
    /// waits (no reads meanwhile), none while the session holds input back.
    interest: EpollFlags,
    /// The client closed its sending side.
    input_done: bool,
    /// The session ended with input unread: the sending side is shut and
    /// what arrives is dropped until EOF or the linger's bounds.
    lingering: Option<Linger>,
    /// The session's timer as last put in the heap.
    deadline: Option<Instant>,
    token: u64,
    /// Tells this connection from earlier ones in the same slab slot.
    serial: u64,
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
    /// The sessions' timers, soonest first: (when, slot, serial). An entry
    /// whose connection is gone or has since asked for another time is
    /// skipped when it comes up.
    timers: BinaryHeap<Reverse<(Instant, usize, u64)>>,
    forwarding: Option<Forwarding>,
    /// Sessions that may have requests for the upstream.
    to_forward: Vec<usize>,
    next_serial: u64,
}

impl<'a> Sessions<'a> {
    /// `upstream`: where the handler's sessions forward requests, if anywhere.
    pub fn new(limits: Limits, per_ip: &'a PerIp, upstream: Option<Endpoint>) -> Sessions<'a> {
        Sessions {
            slab: Vec::new(),
            free: Vec::new(),
            live: 0,
            per_ip,
            me: nix::unistd::getpid(),
            buf: vec![0; limits.read_buffer()],
            limits,
            next_sweep: Instant::now() + sweep_interval(&limits),
            timers: BinaryHeap::new(),
            forwarding: upstream.map(Forwarding::new),
            to_forward: Vec::new(),
            next_serial: 0,
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
            out: Output::new(),
            last: Instant::now(),
            peer,
            close_after_send: false,
            interest: EpollFlags::EPOLLIN,
            input_done: false,
            lingering: None,
            deadline: None,
            token,
            serial: self.next_serial,
        });
        self.next_serial += 1;
        self.live += 1;
        slot.add_claim();
        // A session may speak first.
        if let Some(conn) = self.slab[index].as_mut() {
            if conn.session.start(&mut conn.out) == Flow::Close {
                conn.close_after_send = true;
            }
            match conn.flush(epoll) {
                Step::End(outcome) => self.close(epoll, index, outcome, slot),
                Step::Keep => self.rearm(index),
            }
        }
        true
    }

    /// Handles readiness of the connection behind `token`.
    pub fn ready(&mut self, epoll: &Epoll, token: u64, flags: EpollFlags, slot: &Slot) {
        let index = (token - SESSION_TOKEN_BASE) as usize;
        let Some(Some(conn)) = self.slab.get_mut(index) else {
            return;
        };
        let gone = EpollFlags::EPOLLERR | EpollFlags::EPOLLHUP;
        let step = if let Some(linger) = &mut conn.lingering {
            match linger.discard(&conn.stream, &mut self.buf, Instant::now()) {
                Discarded::Over => Step::End(Outcome::Done),
                Discarded::Some | Discarded::Nothing => Step::Keep,
            }
        } else if !conn.out.is_empty() {
            if flags.intersects(EpollFlags::EPOLLOUT | gone) {
                conn.flush(epoll)
            } else {
                Step::Keep
            }
        } else if conn.interest.contains(EpollFlags::EPOLLIN) {
            conn.read_and_answer(epoll, &mut self.buf)
        } else if flags.intersects(gone) {
            // Closed while it waited for answers: nobody to give them to.
            Step::End(Outcome::Done)
        } else {
            Step::Keep
        };
        match step {
            Step::End(outcome) => self.close(epoll, index, outcome, slot),
            Step::Keep => {
                self.rearm(index);
                if self.forwarding.is_some() {
                    self.to_forward.push(index);
                    self.forward(epoll, slot);
                }
            }
        }
    }

    /// Puts the session's timer in the heap if it asked for a new time.
    fn rearm(&mut self, index: usize) {
        let Some(Some(conn)) = self.slab.get_mut(index) else {
            return;
        };
        let wanted = match &conn.lingering {
            Some(linger) => Some(linger.deadline()),
            None => conn.session.deadline(),
        };
        if wanted != conn.deadline {
            conn.deadline = wanted;
            if let Some(at) = wanted {
                self.timers.push(Reverse((at, index, conn.serial)));
            }
        }
    }

    /// Wakes every session whose timer is due.
    pub fn run_timers(&mut self, epoll: &Epoll, now: Instant, slot: &Slot) {
        while let Some(&Reverse((at, index, serial))) = self.timers.peek() {
            if at > now {
                return;
            }
            self.timers.pop();
            let Some(Some(conn)) = self.slab.get_mut(index) else {
                continue;
            };
            if conn.serial != serial || conn.deadline != Some(at) {
                continue;
            }
            conn.deadline = None;
            if conn.lingering.is_some() {
                // The client is still sending at the linger's end.
                self.close(epoll, index, Outcome::Done, slot);
                continue;
            }
            if conn.session.wake(now, &mut conn.out) == Flow::Close {
                conn.close_after_send = true;
            }
            match conn.flush(epoll) {
                Step::End(outcome) => self.close(epoll, index, outcome, slot),
                Step::Keep => self.rearm(index),
            }
        }
    }

    /// When the worker must next call [`Sessions::run_timers`] and
    /// [`Sessions::expire`].
    pub fn next_wake(&self) -> Option<Instant> {
        let timer = self.timers.peek().map(|Reverse((at, _, _))| *at);
        self.next_sweep().into_iter().chain(timer).min()
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
                let c = c.as_ref().filter(|c| c.lingering.is_none())?;
                let limit = if c.out.is_empty() { idle } else { request };
                (!limit.is_zero() && now.duration_since(c.last) >= limit).then_some(i)
            })
            .collect();
        for i in expired {
            self.close(epoll, i, Outcome::TimedOut, slot);
        }
    }

    /// The worker drains: each session is told ([`Session::drain`]), and
    /// one with nothing in hand closes once its output is out rather than
    /// holding the worker until `drain_timeout`.
    pub fn drain(&mut self, epoll: &Epoll, slot: &Slot) {
        for index in 0..self.slab.len() {
            let Some(conn) = self.slab[index].as_mut() else {
                continue;
            };
            if conn.lingering.is_some() || conn.session.drain() != Flow::Close {
                continue;
            }
            conn.close_after_send = true;
            match conn.flush(epoll) {
                Step::End(outcome) => self.close(epoll, index, outcome, slot),
                Step::Keep => self.rearm(index),
            }
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
            Ok(0) => {
                self.input_done = true;
                if self.session.input_ended(&mut self.out) == Flow::Close {
                    self.close_after_send = true;
                }
                return self.flush(epoll);
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Step::Keep,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Step::Keep,
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                return Step::End(Outcome::Done)
            }
            Err(_) => return Step::End(Outcome::Failed),
        };
        self.last = Instant::now();
        if self.session.input(&buf[..n], &mut self.out) == Flow::Close {
            self.close_after_send = true;
        }
        self.flush(epoll)
    }

    /// Writes pending output (pulling more from the session each time it
    /// is all out), then sets the interest it leaves
    /// ([`Conn::update_interest`]).
    fn flush(&mut self, epoll: &Epoll) -> Step {
        match write_out(
            &self.stream,
            &mut self.out,
            &mut *self.session,
            &mut self.close_after_send,
        ) {
            Ok(true) => self.last = Instant::now(),
            Ok(false) => {}
            Err(_) => return Step::End(Outcome::Failed),
        }
        if self.out.is_empty() && self.close_after_send {
            return self.close_or_linger(epoll);
        }
        self.update_interest(epoll);
        Step::Keep
    }

    /// The session is done and its output is out: close, unless the
    /// client may still be sending what the session did not read; then
    /// linger (`handlers::linger`), reading to drop it, the deadline in
    /// the timer heap. An ordinary close costs no syscall more.
    fn close_or_linger(&mut self, epoll: &Epoll) -> Step {
        if self.input_done || !self.session.unread_input() {
            return Step::End(Outcome::Done);
        }
        let Some(linger) = Linger::start(&self.stream, Instant::now()) else {
            return Step::End(Outcome::Done);
        };
        self.lingering = Some(linger);
        self.set_interest(epoll, EpollFlags::EPOLLIN);
        Step::Keep
    }

    /// EPOLLOUT while output remains (no reads meanwhile: back-pressure),
    /// else EPOLLIN unless the input ended or the session holds it back.
    fn update_interest(&mut self, epoll: &Epoll) {
        let want = if !self.out.is_empty() {
            EpollFlags::EPOLLOUT
        } else if !self.input_done && self.session.wants_input() {
            EpollFlags::EPOLLIN
        } else {
            EpollFlags::empty()
        };
        self.set_interest(epoll, want);
    }

    fn set_interest(&mut self, epoll: &Epoll, want: EpollFlags) {
        if want != self.interest {
            self.interest = want;
            let mut event = EpollEvent::new(want, self.token);
            let _ = epoll.modify(self.stream.as_fd(), &mut event);
        }
    }
}

#[cfg(test)]
mod tests;
