//! The body of a pre-forked worker process (`prefork`, `event`, and the
//! datagram workers of UDP listeners in every mode).
//!
//! A worker waits in its own epoll on the service's listeners, registered
//! with `EPOLLEXCLUSIVE` so a new connection wakes one worker instead of the
//! whole herd (trap 8), and on a signalfd for SIGTERM (blocked otherwise, so
//! no handler and no race between a flag check and the wait). `prefork`
//! accepts one connection and serves it to its end with the blocking
//! [`Handler::serve`]; `event` accepts into [`Sessions`]; a UDP socket is
//! served datagram by datagram by its own [`Datagrams`] state, kept for
//! the worker's life (a stateful one, like a chat room, is given to one
//! worker only: `workers.rs`); a worker holding datagram states also
//! polls its handler's [`Inbox`], if it has one, gives each operator
//! message to them, and keeps their peer and ignored counts in its slot.
//! SIGTERM means drain: stop accepting, finish what is open (in event
//! mode a session idle between requests closes at once), exit 0. The
//! worker reports through its scoreboard slot only, and ends in `_exit`
//! (via `process::fork_worker`), never returning into the supervisor's
//! loop.

use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::time::{Duration, Instant};

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::unistd::Pid;

use super::event::{Sessions, SESSION_TOKEN_BASE, UPSTREAM_TOKEN};
use super::listener::{Accepted, Listener, ReserveFd, Socket};
use super::per_ip::PerIp;
use super::scoreboard::{Scoreboard, Slot, SlotState};
use crate::config::ServiceConfig;
use crate::handlers::{Datagrams, Handler, Inbox, Limits, Replies};

const SIGNAL_TOKEN: u64 = u64::MAX;
/// The handler's inbox: below the upstream's token, above any listener's.
const INBOX_TOKEN: u64 = UPSTREAM_TOKEN - 1;
/// Accepts per wake-up before looking at other sources (fairness).
const ACCEPT_BATCH: usize = 64;
/// How often a worker paused by `max_connections` looks again.
const PAUSE_RECHECK: Duration = Duration::from_millis(50);

/// An event worker holds a descriptor per connection: it raises its soft
/// RLIMIT_NOFILE to the hard limit (the default `max_connections` of event
/// mode counts on it). Only the worker: forkd and the programs it runs keep
/// the limits they were given, as select(2)-based code needs.
fn raise_open_file_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
        }
    }
}

/// How a worker serves its stream listeners.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// One connection at a time, blocking.
    OneAtATime,
    /// Many connections, multiplexed.
    Multiplexed,
}

/// What a worker needs; borrowed from the supervisor's state before fork.
pub struct Worker<'a> {
    pub config: &'a ServiceConfig,
    pub handler: &'a dyn Handler,
    pub listeners: Vec<&'a Listener>,
    pub board: &'a Scoreboard,
    /// The service's per-IP counts, shared by every worker.
    pub per_ip: &'a PerIp,
    pub index: usize,
    pub parent: Pid,
    pub style: Style,
}

