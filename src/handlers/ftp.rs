//! `ftp`: the classic text FTP of the course, serving `root`.
//!
//! One request per read, at most [`MAX_REQUEST`] bytes of UTF-8, no
//! terminator (one trailing `\n` or `\r\n` is dropped, for `nc` users);
//! the verb and the file name split at the first space:
//!
//! - `LIST`: `OK`, a pause, then the regular files' names joined by `\n`
//!   in one write (hidden names left out, cut below [`MAX_LISTING`]);
//!   `FAIL` when there are none;
//! - `GET name`: `OK`, a pause, the file (queued as a file range, sent
//!   with sendfile, never read whole), a pause, then `##` alone; `FAIL`
//!   when it is missing or refused;
//! - `PUT name`: `OK`, then the client's bytes until `##` (the rules are
//!   in `ftp/end_mark.rs`), no reply; `FAIL` when the name exists (never
//!   overwritten) or is refused;
//! - `EXIT`: the connection closes, no reply.
//!
//! A bare `GET`/`PUT`, an unknown verb or a request that is not UTF-8 gets
//! `FAIL` and the session goes on. A read over [`MAX_REQUEST`] is dropped
//! with what follows it until the client is quiet for `upload_quiet`, then
//! answered `FAIL` (at most `max_file_size` bytes of it, or the connection
//! closes). An upload that grows past `max_file_size` is discarded and the
//! connection closed: the client is not reading then, and a `FAIL` would be
//! taken as the answer to its next request.
//!
//! The pauses (`pause`, 100 ms by default) are what the classic client
//! needs: it compares a whole `recv(128)` to `OK` and a whole `recv(1024)`
//! to `##`, so nothing may be merged into either. They are session timers
//! ([`Session::deadline`]), never sleeps, and start once what comes before
//! them has left (`Session::drained`); meanwhile the client is not read.
//! Names, opening and uploads follow `root.rs`.

mod end_mark;
#[cfg(test)]
mod tests;

use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd};
use std::time::{Duration, Instant};

use self::end_mark::{EndOfUpload, END_MARK};
use super::root::{check_name, Root, Upload};
use super::{Context, Flow, Handler, HandlerError, Output, Session};

/// The longest request: the classic server's one `recv(1024)`.
pub const MAX_REQUEST: usize = 1024;
/// A listing stays under this, in one write (names past it are left out).
pub const MAX_LISTING: usize = 1 << 20;

const OK: &[u8] = b"OK";
const FAIL: &[u8] = b"FAIL";

/// The `ftp` handler: the root, opened once, and the timings.
#[derive(Debug)]
pub struct Ftp {
    root: Root,
    settings: Settings,
}

/// What every session of a service shares.
#[derive(Debug, Clone, Copy)]
struct Settings {
    pause: Duration,
    upload_quiet: Duration,
    max_file_size: u64,
}

impl Ftp {
    pub fn new(context: &Context<'_>) -> Result<Ftp, HandlerError> {
        let config = context.service;
        Ok(Ftp {
            root: Root::of(context, "ftp")?,
            settings: Settings {
                pause: config.pause,
                upload_quiet: config.upload_quiet,
                max_file_size: config.max_file_size,
            },
        })
    }
}

impl Handler for Ftp {
    fn name(&self) -> &'static str {
        "ftp"
    }

    fn keep_open(&self, keep: &mut dyn FnMut(BorrowedFd<'_>)) {
        keep(self.root.as_fd());
    }

    fn session(&self) -> Option<Box<dyn Session>> {
        Some(Box::new(FtpSession::new(self.root.clone(), self.settings)))
    }
}

/// One request.
#[derive(Debug, PartialEq, Eq)]
pub enum Request<'a> {
    List,
    Get(&'a str),
    Put(&'a str),
    Exit,
}

/// Why a read is not a request.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("a request over {MAX_REQUEST} bytes")]
    TooLong,
    #[error("a request that is not UTF-8")]
    NotUtf8,
    #[error("{0} without a file name")]
    NoName(&'static str),
    #[error("an unknown verb")]
    UnknownVerb,
}

/// Reads one request. `LIST` and `EXIT` ignore what follows a space; the
/// file name of `GET` and `PUT` is checked when it is used.
pub fn parse(read: &[u8]) -> Result<Request<'_>, Refusal> {
    if read.len() > MAX_REQUEST {
        return Err(Refusal::TooLong);
    }
    let text = std::str::from_utf8(read).map_err(|_| Refusal::NotUtf8)?;
    let text = text
        .strip_suffix("\r\n")
        .or_else(|| text.strip_suffix('\n'))
        .unwrap_or(text);
    let (verb, name) = text.split_once(' ').unwrap_or((text, ""));
    match verb {
        "LIST" => Ok(Request::List),
        "EXIT" => Ok(Request::Exit),
        "GET" if name.is_empty() => Err(Refusal::NoName("GET")),
        "PUT" if name.is_empty() => Err(Refusal::NoName("PUT")),
        "GET" => Ok(Request::Get(name)),
        "PUT" => Ok(Request::Put(name)),
        _ => Err(Refusal::UnknownVerb),
    }
}

