//! `pool`: a service whose clients send frames (4-byte big-endian length,
//! then the payload), each one a job for the `[[pool]]` named by `pool =`,
//! and get one frame back per job, in the order sent; a failed job's answer
//! starts with `ERR ` and says why.
//!
//! A client's frames are checked against the service's `max_frame` before
//! anything is forwarded: an over-size frame is answered with `ERR a frame
//! of N bytes is over max_frame (M bytes)` after the answers of the frames
//! before it, then the connection is closed (its byte stream cannot be
//! resynchronised; the close lingers, so the refusal is not lost to a
//! reset). Every other protocol error, too, closes only its own
//! connection. A client is not read while it has [`MAX_OWED`] jobs (or
//! [`MAX_OWED_BYTES`]) unanswered, nor while its answers wait for it to
//! read them: back-pressure, never an unbounded buffer.
//!
//! The client side is [`Forwarder`], a [`Session`] that does no I/O; the
//! jobs go to the pool over an [`Upstream`] connection to its endpoint.
//! `fork` and `prefork` run [`relay`]: one upstream per client, both
//! relayed with poll(2) until the client has closed and every answer is
//! written. In `event` mode the worker keeps one upstream for all its
//! sessions ([`Handler::upstream`], `server/event.rs`). If the upstream
//! breaks, the jobs it held are answered `ERR the pool connection broke`
//! and the next job connects again.

use std::collections::VecDeque;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::AsFd;
use std::time::Instant;

use nix::poll::{PollFd, PollFlags};

use super::drive::poll_timeout;
use super::upstream::{Endpoint, Upstream};
use super::{
    linger, read_uninit, Connection, Context, Flow, Handler, HandlerError, Limits, Outcome, Output,
    Session,
};
use crate::ipc::{frame, Decoder};

/// Unanswered jobs of one client before it is no longer read.
pub const MAX_OWED: usize = 64;
/// Bytes of unanswered jobs of one client before it is no longer read.
pub const MAX_OWED_BYTES: usize = 4 << 20;
/// The relay's read size from the client.
const CLIENT_READ: usize = 32 << 10;

/// The `pool` handler: where the pool listens and the frame bound.
#[derive(Debug, Clone)]
pub struct PoolForwarding {
    endpoint: Endpoint,
    max_frame: usize,
}

impl PoolForwarding {
    /// The supervisor's pid names the endpoint.
    pub fn new(context: &Context<'_>) -> Result<PoolForwarding, HandlerError> {
        let config = context.service;
        let pool = config.pool.as_deref().ok_or_else(|| {
            HandlerError::Setup("handler = \"pool\" needs pool = \"NAME\" naming a [[pool]]".into())
        })?;
        Ok(PoolForwarding {
            endpoint: Endpoint::new(context.forkd.as_raw() as u32, pool),
            max_frame: usize::try_from(config.max_frame).unwrap_or(usize::MAX),
        })
    }
}

impl Handler for PoolForwarding {
    fn name(&self) -> &'static str {
        "pool"
    }

    fn session(&self) -> Option<Box<dyn Session>> {
        Some(Box::new(Forwarder::new(self.max_frame)))
    }

    fn serve(&self, conn: Connection, limits: &Limits) -> Outcome {
        relay(
            conn,
            limits,
            Forwarder::new(self.max_frame),
            Upstream::new(self.endpoint.clone()),
        )
    }

    fn upstream(&self) -> Option<&Endpoint> {
        Some(&self.endpoint)
    }
}

/// One client's side: frames in (bounded by `max_frame`), requests out to
/// the upstream, answers back in order. Pure: fed bytes, it appends bytes.
#[derive(Debug)]
pub struct Forwarder {
    requests: Decoder,
    /// Requests decoded and not yet taken for the upstream, encoded.
    ready: Vec<u8>,
    ready_count: usize,
    /// Payload sizes of the requests not yet answered, oldest first.
    owed: VecDeque<usize>,
    owed_bytes: usize,
    /// The answer to an over-size frame, sent after every earlier answer.
    refusal: Option<Vec<u8>>,
    /// Nothing more is read: the client closed, or sent an over-size frame.
    ended: bool,
    /// An over-size frame was refused: its rest may still be arriving.
    refused: bool,
}

impl Forwarder {
    pub fn new(max_frame: usize) -> Forwarder {
        Forwarder {
            requests: Decoder::new(max_frame),
            ready: Vec::new(),
            ready_count: 0,
            owed: VecDeque::new(),
            owed_bytes: 0,
            refusal: None,
            ended: false,
            refused: false,
        }
    }