impl Worker<'_> {
    /// Runs the worker; returns its exit code.
    pub fn run(self) -> i32 {
        let Some(slot) = self.board.slot(self.index) else {
            return 1;
        };
        let mut keep: Vec<RawFd> = self
            .listeners
            .iter()
            .map(|l| l.as_fd().as_raw_fd())
            .collect();
        self.handler.keep_open(&mut |fd| keep.push(fd.as_raw_fd()));
        if !super::child::setup(self.parent, &mut keep, true) {
            return 1;
        }
        if self.style == Style::Multiplexed {
            raise_open_file_limit();
        }
        match self.serve(slot) {
            Ok(code) => code,
            Err(e) => {
                log::error!(
                    "service \"{}\" worker #{}: {e}; exiting",
                    self.config.name,
                    self.index
                );
                1
            }
        }
    }

    fn serve(&self, slot: &Slot) -> nix::Result<i32> {
        let mut term = SigSet::empty();
        term.add(Signal::SIGTERM);
        let signals = SignalFd::with_flags(&term, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)?;
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        epoll.add(
            signals.as_fd(),
            EpollEvent::new(EpollFlags::EPOLLIN, SIGNAL_TOKEN),
        )?;
        self.watch_listeners(&epoll)?;
        let limits = Limits::of(self.config);
        let mut sessions = Sessions::new(limits, self.per_ip, self.handler.upstream().cloned());
        let mut datagrams = self.datagram_states();
        let inbox = self
            .handler
            .inbox()
            .filter(|_| datagrams.iter().any(Option::is_some));
        if let Some(inbox) = inbox {
            epoll.add(
                inbox.reader(),
                EpollEvent::new(EpollFlags::EPOLLIN, INBOX_TOKEN),
            )?;
        }
        let mut inbox_buffer = inbox.map(Inbox::buffer).unwrap_or_default();
        let mut replies = Replies::new();
        let mut reserve = ReserveFd::new();
        let mut events = vec![EpollEvent::empty(); 256];
        let mut draining = false;
        let mut paused = false;
        slot.set_state(SlotState::Idle);
        loop {
            if draining && sessions.is_empty() {
                return Ok(0);
            }
            let now = Instant::now();
            let mut wake = [sessions.next_wake(), datagram_deadline(&datagrams)]
                .into_iter()
                .flatten()
                .min();
            if paused {
                wake = Some(wake.map_or(now + PAUSE_RECHECK, |w| w.min(now + PAUSE_RECHECK)));
            }
            let timeout = match wake {
                None => EpollTimeout::NONE,
                Some(at) => {
                    let ms = at.saturating_duration_since(now).as_millis().min(60_000);
                    EpollTimeout::try_from(ms as u32 + 1).unwrap_or(EpollTimeout::NONE)
                }
            };
            let n = match epoll.wait(&mut events, timeout) {
                Ok(n) => n,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e),
            };
            // SIGTERM is handled after the rest of the batch: with
            // EPOLLEXCLUSIVE a new connection wakes only this worker, and
            // if it drained without accepting, the connection would wait
            // in the backlog for the next one to wake another (a reload
            // replacing this worker would stall that client).
            let mut term = false;
            for event in &events[..n] {
                match event.data() {
                    SIGNAL_TOKEN => term = true,
                    UPSTREAM_TOKEN => sessions.upstream_ready(&epoll, event.events(), slot),
                    INBOX_TOKEN => {
                        if let Some(inbox) = inbox.filter(|_| !draining) {
                            let buffer = &mut inbox_buffer[..];
                            self.hear_operator(inbox, buffer, &mut datagrams, &mut replies);
                        }
                    }
                    token if token >= SESSION_TOKEN_BASE => {
                        sessions.ready(&epoll, token, event.events(), slot);
                    }
                    token => {
                        if draining || paused {
                            continue;
                        }
                        let listener = self.listeners[token as usize];
                        if let Socket::Udp(_) = &listener.socket {
                            let index = token as usize;
                            self.answer_datagrams(index, &mut datagrams, &mut replies, slot);
                            continue;
                        }
                        match self.style {
                            Style::OneAtATime => {
                                if self.serve_one(listener, slot, &mut reserve) {
                                    // max_requests reached: recycle.
                                    return Ok(0);
                                }
                            }
                            Style::Multiplexed => self.accept_many(
                                listener,
                                &epoll,
                                &mut sessions,
                                slot,
                                &mut reserve,
                            ),
                        }
                    }
                }
            }
            if term {
                while let Ok(Some(_)) = signals.read_signal() {}
                if !draining {
                    draining = true;
                    slot.set_state(SlotState::Draining);
                    self.close_listeners(&epoll, paused);
                    sessions.drain(&epoll, slot);
                    if let Some(inbox) = inbox {
                        let _ = epoll.delete(inbox.reader());
                    }
                }
            }
            sessions.run_timers(&epoll, Instant::now(), slot);
            self.wake_datagrams(&mut datagrams, &mut replies, Instant::now(), slot);
            sessions.expire(&epoll, Instant::now(), slot);
            slot.set_connections(sessions.len() as u32);
            if draining {
                continue;
            }
            if self.style == Style::Multiplexed && self.recycle_due(slot) {
                draining = true;
                slot.set_state(SlotState::Draining);
                self.close_listeners(&epoll, paused);
                sessions.drain(&epoll, slot);
                continue;
            }
            // Stop watching the listeners while the service is full, so a
            // pending connection waits in the backlog instead of waking us.
            let full = self.at_capacity();
            if full != paused {
                paused = full;
                if paused {
                    self.unwatch_listeners(&epoll);
                } else {
                    self.watch_listeners(&epoll)?;
                }
            }
            if self.style == Style::Multiplexed {
                slot.set_state(if sessions.is_empty() {
                    SlotState::Idle
                } else {
                    SlotState::Busy
                });
            }
        }
    }

    fn watch_listeners(&self, epoll: &Epoll) -> nix::Result<()> {
        for (i, l) in self.listeners.iter().enumerate() {
            let flags = EpollFlags::EPOLLIN | EpollFlags::EPOLLEXCLUSIVE;
            epoll.add(l.as_fd(), EpollEvent::new(flags, i as u64))?;
        }
        Ok(())
    }

    fn unwatch_listeners(&self, epoll: &Epoll) {
        for l in &self.listeners {
            let _ = epoll.delete(l.as_fd());
        }
    }

    /// Draining: stop watching the listeners and close this process's
    /// copies, so once the supervisor has closed its own the port refuses
    /// new clients instead of queueing them for nobody.
    fn close_listeners(&self, epoll: &Epoll, paused: bool) {
        if !paused {
            self.unwatch_listeners(epoll);
        }
        for l in &self.listeners {
            // The `Listener` values belong to the supervisor's memory image
            // and are never used or dropped again in this process (it ends
            // in `_exit`), so closing the descriptor under them is sound.
            let _ = nix::unistd::close(l.as_raw_fd());
        }
    }

    /// Live connections over all workers reached `max_connections`.
    fn at_capacity(&self) -> bool {
        self.board.live_connections() >= u64::from(self.config.max_connections)
    }

    fn recycle_due(&self, slot: &Slot) -> bool {
        self.config.max_requests > 0 && slot.served() >= self.config.max_requests
    }

    /// prefork: accept one connection and serve it to its end. Returns true
    /// when the worker has served `max_requests` and should exit.
    fn serve_one(&self, listener: &Listener, slot: &Slot, reserve: &mut ReserveFd) -> bool {
        if self.at_capacity() {
            return false;
        }
        let conn = match listener.accept(reserve) {
            Accepted::Conn(conn) => conn,
            Accepted::Shed => {
                slot.add_shed();
                return false;
            }
            _ => return false,
        };
        let peer = conn.peer;
        let me = nix::unistd::getpid();
        if !self.per_ip.admit(&peer, me) {
            slot.add_refused();
            return false;
        }
        slot.add_claim();
        slot.set_connections(1);
        slot.set_state(SlotState::Busy);
        let outcome = self.handler.serve(conn, &Limits::of(self.config));
        slot.add_outcome(outcome);
        self.per_ip.release(&peer, me);
        slot.drop_claim();
        slot.set_connections(0);
        let served = slot.add_served();
        slot.set_state(SlotState::Idle);
        self.config.max_requests > 0 && served >= self.config.max_requests
    }

    /// event: accept what is pending (bounded) into the session set.
    fn accept_many(
        &self,
        listener: &Listener,
        epoll: &Epoll,
        sessions: &mut Sessions,
        slot: &Slot,
        reserve: &mut ReserveFd,
    ) {
        for _ in 0..ACCEPT_BATCH {
            if self.at_capacity() {
                return;
            }
            match listener.accept(reserve) {
                Accepted::Conn(conn) => {
                    let Some(session) = self.handler.session() else {
                        return;
                    };
                    if sessions.add(epoll, conn, session, slot) {
                        slot.add_served();
                        slot.set_connections(sessions.len() as u32);
                    } else {
                        slot.add_refused();
                    }
                }
                Accepted::Shed => slot.add_shed(),
                Accepted::Retry => continue,
                Accepted::WouldBlock | Accepted::Error(_) => return,
            }
        }
    }

    /// Answers the datagrams pending on listener `index` (bounded per
    /// wake-up), feeding each to its datagram state with its sender. The
    /// slot's counts are written before the replies go, so a client that
    /// has its answer finds them in status.
    fn answer_datagrams(
        &self,
        index: usize,
        states: &mut [Option<Box<dyn Datagrams>>],
        replies: &mut Replies,
        slot: &Slot,
    ) {
        let Socket::Udp(socket) = &self.listeners[index].socket else {
            return;
        };
        let mut input = [0u8; 65536];
        for _ in 0..ACCEPT_BATCH {
            let Some(state) = states[index].as_deref_mut() else {
                return;
            };
            let (n, from) = match socket.recv_from(&mut input) {
                Ok(got) => got,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => return,
            };
            replies.clear();
            state.datagram(from, &input[..n], replies);
            report_datagrams(states, slot);
            send_replies(socket, replies);
            slot.add_served();
        }
    }

    /// Gives the operator's messages waiting in the inbox (bounded per
    /// wake-up) to every datagram state, each sending on its own socket.
    fn hear_operator(
        &self,
        inbox: &Inbox,
        buffer: &mut [u8],
        states: &mut [Option<Box<dyn Datagrams>>],
        replies: &mut Replies,
    ) {
        for _ in 0..ACCEPT_BATCH {
            let Some(text) = inbox.receive(buffer) else {
                return;
            };
            for (listener, state) in self.listeners.iter().zip(states.iter_mut()) {
                let (Socket::Udp(socket), Some(state)) = (&listener.socket, state) else {
                    continue;
                };
                replies.clear();
                state.operator(text, replies);
                send_replies(socket, replies);
            }
        }
    }

    /// One datagram state per `udp://` listener (by listener index).
    fn datagram_states(&self) -> Vec<Option<Box<dyn Datagrams>>> {
        self.listeners
            .iter()
            .map(|l| match l.socket {
                Socket::Udp(_) => self.handler.datagrams(),
                _ => None,
            })
            .collect()
    }

    /// Wakes the datagram states whose timer is due.
    fn wake_datagrams(
        &self,
        states: &mut [Option<Box<dyn Datagrams>>],
        replies: &mut Replies,
        now: Instant,
        slot: &Slot,
    ) {
        for (index, listener) in self.listeners.iter().enumerate() {
            let (Socket::Udp(socket), Some(state)) = (&listener.socket, &mut states[index]) else {
                continue;
            };
            if state.deadline().is_some_and(|at| at <= now) {
                replies.clear();
                state.wake(now, replies);
                report_datagrams(states, slot);
                send_replies(socket, replies);
            }
        }
    }
}