/// Where a connection is.
#[derive(Debug)]
enum State {
    /// The next read is a request.
    Request,
    /// A reply's part is queued; once it has left, a pause, then `then`.
    Sending(Then),
    /// Quiet until `until`, then `then` is queued.
    Pausing { until: Instant, then: Then },
    /// A `PUT`'s bytes are arriving.
    Receiving { upload: Upload, end: EndOfUpload },
    /// An over-long request is read and dropped until the client is
    /// quiet (`until`); then `FAIL`.
    Skipping { until: Instant, skipped: u64 },
    /// Closing: nothing more is read.
    Closed,
}

/// What follows a pause.
#[derive(Debug)]
enum Then {
    /// `LIST`: the names, in one write.
    Names(Vec<u8>),
    /// `GET`: the file's bytes (its size when opened), then another pause.
    File(File, u64),
    /// `GET`: the `##` after the file.
    EndMark,
}

/// What happened to a session.
#[derive(Debug, Clone, Copy)]
enum Event<'a> {
    Input(&'a [u8]),
    InputEnded,
    /// Everything queued has left.
    Drained,
    /// Its deadline came.
    Wake,
}

/// One client's connection.
#[derive(Debug)]
struct FtpSession {
    root: Root,
    settings: Settings,
    state: State,
    /// It closed on an upload over `max_file_size` or an over-long
    /// request whose rest may still be arriving: the close lingers.
    unread: bool,
}

impl FtpSession {
    fn new(root: Root, settings: Settings) -> FtpSession {
        FtpSession {
            root,
            settings,
            state: State::Request,
            unread: false,
        }
    }

    /// The one table of (state, event): what to queue and where to go.
    fn step(&mut self, event: Event<'_>, now: Instant, out: &mut Output) -> Flow {
        let pause = self.settings.pause;
        let mid_stream = matches!(self.state, State::Receiving { .. } | State::Skipping { .. });
        let (next, flow) = match (std::mem::replace(&mut self.state, State::Closed), event) {
            (State::Request, Event::Input(read)) => self.request(read, now, out),
            (State::Sending(then), Event::Drained) => (
                State::Pausing {
                    until: now + pause,
                    then,
                },
                Flow::Continue,
            ),
            (State::Pausing { until, then }, Event::Wake) if now >= until => {
                (after_pause(then, now + pause, out), Flow::Continue)
            }
            (State::Receiving { upload, end }, Event::Input(read)) => {
                self.receive(upload, end, read, now)
            }
            (State::Receiving { upload, end }, Event::Wake) if end.quiet_by(now) => {
                upload.finish(false);
                (State::Request, Flow::Continue)
            }
            (State::Receiving { upload, end }, Event::InputEnded) => {
                if end.complete_at_eof() {
                    upload.finish(false);
                }
                (State::Closed, Flow::Close)
            }
            (State::Skipping { skipped, .. }, Event::Input(read)) => {
                self.skip(skipped + read.len() as u64, now)
            }
            (State::Skipping { until, .. }, Event::Wake) if now >= until => {
                out.push(FAIL);
                (State::Request, Flow::Continue)
            }
            (_, Event::InputEnded) => (State::Closed, Flow::Close),
            // An early wake, a reply part out while nothing waits on it,
            // or a read where none was asked for (the drivers do not read
            // while `wants_input` is false).
            (state, Event::Wake | Event::Drained | Event::Input(_)) => (state, Flow::Continue),
        };
        self.state = next;
        self.unread |= flow == Flow::Close && mid_stream && matches!(event, Event::Input(_));
        flow
    }