    /// Decodes buffered frames while the client has room for more
    /// unanswered jobs: one read may bring thousands of small frames, and
    /// the rest wait here (at most one read's worth) for answers.
    fn decode(&mut self) {
        while !self.ended && self.has_room() {
            match self.requests.next_frame() {
                Ok(Some(payload)) => {
                    frame::encode(&payload, &mut self.ready);
                    self.ready_count += 1;
                    self.owed.push_back(payload.len());
                    self.owed_bytes += payload.len();
                }
                Ok(None) => return,
                Err(e) => {
                    let refusal = format!("ERR {e}; closing the connection");
                    self.refusal = Some(refusal.into_bytes());
                    self.ended = true;
                    self.refused = true;
                }
            }
        }
    }

    fn has_room(&self) -> bool {
        self.owed.len() < MAX_OWED && self.owed_bytes < MAX_OWED_BYTES
    }

    /// Close once the input ended and every answer (and the refusal) is out.
    fn settle(&mut self, out: &mut Output) -> Flow {
        if !self.ended || !self.owed.is_empty() {
            return Flow::Continue;
        }
        if let Some(refusal) = self.refusal.take() {
            frame::encode(&refusal, out.bytes());
        }
        Flow::Close
    }
}

impl Session for Forwarder {
    fn input(&mut self, data: &[u8], out: &mut Output) -> Flow {
        self.requests.extend(data);
        self.decode();
        self.settle(out)
    }

    fn input_ended(&mut self, out: &mut Output) -> Flow {
        // Every whole frame is decoded by now (input is read only while
        // there is room); a frame cut short gets no answer: nobody is
        // left to send it to.
        self.ended = true;
        self.settle(out)
    }

    fn wants_input(&self) -> bool {
        !self.ended && self.has_room()
    }

    fn unread_input(&self) -> bool {
        self.refused
    }

    fn take_requests(&mut self, to: &mut Vec<u8>) -> usize {
        to.append(&mut self.ready);
        std::mem::take(&mut self.ready_count)
    }

    fn answer(&mut self, result: &[u8], out: &mut Output) -> Flow {
        if let Some(size) = self.owed.pop_front() {
            self.owed_bytes -= size;
            frame::encode(result, out.bytes());
        }
        self.decode();
        self.settle(out)
    }
}

/// `fork` and `prefork`: relays one client and its own upstream with
/// poll(2) until the client closed and has every answer, or a timeout:
/// `idle_timeout` without a request or an answer, `request_timeout` for
/// an answer the client does not read.
pub fn relay(
    conn: Connection,
    limits: &Limits,
    mut session: Forwarder,
    mut upstream: Upstream<()>,
) -> Outcome {
    let client = conn.stream;
    if let Err(e) = client.set_nonblocking(true) {
        return Outcome::of_error(&e);
    }
    let mut out = Output::new();
    let mut flow = Flow::Continue;
    let mut last = Instant::now();
    // Not zeroed: in a forked child every page touched is a fault.
    let mut stack = [MaybeUninit::<u8>::uninit(); CLIENT_READ];
    loop {
        if forward(&mut session, &mut upstream, &mut out) == Flow::Close {
            flow = Flow::Close;
        }
        match out.write_to(client.as_fd()) {
            Ok(written) if written.bytes > 0 => last = Instant::now(),
            Ok(_) => {}
            Err(e) => return Outcome::of_error(&e),
        }
        if out.is_empty() && flow == Flow::Close {
            if session.unread_input() {
                linger(&client);
            }
            return Outcome::Done;
        }
        let writing = !out.is_empty();
        let client_events = if writing {
            PollFlags::POLLOUT
        } else if session.wants_input() {
            PollFlags::POLLIN
        } else {
            PollFlags::empty()
        };
        let limit = if writing {
            limits.request_timeout
        } else {
            limits.idle_timeout
        };
        let (client_ready, upstream_ready) = {
            let mut fds = vec![PollFd::new(client.as_fd(), client_events)];
            if let Some(fd) = upstream.fd() {
                let mut events = PollFlags::POLLIN;
                if upstream.wants_write() {
                    events |= PollFlags::POLLOUT;
                }
                fds.push(PollFd::new(fd, events));
            }
            match nix::poll::poll(&mut fds, poll_timeout(limit, last)) {
                Ok(0) if !limit.is_zero() && last.elapsed() >= limit => return Outcome::TimedOut,
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(_) => return Outcome::Failed,
            }
            let revents = |fd: &PollFd| fd.revents().unwrap_or(PollFlags::empty());
            (revents(&fds[0]), fds.get(1).map(revents))
        };
        if let Some(ready) = upstream_ready.filter(|r| !r.is_empty()) {
            if receive(&mut session, &mut upstream, ready, &mut out) == Flow::Close {
                flow = Flow::Close;
            }
            last = Instant::now();
        }
        let gone = PollFlags::POLLHUP | PollFlags::POLLERR;
        if writing || client_ready.is_empty() {
            continue;
        }
        if client_events.is_empty() {
            if client_ready.intersects(gone) {
                // Closed while it waited for answers: nobody to give them to.
                return Outcome::Done;
            }
            continue;
        }
        let input = match read_uninit(&client, &mut stack) {
            Ok([]) => session.input_ended(&mut out),
            Ok(input) => session.input(input, &mut out),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Outcome::Done,
            Err(e) => return Outcome::of_error(&e),
        };
        last = Instant::now();
        if input == Flow::Close {
            flow = Flow::Close;
        }
    }
}