/// The datagram states' peers and ignored datagrams, into the slot.
fn report_datagrams(states: &[Option<Box<dyn Datagrams>>], slot: &Slot) {
    let (peers, ignored) = states
        .iter()
        .flatten()
        .fold((0, 0), |(p, i), d| (p + d.peers(), i + d.ignored()));
    slot.set_datagrams(peers, ignored);
}

/// Sends every reply; a peer that cannot be reached is skipped, so one
/// bad address never stops the rest of a broadcast. A failed send is
/// tried once more: the error may be an earlier peer's, left on the
/// socket by an ICMP message (with `IP_RECVERR` set, as on a socket
/// handed over by someone else, a refused datagram makes the next
/// sendto(2) fail, whoever it is for), and the failed call cleared it.
fn send_replies(socket: &std::net::UdpSocket, replies: &Replies) {
    for (peer, data) in replies.iter() {
        if socket.send_to(data, peer).is_err() {
            let _ = socket.send_to(data, peer);
        }
    }
}

/// The soonest of the datagram states' timers.
fn datagram_deadline(states: &[Option<Box<dyn Datagrams>>]) -> Option<Instant> {
    states.iter().flatten().filter_map(|d| d.deadline()).min()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::ErrorKind;
    use std::net::{SocketAddr, UdpSocket};

    fn bound() -> UdpSocket {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        socket
    }

    /// A loopback port nobody listens on (its socket was just closed).
    fn closed_port() -> SocketAddr {
        bound().local_addr().unwrap()
    }

    fn received(socket: &UdpSocket) -> Vec<u8> {
        let mut buf = [0u8; 64];
        let n = socket.recv(&mut buf).unwrap();
        buf[..n].to_vec()
    }

    #[test]
    fn a_broadcast_goes_on_past_peers_that_cannot_be_reached() {
        let (server, a, b) = (bound(), bound(), bound());
        let peers = [
            a.local_addr().unwrap(),
            // EACCES: a broadcast address without SO_BROADCAST.
            "255.255.255.255:9".parse().unwrap(),
            // EAFNOSUPPORT: an IPv6 peer for an IPv4 socket.
            "[::1]:9".parse().unwrap(),
            closed_port(),
            b.local_addr().unwrap(),
        ];
        let mut replies = Replies::new();
        replies.send_to_all(peers, b"to all");
        send_replies(&server, &replies);
        assert_eq!(received(&a), b"to all");
        assert_eq!(received(&b), b"to all");
    }

    #[test]
    fn an_error_an_earlier_peer_left_does_not_cost_the_next_peer_its_datagram() {
        let (server, a) = (bound(), bound());
        let to_a = a.local_addr().unwrap();
        nix::sys::socket::setsockopt(&server, nix::sys::socket::sockopt::Ipv4RecvErr, &true)
            .unwrap();
        let dead = closed_port();
        // The trap: the port unreachable that answered the datagram to
        // `dead` fails the next sendto(2), whoever it is for.
        server.send_to(b"x", dead).unwrap();
        let trapped = server.send_to(b"lost", to_a).unwrap_err();
        assert_eq!(trapped.kind(), ErrorKind::ConnectionRefused);
        let mut replies = Replies::new();
        replies.send_to_all([dead, to_a, dead, to_a], b"kept");
        send_replies(&server, &replies);
        assert_eq!(received(&a), b"kept");
        assert_eq!(received(&a), b"kept");
    }
}
