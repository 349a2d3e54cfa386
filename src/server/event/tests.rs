//! `event` mode's sessions driven turn by turn in this process: timers,
//! pulled output and the lingering close.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;

use nix::sys::epoll::{EpollCreateFlags, EpollTimeout};

use super::*;
use crate::handlers::testing::{service_for, Greeter, TempFile, GREETING};
use crate::handlers::{Context, Handler};
use crate::server::scoreboard::Scoreboard;

/// One event worker's sessions, driven turn by turn.
pub(super) struct Rig {
    pub epoll: Epoll,
    pub board: Scoreboard,
}

impl Rig {
    pub fn new() -> Rig {
        Rig {
            epoll: Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).unwrap(),
            board: Scoreboard::new(1).unwrap(),
        }
    }

    pub fn slot(&self) -> &Slot {
        self.board.slot(0).unwrap()
    }

    /// A client connected to a new session of `handler`.
    pub fn client(&self, sessions: &mut Sessions<'_>, handler: &dyn Handler) -> UnixStream {
        let (near, far) = UnixStream::pair().unwrap();
        let conn = Connection {
            stream: Stream::Unix(far),
            peer: Peer::Unix,
        };
        let session = handler.session().unwrap();
        assert!(sessions.add(&self.epoll, conn, session, self.slot()));
        near.set_nonblocking(true).unwrap();
        near
    }

    /// One turn of the worker's loop (at most 20 ms of waiting, less
    /// when a timer is due sooner).
    pub fn turn(&self, sessions: &mut Sessions<'_>) {
        let mut events = [EpollEvent::empty(); 16];
        let now = Instant::now();
        let wait = sessions
            .next_wake()
            .map_or(Duration::from_millis(20), |at| {
                at.saturating_duration_since(now)
                    .min(Duration::from_millis(20))
            });
        let timeout = EpollTimeout::try_from(wait).unwrap();
        let n = self.epoll.wait(&mut events, timeout).unwrap();
        for event in &events[..n] {
            sessions.ready(&self.epoll, event.data(), event.events(), self.slot());
        }
        sessions.run_timers(&self.epoll, Instant::now(), self.slot());
    }

    /// Turns until `client` has sent `want` bytes more into `got`.
    pub fn read(
        &self,
        sessions: &mut Sessions<'_>,
        client: &mut UnixStream,
        want: usize,
    ) -> Vec<u8> {
        let mut got = Vec::new();
        let mut buf = vec![0u8; 64 << 10];
        for _ in 0..2000 {
            let room = (want - got.len()).min(buf.len());
            match client.read(&mut buf[..room]) {
                Ok(n) if n > 0 => got.extend_from_slice(&buf[..n]),
                _ => self.turn(sessions),
            }
            if got.len() == want {
                return got;
            }
        }
        panic!("only {} of {want} bytes arrived", got.len());
    }
}

pub(super) fn limits() -> Limits {
    Limits {
        idle_timeout: Duration::from_secs(10),
        request_timeout: Duration::from_secs(10),
        max_line: 64 << 10,
    }
}

/// With a timer heap instead of a sleep, one session's pause holds
/// up nobody: another is answered at once, and the paused one gets
/// its file only once the pause is over.
#[test]
fn a_pausing_session_never_blocks_the_others() {
    let file = TempFile::new("pause", 1000);
    let service = service_for(&file.path);
    let pause = Duration::from_millis(300);
    let handler = Greeter::new(&Context::new(&service), pause);
    let rig = Rig::new();
    let per_ip = PerIp::new(0, 8).unwrap();
    let mut sessions = Sessions::new(limits(), &per_ip, None);
    let mut slow = rig.client(&mut sessions, &handler);
    let mut quick = rig.client(&mut sessions, &handler);
    assert_eq!(rig.read(&mut sessions, &mut slow, GREETING.len()), GREETING);
    assert_eq!(
        rig.read(&mut sessions, &mut quick, GREETING.len()),
        GREETING
    );
    slow.write_all(b"GET").unwrap();
    let asked = Instant::now();
    assert_eq!(rig.read(&mut sessions, &mut slow, 2), b"OK");
    quick.write_all(b"what?").unwrap();
    assert_eq!(rig.read(&mut sessions, &mut quick, 4), b"FAIL");
    assert!(asked.elapsed() < pause, "answered during the pause");
    let body = rig.read(&mut sessions, &mut slow, file.content.len());
    assert!(asked.elapsed() >= pause, "the file came after the pause");
    assert!(body == file.content);
    assert_eq!(rig.read(&mut sessions, &mut slow, 2), b"##");
}

/// Turns until `client` reads EOF; what it read before.
fn read_to_eof(rig: &Rig, sessions: &mut Sessions<'_>, client: &mut UnixStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    for _ in 0..500 {
        match client.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(_) => rig.turn(sessions),
        }
    }
    panic!("no EOF after {got:?}");
}

/// A session that closes with input unread lingers: the client reads
/// the refusal, then EOF, while its further input is dropped; the
/// connection goes at the client's EOF, or at the linger's deadline
/// from the timer heap when the client never closes.
#[test]
fn a_refusing_session_lingers_until_the_client_closes_or_the_deadline() {
    let file = TempFile::new("linger", 10);
    let service = service_for(&file.path);
    let handler = Greeter::new(&Context::new(&service), Duration::ZERO);
    let rig = Rig::new();
    let per_ip = PerIp::new(0, 8).unwrap();
    let mut sessions = Sessions::new(limits(), &per_ip, None);
    for client_closes in [true, false] {
        let mut client = rig.client(&mut sessions, &handler);
        assert_eq!(
            rig.read(&mut sessions, &mut client, GREETING.len()),
            GREETING
        );
        client.write_all(b"NO").unwrap();
        assert_eq!(read_to_eof(&rig, &mut sessions, &mut client), b"NO");
        assert_eq!(sessions.len(), 1, "still open, lingering");
        client.write_all(&[b'x'; 10_000]).unwrap();
        let started = Instant::now();
        if client_closes {
            drop(client);
        }
        let deadline = started + crate::handlers::LINGER_TIME * 2;
        while !sessions.is_empty() {
            assert!(Instant::now() < deadline, "the linger never ended");
            rig.turn(&mut sessions);
        }
        if client_closes {
            assert!(started.elapsed() < crate::handlers::LINGER_TIME);
        } else {
            assert!(started.elapsed() >= crate::handlers::LINGER_TIME / 2);
        }
    }
}

#[test]
fn an_event_session_greets_first_and_streams_a_file_as_the_socket_drains() {
    let file = TempFile::new("event", 3 << 20);
    let service = service_for(&file.path);
    let handler = Greeter::new(&Context::new(&service), Duration::ZERO);
    let rig = Rig::new();
    let per_ip = PerIp::new(0, 8).unwrap();
    let mut sessions = Sessions::new(limits(), &per_ip, None);
    let mut client = rig.client(&mut sessions, &handler);
    assert_eq!(
        rig.read(&mut sessions, &mut client, GREETING.len()),
        GREETING
    );
    client.write_all(b"GET").unwrap();
    assert_eq!(rig.read(&mut sessions, &mut client, 2), b"OK");
    let body = rig.read(&mut sessions, &mut client, file.content.len());
    assert!(body == file.content, "the file arrived whole and in order");
    assert_eq!(rig.read(&mut sessions, &mut client, 2), b"##");
    client.write_all(b"BYE").unwrap();
    for _ in 0..100 {
        if sessions.is_empty() {
            return;
        }
        rig.turn(&mut sessions);
    }
    panic!("the session did not close after BYE");
}