/// Sends what the session decoded. Requests the upstream cannot take
/// (unreachable, broken) are answered with the reason at once, which may
/// let the session decode more: repeat until it has none ready.
fn forward(session: &mut Forwarder, upstream: &mut Upstream<()>, out: &mut Output) -> Flow {
    let mut flow = Flow::Continue;
    while session.ready_count > 0 {
        upstream.queue((), |outbox| session.take_requests(outbox));
        match upstream.flush() {
            Ok(()) => break,
            Err(e) => flow = fail(session, upstream, &e, out),
        }
    }
    flow
}

/// The upstream is ready: write what waits, hand every answer read to
/// the session.
fn receive(
    session: &mut Forwarder,
    upstream: &mut Upstream<()>,
    ready: PollFlags,
    out: &mut Output,
) -> Flow {
    let mut flow = Flow::Continue;
    let mut failed = None;
    if ready.contains(PollFlags::POLLOUT) {
        failed = upstream.flush().err();
    }
    if failed.is_none() && ready.intersects(!PollFlags::POLLOUT) {
        failed = upstream.read().err();
    }
    loop {
        match upstream.next_answer() {
            Ok(Some(((), answer))) => flow = session.answer(&answer, out),
            Ok(None) => break,
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    match failed {
        Some(e) => fail(session, upstream, &e, out),
        None => flow,
    }
}

/// Answers every job the upstream held with why it failed.
fn fail(
    session: &mut Forwarder,
    upstream: &mut Upstream<()>,
    e: &io::Error,
    out: &mut Output,
) -> Flow {
    let (answer, owners) = upstream.break_off(e);
    let mut flow = Flow::Continue;
    for () in owners {
        flow = session.answer(&answer, out);
    }
    flow
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::time::Duration;

    fn frames(bytes: &[u8]) -> Vec<Vec<u8>> {
        let mut d = Decoder::new(1 << 20);
        d.extend(bytes);
        std::iter::from_fn(|| d.next_frame().unwrap()).collect()
    }

    fn wire(payloads: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for p in payloads {
            frame::encode(p, &mut out);
        }
        out
    }

    #[test]
    fn requests_are_forwarded_whole_and_answers_leave_in_order() {
        let mut f = Forwarder::new(1024);
        let mut out = Output::new();
        let bytes = wire(&[b"one", b"two"]);
        // Byte by byte: only whole frames are forwarded.
        for b in &bytes[..bytes.len() - 1] {
            assert_eq!(f.input(std::slice::from_ref(b), &mut out), Flow::Continue);
        }
        let mut up = Vec::new();
        assert_eq!(f.take_requests(&mut up), 1);
        f.input(&bytes[bytes.len() - 1..], &mut out);
        assert_eq!(f.take_requests(&mut up), 1);
        assert_eq!(frames(&up), [&b"one"[..], b"two"]);
        assert_eq!(f.input_ended(&mut out), Flow::Continue, "two answers owed");
        assert_eq!(f.answer(b"ONE", &mut out), Flow::Continue);
        assert_eq!(f.answer(b"ERR no", &mut out), Flow::Close);
        assert_eq!(frames(out.bytes()), [&b"ONE"[..], b"ERR no"]);
    }

    #[test]
    fn an_over_size_frame_is_refused_after_the_earlier_answers_then_closes() {
        let mut f = Forwarder::new(8);
        let mut out = Output::new();
        let mut bytes = wire(&[b"ok"]);
        bytes.extend_from_slice(&frame::header(9));
        assert_eq!(f.input(&bytes, &mut out), Flow::Continue);
        assert!(!f.wants_input(), "nothing is read after the refusal");
        assert_eq!(f.take_requests(&mut Vec::new()), 1);
        assert!(out.is_empty(), "the refusal waits for the answer before it");
        assert_eq!(f.answer(b"OK", &mut out), Flow::Close);
        let answers = frames(out.bytes());
        assert_eq!(answers[0], b"OK");
        assert_eq!(
            String::from_utf8_lossy(&answers[1]),
            "ERR a frame of 9 bytes is over max_frame (8 bytes); closing the connection"
        );
    }

    #[test]
    fn a_client_with_many_unanswered_jobs_is_not_read() {
        let mut f = Forwarder::new(1 << 20);
        let mut out = Output::new();
        // One read with more frames than may be owed: the rest wait.
        let many: Vec<&[u8]> = vec![b"x"; MAX_OWED + 3];
        f.input(&wire(&many), &mut out);
        assert!(!f.wants_input());
        assert_eq!(f.take_requests(&mut Vec::new()), MAX_OWED);
        f.answer(b"X", &mut out);
        assert_eq!(f.take_requests(&mut Vec::new()), 1, "one answer, one more");
        assert!(!f.wants_input());
        for _ in 0..3 {
            f.answer(b"X", &mut out);
        }
        assert_eq!(f.take_requests(&mut Vec::new()), 2);
        assert!(f.wants_input(), "nothing waits and room again");
        let mut f = Forwarder::new(MAX_OWED_BYTES);
        f.input(&wire(&[&vec![0u8; MAX_OWED_BYTES]]), &mut out);
        assert!(!f.wants_input(), "bytes owed count too");
    }

    #[test]
    fn the_blocking_relay_answers_a_broken_upstreams_jobs_and_connects_again() {
        use std::os::linux::net::SocketAddrExt;
        use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
        let name = "relay-test";
        let address = crate::supervisor::endpoint_name(std::process::id(), name);
        let pool =
            UnixListener::bind_addr(&SocketAddr::from_abstract_name(address.as_bytes()).unwrap())
                .unwrap();
        let (mut client, far) = UnixStream::pair().unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let limits = Limits {
            idle_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(10),
            max_line: 64 << 10,
        };
        // A test thread stands in for the worker process; forkd's own
        // code never starts one (the supervisor must stay single-threaded).
        let relay = std::thread::spawn(move || {
            let conn = Connection {
                stream: super::super::Stream::Unix(far),
                peer: super::super::Peer::Unix,
            };
            let upstream = Upstream::new(Endpoint::new(std::process::id(), name));
            relay(conn, &limits, Forwarder::new(1024), upstream)
        });
        client.write_all(&wire(&[b"one", b"two"])).unwrap();
        let (mut up, _) = pool.accept().unwrap();
        assert_eq!(frame::read_frame(&mut up, 64).unwrap().unwrap(), b"one");
        assert_eq!(frame::read_frame(&mut up, 64).unwrap().unwrap(), b"two");
        frame::write_frame(&mut up, b"ONE").unwrap();
        drop(up);
        let read = |c: &mut UnixStream| text(&frame::read_frame(c, 1024).unwrap().unwrap());
        assert_eq!(read(&mut client), "ONE");
        let broke = read(&mut client);
        assert!(
            broke.starts_with("ERR the pool connection broke (pool \"relay-test\""),
            "{broke}"
        );
        client.write_all(&wire(&[b"three"])).unwrap();
        client.shutdown(std::net::Shutdown::Write).unwrap();
        let (mut up, _) = pool.accept().unwrap();
        assert_eq!(frame::read_frame(&mut up, 64).unwrap().unwrap(), b"three");
        frame::write_frame(&mut up, b"THREE").unwrap();
        assert_eq!(read(&mut client), "THREE");
        assert!(frame::read_frame(&mut client, 1024).unwrap().is_none());
        assert_eq!(relay.join().unwrap(), Outcome::Done);
    }

    fn text(bytes: &[u8]) -> String {
        String::from_utf8_lossy(bytes).into_owned()
    }
}
