//! The blocking driver of one [`Session`]: what a `fork` child or a
//! `prefork` worker runs for a handler that has no `serve` of its own.
//!
//! One connection, made non-blocking and watched with poll(2), so the
//! session is driven exactly as `event` mode drives it: it may speak first
//! ([`Session::start`]), its output is written as the socket drains and
//! pulled from it when empty ([`Session::drained`]), and reading stops
//! while output waits (back-pressure), and a session's timer
//! ([`Session::deadline`]) bounds the wait so a pause ends on time.
//! `idle_timeout` without a byte read
//! and `request_timeout` without write progress end the connection. A
//! session that closes with input unread ([`Session::unread_input`]) gets
//! a lingering close ([`linger`]). Runs in a child process only; never
//! logs.

use std::io;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout};

use super::{linger, read_uninit, Connection, Flow, Limits, Outcome, Output, Session};

/// Serves `conn` with `session` to its end.
pub fn drive(conn: Connection, mut session: Box<dyn Session>, limits: &Limits) -> Outcome {
    let stream = conn.stream;
    if let Err(e) = stream.set_nonblocking(true) {
        return Outcome::of_error(&e);
    }
    let mut out = Output::new();
    let mut buf = vec![std::mem::MaybeUninit::<u8>::uninit(); limits.read_buffer()];
    let mut closing = session.start(&mut out) == Flow::Close;
    let mut input_done = false;
    let mut last = Instant::now();
    loop {
        match write_out(&stream, &mut out, &mut *session, &mut closing) {
            Ok(true) => last = Instant::now(),
            Ok(false) => {}
            Err(e) => return Outcome::of_error(&e),
        }
        let writing = !out.is_empty();
        if !writing && closing {
            if !input_done && session.unread_input() {
                linger(&stream);
            }
            return Outcome::Done;
        }
        let events = if writing {
            PollFlags::POLLOUT
        } else if !input_done && session.wants_input() {
            PollFlags::POLLIN
        } else if session.deadline().is_some() {
            // A pause: only the timer can move things on.
            PollFlags::empty()
        } else {
            // Nothing to write, nothing to read, no timer: nothing can happen.
            return Outcome::Done;
        };
        let limit = if writing {
            limits.request_timeout
        } else {
            limits.idle_timeout
        };
        let deadline = session.deadline();
        let mut fds = [PollFd::new(stream.as_fd(), events)];
        match nix::poll::poll(&mut fds, poll_timeout_until(limit, last, deadline)) {
            Ok(0) if !limit.is_zero() && last.elapsed() >= limit => return Outcome::TimedOut,
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Outcome::of_error(&e.into()),
        }
        let now = Instant::now();
        if deadline.is_some_and(|at| now >= at) && session.wake(now, &mut out) == Flow::Close {
            closing = true;
        }
        let ready = fds[0].revents().unwrap_or(PollFlags::empty());
        if writing || !events.contains(PollFlags::POLLIN) || ready.is_empty() {
            continue;
        }
        let flow = match read_uninit(&stream, &mut buf) {
            Ok([]) => {
                input_done = true;
                session.input_ended(&mut out)
            }
            Ok(input) => {
                last = Instant::now();
                session.input(input, &mut out)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Outcome::Done,
            Err(e) => return Outcome::of_error(&e),
        };
        if flow == Flow::Close {
            closing = true;
        }
    }
}

/// Writes what the socket takes; each time everything is out, asks the
/// session for more. Returns whether anything was written. `event` mode
/// writes through it too.
pub fn write_out(
    socket: &impl AsFd,
    out: &mut Output,
    session: &mut dyn Session,
    closing: &mut bool,
) -> io::Result<bool> {
    let mut progress = false;
    loop {
        let written = out.write_to(socket.as_fd())?;
        progress |= written.bytes > 0;
        if !written.drained || written.bytes == 0 || *closing {
            return Ok(progress);
        }
        if session.drained(out) == Flow::Close {
            *closing = true;
        }
        if out.is_empty() {
            return Ok(progress);
        }
    }
}

/// The shorter of what is left of `limit` since `last` and the time until
/// `deadline`.
fn poll_timeout_until(limit: Duration, last: Instant, deadline: Option<Instant>) -> PollTimeout {
    let Some(at) = deadline else {
        return poll_timeout(limit, last);
    };
    let until = at.saturating_duration_since(Instant::now()).as_millis() + 1;
    let until = PollTimeout::try_from(until).unwrap_or(PollTimeout::MAX);
    match poll_timeout(limit, last) {
        PollTimeout::NONE => until,
        left => left.min(until),
    }
}

/// What is left of `limit` since `last`; no limit when zero.
pub(super) fn poll_timeout(limit: Duration, last: Instant) -> PollTimeout {
    if limit.is_zero() {
        return PollTimeout::NONE;
    }
    let left = limit.saturating_sub(last.elapsed()).as_millis() + 1;
    PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX)
}
