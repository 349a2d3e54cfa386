//! `event` mode's upstream (the `pool` handler): one connection per
//! worker, opened with the first request and registered under
//! [`UPSTREAM_TOKEN`], shared by every session. Each request is queued with
//! its owner (slab slot and serial, so a later connection in the same slot
//! is told apart); the upstream answers one connection's requests in
//! order, so each answer goes to the owner at the front of the FIFO. An
//! answer for a session that closed meanwhile is dropped; if the upstream
//! breaks or cannot be reached, the requests it held are answered with an
//! `ERR` frame saying so, and the next request connects again.

use nix::sys::epoll::{Epoll, EpollEvent, EpollFlags};

use super::{Sessions, Step, SESSION_TOKEN_BASE};
use crate::handlers::{Endpoint, Flow, Upstream};
use crate::server::scoreboard::Slot;

/// The epoll token of the upstream connection.
pub const UPSTREAM_TOKEN: u64 = SESSION_TOKEN_BASE - 1;

/// Whose request an upstream answer is: slab slot and connection serial.
type Owner = (usize, u64);

/// The upstream of a handler that has one, and its registered interest.
pub(super) struct Forwarding {
    upstream: Upstream<Owner>,
    watched: Option<EpollFlags>,
}

impl Forwarding {
    pub(super) fn new(endpoint: Endpoint) -> Forwarding {
        Forwarding {
            upstream: Upstream::new(endpoint),
            watched: None,
        }
    }
}