    /// Answers one request read in `State::Request`.
    fn request(&self, read: &[u8], now: Instant, out: &mut Output) -> (State, Flow) {
        let next = match parse(read) {
            Ok(Request::Exit) => return (State::Closed, Flow::Close),
            Ok(Request::List) => self
                .listing()
                .map(|names| State::Sending(Then::Names(names))),
            Ok(Request::Get(name)) => self
                .root
                .open_regular(name)
                .ok()
                .map(|(file, size)| State::Sending(Then::File(file, size))),
            Ok(Request::Put(name)) => self.upload(name).map(|upload| State::Receiving {
                upload,
                end: EndOfUpload::new(self.settings.upload_quiet),
            }),
            Err(Refusal::TooLong) => return self.skip(read.len() as u64, now),
            Err(_) => None,
        };
        match next {
            Some(state) => {
                out.push(OK);
                (state, Flow::Continue)
            }
            None => {
                out.push(FAIL);
                (State::Request, Flow::Continue)
            }
        }
    }

    /// `LIST`'s names joined by `\n`, below [`MAX_LISTING`]; `None` when
    /// there are none (or the root cannot be read).
    fn listing(&self) -> Option<Vec<u8>> {
        let mut joined = Vec::new();
        for name in self.root.regular_files().ok()? {
            let separator = usize::from(!joined.is_empty());
            if joined.len() + separator + name.len() >= MAX_LISTING {
                break;
            }
            if separator == 1 {
                joined.push(b'\n');
            }
            joined.extend_from_slice(name.as_bytes());
        }
        (!joined.is_empty()).then_some(joined)
    }

    /// A `PUT` that may go ahead: a good name that does not exist yet.
    fn upload(&self, name: &str) -> Option<Upload> {
        if check_name(name).is_err() || self.root.exists(name) {
            return None;
        }
        self.root.upload(name.to_string())
    }

    /// Stores one read of an upload; past `max_file_size` or on a write
    /// error the upload is dropped (removed) and the connection closes.
    fn receive(
        &self,
        mut upload: Upload,
        mut end: EndOfUpload,
        read: &[u8],
        now: Instant,
    ) -> (State, Flow) {
        let step = end.read(read, now);
        let held: &[u8] = if step.held_was_data { END_MARK } else { &[] };
        let size = upload.written() + (held.len() + step.data.len()) as u64;
        if size > self.settings.max_file_size
            || upload.write(held).is_err()
            || upload.write(step.data).is_err()
        {
            return (State::Closed, Flow::Close);
        }
        if step.complete {
            upload.finish(false);
            return (State::Request, Flow::Continue);
        }
        (State::Receiving { upload, end }, Flow::Continue)
    }

    /// An over-long request, `skipped` bytes of it so far, the last read
    /// at `now`.
    fn skip(&self, skipped: u64, now: Instant) -> (State, Flow) {
        if skipped > self.settings.max_file_size {
            return (State::Closed, Flow::Close);
        }
        let until = now + self.settings.upload_quiet;
        (State::Skipping { until, skipped }, Flow::Continue)
    }
}

/// Queues what a pause held back; `again` is when a pause that follows
/// it would end.
fn after_pause(then: Then, again: Instant, out: &mut Output) -> State {
    match then {
        Then::Names(names) => {
            out.push(&names);
            State::Request
        }
        // Nothing to send: straight to the pause before `##`.
        Then::File(_, 0) => State::Pausing {
            until: again,
            then: Then::EndMark,
        },
        Then::File(file, size) => {
            out.send_file(file, 0, size);
            State::Sending(Then::EndMark)
        }
        Then::EndMark => {
            out.push(END_MARK);
            State::Request
        }
    }
}

impl Session for FtpSession {
    fn input(&mut self, data: &[u8], out: &mut Output) -> Flow {
        self.step(Event::Input(data), Instant::now(), out)
    }

    fn input_ended(&mut self, out: &mut Output) -> Flow {
        self.step(Event::InputEnded, Instant::now(), out)
    }

    /// Not while a reply is under way: the client waits for it anyway,
    /// and what it sends meanwhile is the next request.
    fn wants_input(&self) -> bool {
        matches!(
            self.state,
            State::Request | State::Receiving { .. } | State::Skipping { .. }
        )
    }

    fn drained(&mut self, out: &mut Output) -> Flow {
        self.step(Event::Drained, Instant::now(), out)
    }

    fn unread_input(&self) -> bool {
        self.unread
    }

    fn deadline(&self) -> Option<Instant> {
        match &self.state {
            State::Pausing { until, .. } | State::Skipping { until, .. } => Some(*until),
            State::Receiving { end, .. } => end.deadline(),
            State::Request | State::Sending(_) | State::Closed => None,
        }
    }

    fn wake(&mut self, now: Instant, out: &mut Output) -> Flow {
        self.step(Event::Wake, now, out)
    }
}