impl Sessions<'_> {
    /// Queues on the upstream what the sessions in `to_forward` decoded,
    /// and writes it. Requests it cannot take (unreachable, broken) are
    /// answered at once, which may let sessions decode more: repeat.
    pub(super) fn forward(&mut self, epoll: &Epoll, slot: &Slot) {
        loop {
            let Some(forwarding) = &mut self.forwarding else {
                self.to_forward.clear();
                return;
            };
            while let Some(index) = self.to_forward.pop() {
                if let Some(Some(conn)) = self.slab.get_mut(index) {
                    let owner = (index, conn.serial);
                    forwarding
                        .upstream
                        .queue(owner, |outbox| conn.session.take_requests(outbox));
                }
            }
            match forwarding.upstream.flush() {
                Ok(()) => self.watch_upstream(epoll, slot),
                Err(e) => self.upstream_broke(epoll, &e, slot),
            }
            if self.to_forward.is_empty() {
                return;
            }
        }
    }

    /// The upstream is ready: write what waits, hand out every answer.
    pub fn upstream_ready(&mut self, epoll: &Epoll, flags: EpollFlags, slot: &Slot) {
        let Some(forwarding) = &mut self.forwarding else {
            return;
        };
        let mut failed = None;
        if flags.contains(EpollFlags::EPOLLOUT) {
            failed = forwarding.upstream.flush().err();
        }
        if failed.is_none() && flags.intersects(!EpollFlags::EPOLLOUT) {
            failed = forwarding.upstream.read().err();
        }
        loop {
            let next = match &mut self.forwarding {
                Some(forwarding) => forwarding.upstream.next_answer(),
                None => return,
            };
            match next {
                Ok(Some((owner, answer))) => self.deliver(epoll, owner, &answer, slot),
                Ok(None) => break,
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        if let Some(e) = failed {
            self.upstream_broke(epoll, &e, slot);
        }
        // Answers make room: the sessions they went to may forward more.
        self.forward(epoll, slot);
    }

    /// Watches the upstream for answers, and for room while requests wait.
    fn watch_upstream(&mut self, epoll: &Epoll, slot: &Slot) {
        let Some(forwarding) = &mut self.forwarding else {
            return;
        };
        let Some(fd) = forwarding.upstream.fd() else {
            return;
        };
        let mut want = EpollFlags::EPOLLIN;
        if forwarding.upstream.wants_write() {
            want |= EpollFlags::EPOLLOUT;
        }
        let done = match forwarding.watched {
            Some(watched) if watched == want => Ok(()),
            Some(_) => epoll.modify(fd, &mut EpollEvent::new(want, UPSTREAM_TOKEN)),
            None => epoll.add(fd, EpollEvent::new(want, UPSTREAM_TOKEN)),
        };
        match done {
            Ok(()) => forwarding.watched = Some(want),
            Err(e) => {
                let e = std::io::Error::from(e);
                self.upstream_broke(epoll, &e, slot);
            }
        }
    }

    /// The upstream broke (or cannot be reached): every request it held
    /// is answered with why; the next request connects again.
    fn upstream_broke(&mut self, epoll: &Epoll, e: &std::io::Error, slot: &Slot) {
        let Some(forwarding) = &mut self.forwarding else {
            return;
        };
        if let Some(fd) = forwarding.upstream.fd() {
            let _ = epoll.delete(fd);
        }
        forwarding.watched = None;
        let (answer, owners) = forwarding.upstream.break_off(e);
        for owner in owners {
            self.deliver(epoll, owner, &answer, slot);
        }
    }

    /// Gives an upstream answer to the session it belongs to, if still open.
    fn deliver(&mut self, epoll: &Epoll, (index, serial): Owner, answer: &[u8], slot: &Slot) {
        let Some(Some(conn)) = self.slab.get_mut(index) else {
            return;
        };
        if conn.serial != serial || conn.lingering.is_some() {
            return;
        }
        conn.last = std::time::Instant::now();
        if conn.session.answer(answer, &mut conn.out) == Flow::Close {
            conn.close_after_send = true;
        }
        match conn.flush(epoll) {
            Step::End(outcome) => self.close(epoll, index, outcome, slot),
            Step::Keep => {
                self.rearm(index);
                self.to_forward.push(index);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
    use std::time::Duration;

    use nix::sys::epoll::{EpollCreateFlags, EpollTimeout};

    use super::*;
    use crate::handlers::{Connection, Forwarder, Limits, Peer, Session, Stream};
    use crate::ipc::{frame, Decoder};
    use crate::server::per_ip::PerIp;
    use crate::server::scoreboard::Scoreboard;

    /// A non-blocking stream and the frames read from it so far.
    struct End {
        stream: UnixStream,
        frames: Decoder,
    }

    impl End {
        fn new(stream: UnixStream) -> End {
            stream.set_nonblocking(true).unwrap();
            End {
                stream,
                frames: Decoder::new(1 << 20),
            }
        }

        fn send(&mut self, payload: &[u8]) {
            let mut wire = Vec::new();
            frame::encode(payload, &mut wire);
            std::io::Write::write_all(&mut self.stream, &wire).unwrap();
        }

        /// The next frame, if it has arrived.
        fn next(&mut self) -> Option<Vec<u8>> {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = self.stream.read(&mut buf) {
                self.frames.extend(&buf[..n]);
            }
            self.frames.next_frame().unwrap()
        }
    }

    /// One event worker's sessions forwarding to a fake pool endpoint in
    /// this process, driven turn by turn.
    struct Rig {
        epoll: Epoll,
        board: Scoreboard,
        pool: UnixListener,
    }

    impl Rig {
        fn new(name: &str) -> (Rig, Endpoint) {
            let address = crate::supervisor::endpoint_name(std::process::id(), name);
            let address = SocketAddr::from_abstract_name(address.as_bytes()).unwrap();
            let pool = UnixListener::bind_addr(&address).unwrap();
            pool.set_nonblocking(true).unwrap();
            let rig = Rig {
                epoll: Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).unwrap(),
                board: Scoreboard::new(1).unwrap(),
                pool,
            };
            (rig, Endpoint::new(std::process::id(), name))
        }

        fn slot(&self) -> &Slot {
            self.board.slot(0).unwrap()
        }

        /// A client connected to a new session.
        fn client(&self, sessions: &mut Sessions<'_>) -> End {
            let (near, far) = UnixStream::pair().unwrap();
            let conn = Connection {
                stream: Stream::Unix(far),
                peer: Peer::Unix,
            };
            let session: Box<dyn Session> = Box::new(Forwarder::new(1 << 10));
            assert!(sessions.add(&self.epoll, conn, session, self.slot()));
            End::new(near)
        }

        /// Turns of the worker's loop until `done` gives something.
        fn until<T>(
            &self,
            sessions: &mut Sessions<'_>,
            mut done: impl FnMut(&Sessions<'_>) -> Option<T>,
        ) -> T {
            let mut events = [EpollEvent::empty(); 16];
            for _ in 0..200 {
                if let Some(got) = done(sessions) {
                    return got;
                }
                let timeout = EpollTimeout::try_from(Duration::from_millis(50)).unwrap();
                let n = self.epoll.wait(&mut events, timeout).unwrap();
                for event in &events[..n] {
                    match event.data() {
                        UPSTREAM_TOKEN => {
                            sessions.upstream_ready(&self.epoll, event.events(), self.slot())
                        }
                        token => sessions.ready(&self.epoll, token, event.events(), self.slot()),
                    }
                }
            }
            panic!("the sessions never got there");
        }

        /// The upstream's connection, once the sessions have made it.
        fn accept(&self, sessions: &mut Sessions<'_>) -> End {
            let (stream, _) = self.until(sessions, |_| self.pool.accept().ok());
            End::new(stream)
        }
    }

    #[test]
    fn sessions_share_one_upstream_and_each_gets_its_own_answers() {
        let (rig, endpoint) = Rig::new("event-forward-test");
        let per_ip = PerIp::new(0, 8).unwrap();
        let limits = Limits {
            idle_timeout: Duration::ZERO,
            request_timeout: Duration::ZERO,
            max_line: 64 << 10,
        };
        let mut sessions = Sessions::new(limits, &per_ip, Some(endpoint));
        let (mut a, mut b) = (rig.client(&mut sessions), rig.client(&mut sessions));
        a.send(b"a1");
        a.send(b"a2");
        b.send(b"b1");
        let mut pool = rig.accept(&mut sessions);
        // Both sessions' jobs arrive on the one connection, in some order.
        let mut seen = Vec::new();
        while seen.len() < 3 {
            seen.push(rig.until(&mut sessions, |_| pool.next()));
        }
        for job in &seen {
            pool.send(&job.to_ascii_uppercase());
        }
        seen.sort();
        assert_eq!(seen, [&b"a1"[..], b"a2", b"b1"]);
        assert_eq!(rig.until(&mut sessions, |_| a.next()), b"A1");
        assert_eq!(rig.until(&mut sessions, |_| a.next()), b"A2");
        assert_eq!(rig.until(&mut sessions, |_| b.next()), b"B1");

        // b sends a job and leaves before its answer: a newcomer in b's
        // slot must not get it.
        b.send(b"b2");
        assert_eq!(rig.until(&mut sessions, |_| pool.next()), b"b2");
        drop(b);
        rig.until(&mut sessions, |s| (s.len() == 1).then_some(()));
        let mut c = rig.client(&mut sessions);
        pool.send(b"B2");
        c.send(b"c1");
        assert_eq!(rig.until(&mut sessions, |_| pool.next()), b"c1");
        pool.send(b"C1");
        assert_eq!(
            rig.until(&mut sessions, |_| c.next()),
            b"C1",
            "b's answer was dropped, not given to c"
        );

        // The pool goes away holding a's job: a hears why, and its next
        // job connects again.
        a.send(b"a3");
        assert_eq!(rig.until(&mut sessions, |_| pool.next()), b"a3");
        drop(pool);
        let broke = String::from_utf8(rig.until(&mut sessions, |_| a.next())).unwrap();
        assert!(
            broke.starts_with("ERR the pool connection broke (pool \"event-forward-test\""),
            "{broke}"
        );
        a.send(b"a4");
        let mut pool = rig.accept(&mut sessions);
        assert_eq!(rig.until(&mut sessions, |_| pool.next()), b"a4");
        pool.send(b"A4");
        assert_eq!(rig.until(&mut sessions, |_| a.next()), b"A4");
    }
}
