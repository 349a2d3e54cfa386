//! `http`: static files under `root` over HTTP/1.1 (and 1.0), GET and
//! HEAD, in every mode.
//!
//! A request head is parsed with httparse straight from the bytes read
//! (copied aside only when it arrives in pieces, or when pipelined
//! requests wait their turn); its target is percent-decoded and folded
//! into a root-relative path (`wire`), opened by the kernel beneath the
//! root (`open`), and answered: 200 with the file, 206 for one byte range
//! (416 when unsatisfiable; several ranges get the whole file), 304 when
//! not modified (`If-None-Match` on the `ETag`, else
//! `If-Modified-Since`), 301 to add the `/` of a
//! directory, 404 with the root's `404.html` or a built-in page, 403 for
//! a symlink refused or a way out of the root, and 400, 405, 413, 414 or
//! 431 for a request that is not served (those close the connection).
//!
//! Speed: a small file (up to [`INLINE_BODY`]) is read into the reply
//! right behind its head, so head and body leave in one write(2); a
//! larger one is a file range the driver sends with sendfile(2) (the head
//! corked in front of it with MSG_MORE). Per request: openat2 and fstat,
//! no other file-system call, and no allocation (the session's buffers
//! and the output's byte run are reused; the Date is formatted once a
//! second).
//!
//! Keep-alive: HTTP/1.1 keeps the connection unless `Connection: close`,
//! HTTP/1.0 closes unless `Connection: keep-alive`; after
//! `max_requests_per_connection` replies, or `keepalive_timeout` idle
//! between requests (a session timer), or when its worker drains (at
//! once between requests, else after the reply in hand), the connection
//! closes. Pipelined
//! requests are answered in order; while a reply holds a file (or 64 KiB
//! of bytes) waits to be sent, the rest wait in the session and the
//! socket is not read (back-pressure). Never blocks on the socket, never
//! logs.
//!
//! Files: `wire.rs` the pure parts (target to path, `Range`, dates,
//! Content-Type), `open.rs` opening beneath the root, `reply.rs` writing
//! heads and the built-in pages, `tests.rs` sessions fed directly.

mod open;
mod reply;
mod wire;

use std::cell::RefCell;
use std::ffi::CStr;
use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::FileExt;
use std::rc::Rc;
use std::time::{Duration, Instant};

use nix::sys::stat::SFlag;

use self::open::{Opened, Opener, Refused};
use self::reply::{content_range, end_head, field, number_field, page_body, DateCache, Status};
use self::wire::{format_http_date, parse_range, resolve_target, Range};
use super::{Context, Flow, Handler, HandlerError, Output, Session};

/// Bodies up to this size are copied behind the head into one write;
/// larger ones are sent with sendfile.
pub const INLINE_BODY: u64 = 16 << 10;
/// Header fields parsed per request at most; more is 431.
const MAX_HEADERS: usize = 64;
/// Queued bytes after which further pipelined requests wait.
const QUEUED_LIMIT: usize = 64 << 10;

/// The `http` handler: the root, opened once when built, and the limits.
#[derive(Debug)]
pub struct Http {
    shared: Rc<Shared>,
}

/// What every session of a service reads.
#[derive(Debug)]
struct Shared {
    opener: Opener,
    /// The largest request head (`max_line`): more is 414 or 431.
    max_head: usize,
    max_requests: u64,
    keepalive_timeout: Duration,
    /// One for every session of the process: formatted once a second.
    date: RefCell<DateCache>,
}

impl Http {
    pub fn new(context: &Context<'_>) -> Result<Http, HandlerError> {
        let config = context.service;
        let dir = super::root::open_dir(context, "http")?;
        Ok(Http {
            shared: Rc::new(Shared {
                opener: Opener::new(dir, config.follow_symlinks),
                max_head: usize::try_from(config.max_line).unwrap_or(usize::MAX),
                max_requests: config.max_requests_per_connection,
                keepalive_timeout: config.keepalive_timeout,
                date: RefCell::default(),
            }),
        })
    }
}

impl Handler for Http {
    fn name(&self) -> &'static str {
        "http"
    }

    fn keep_open(&self, keep: &mut dyn FnMut(BorrowedFd<'_>)) {
        keep(self.shared.opener.root().as_fd());
    }

    fn session(&self) -> Option<Box<dyn Session>> {
        Some(Box::new(HttpSession {
            shared: Rc::clone(&self.shared),
            pending: Vec::new(),
            path: Vec::new(),
            served: 0,
            phase: Phase::Reading,
            input_ended: false,
            unread: false,
            queued: 0,
            idle_since: None,
            keepalive_timer: None,
            draining: false,
        }))
    }
}

/// One connection.
#[derive(Debug)]
struct HttpSession {
    shared: Rc<Shared>,
    /// Bytes read but not yet answered: a request still arriving, or
    /// pipelined requests waiting their turn.
    pending: Vec<u8>,
    /// The decoded path, reused from request to request.
    path: Vec<u8>,
    served: u64,
    phase: Phase,
    input_ended: bool,
    /// It closes with the client's input not all read: a refused request
    /// (the rest of it may still be arriving) or bytes pipelined behind
    /// the last reply. The close then lingers.
    unread: bool,
    /// Bytes (a file counts as the limit) queued since output last drained.
    queued: usize,
    /// Waiting for a request since then (after a reply).
    idle_since: Option<Instant>,
    /// When to check whether the connection has been idle for
    /// `keepalive_timeout`; none before the first reply (`idle_timeout`
    /// bounds the wait for the first request).
    keepalive_timer: Option<Instant>,
    /// The worker drains: the next reply is the last.
    draining: bool,
}

/// Where a connection is between its requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Reading requests and answering them as they come.
    Reading,
    /// Complete requests wait in `pending` for the queued replies to go;
    /// the socket is not read meanwhile.
    Deferred,
    /// The last reply is queued (it says `Connection: close`): nothing
    /// more is read or answered.
    Closing,
}

/// What the request head says, beyond method and target.
#[derive(Debug, Default)]
struct Head<'a> {
    head_only: bool,
    http10: bool,
    range: Option<&'a [u8]>,
    if_modified_since: Option<&'a [u8]>,
    if_none_match: Option<&'a [u8]>,
    if_range: Option<&'a [u8]>,
}

/// What one parse of the buffered bytes found.
enum Parsed {
    /// A request whose head is `len` bytes, answered.
    Answered(usize),
    /// The head is not complete yet.
    Partial,
}

/// The tokens of the `Connection` fields.
#[derive(Debug, Default)]
struct ConnectionTokens {
    close: bool,
    keep_alive: bool,
}

/// Reads the fields a static file server acts on into `head`; `Err` is the
/// status that refuses the request.
fn read_fields<'a>(
    fields: &[httparse::Header<'a>],
    head: &mut Head<'a>,
) -> Result<ConnectionTokens, Status> {
    let mut connection = ConnectionTokens::default();
    let mut host = false;
    for field in fields {
        let name = field.name.as_bytes();
        let value = field.value;
        if name.eq_ignore_ascii_case(b"connection") {
            for token in value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                connection.close |= token.eq_ignore_ascii_case(b"close");
                connection.keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        } else if name.eq_ignore_ascii_case(b"host") {
            host = true;
        } else if name.eq_ignore_ascii_case(b"range") {
            head.range = Some(value);
        } else if name.eq_ignore_ascii_case(b"if-modified-since") {
            head.if_modified_since = Some(value);
        } else if name.eq_ignore_ascii_case(b"if-none-match") {
            head.if_none_match = Some(value);
        } else if name.eq_ignore_ascii_case(b"if-range") {
            head.if_range = Some(value);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding")
            || (name.eq_ignore_ascii_case(b"content-length") && value.trim_ascii() != b"0")
        {
            // A body GET and HEAD have no use for, of a length this
            // connection would have to skip.
            return Err(Status::PayloadTooLarge);
        }
    }
    if !head.http10 && !host {
        // RFC 9112 section 3.2: a 1.1 request without Host is a 400.
        return Err(Status::BadRequest);
    }
    Ok(connection)
}

impl Session for HttpSession {
    fn input(&mut self, data: &[u8], out: &mut Output) -> Flow {
        self.idle_since = None;
        if self.phase == Phase::Closing {
            return Flow::Close;
        }
        if self.pending.is_empty() {
            // The common case: whole requests in one read, parsed in place.
            let used = self.serve_all(data, out);
            let rest = &data[used..];
            if !rest.is_empty() {
                if self.phase == Phase::Closing {
                    self.unread = true;
                } else {
                    self.pending.extend_from_slice(rest);
                }
            }
        } else {
            self.pending.extend_from_slice(data);
            self.serve_pending(out);
        }
        self.flow()
    }

    fn input_ended(&mut self, _out: &mut Output) -> Flow {
        self.input_ended = true;
        if self.phase == Phase::Deferred {
            // Pipelined requests still to answer; `drained` ends it.
            Flow::Continue
        } else {
            Flow::Close
        }
    }

    fn wants_input(&self) -> bool {
        self.phase == Phase::Reading
    }

    fn unread_input(&self) -> bool {
        self.unread
    }

    fn drained(&mut self, out: &mut Output) -> Flow {
        self.queued = 0;
        if self.phase == Phase::Deferred {
            self.phase = Phase::Reading;
            self.serve_pending(out);
        }
        if self.phase != Phase::Deferred && self.pending.is_empty() {
            self.start_idle();
        }
        if self.input_ended && self.phase != Phase::Deferred {
            return Flow::Close;
        }
        self.flow()
    }

    /// Between requests (a reply sent or on its way, nothing read since)
    /// the connection closes now, as nginx closes its idle keep-alive
    /// connections on a graceful stop; a client that has not sent its
    /// first request yet, or is in the middle of one, is answered first
    /// (`Connection: close`).
    fn drain(&mut self) -> Flow {
        self.draining = true;
        if self.served > 0 && self.phase == Phase::Reading && self.pending.is_empty() {
            Flow::Close
        } else {
            self.flow()
        }
    }

    fn deadline(&self) -> Option<Instant> {
        self.keepalive_timer
    }

    fn wake(&mut self, now: Instant, _out: &mut Output) -> Flow {
        let timeout = self.shared.keepalive_timeout;
        match self.idle_since {
            Some(since) if now >= since + timeout => Flow::Close,
            since => {
                self.keepalive_timer = Some(since.unwrap_or(now) + timeout + timer_grain(timeout));
                Flow::Continue
            }
        }
    }
}

/// How late the keep-alive timer may fire: an eighth of the timeout, so
/// that a busy connection moves its timer (a heap entry in event mode) a
/// few times per timeout, not once per request.
fn timer_grain(timeout: Duration) -> Duration {
    (timeout / 8).max(Duration::from_millis(10))
}

impl HttpSession {
    /// No request is in hand: the keep-alive timer runs from now, moved
    /// only when it would fire too early.
    fn start_idle(&mut self) {
        let now = Instant::now();
        self.idle_since = Some(now);
        let timeout = self.shared.keepalive_timeout;
        if !timeout.is_zero() && self.keepalive_timer.map_or(true, |at| at < now + timeout) {
            self.keepalive_timer = Some(now + timeout + timer_grain(timeout));
        }
    }

    fn flow(&self) -> Flow {
        if self.phase == Phase::Closing {
            Flow::Close
        } else {
            Flow::Continue
        }
    }

    /// Answers the requests in `pending`, keeping what is left.
    fn serve_pending(&mut self, out: &mut Output) {
        let pending = std::mem::take(&mut self.pending);
        let used = self.serve_all(&pending, out);
        self.pending = pending;
        if self.phase == Phase::Closing {
            self.unread |= used < self.pending.len();
            self.pending.clear();
        } else {
            self.pending.drain(..used);
        }
    }

    /// Answers every complete request at the start of `data` (until the
    /// queue is full or the connection is closing); returns the bytes used.
    fn serve_all(&mut self, data: &[u8], out: &mut Output) -> usize {
        let mut used = 0;
        while used < data.len() && self.phase == Phase::Reading {
            if self.queued >= QUEUED_LIMIT {
                self.phase = Phase::Deferred;
                break;
            }
            match self.serve_one(&data[used..], out) {
                Parsed::Answered(len) => used += len,
                Parsed::Partial => break,
            }
        }
        used
    }

    /// Parses one request head at the start of `data` and answers it.
    fn serve_one(&mut self, data: &[u8], out: &mut Output) -> Parsed {
        let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut request = httparse::Request::new(&mut fields);
        let len = match request.parse(data) {
            Ok(httparse::Status::Complete(len)) if len <= self.shared.max_head => len,
            Ok(httparse::Status::Partial) if data.len() <= self.shared.max_head => {
                return Parsed::Partial
            }
            Ok(_) => {
                // Too large: is it the request line itself, or the fields?
                let limit = &data[..data.len().min(self.shared.max_head)];
                let status = if limit.contains(&b'\n') {
                    Status::HeadersTooLarge
                } else {
                    Status::UriTooLong
                };
                self.refuse(status, &Head::default(), out);
                return Parsed::Answered(data.len());
            }
            Err(httparse::Error::TooManyHeaders) => {
                self.refuse(Status::HeadersTooLarge, &Head::default(), out);
                return Parsed::Answered(data.len());
            }
            Err(_) => {
                self.refuse(Status::BadRequest, &Head::default(), out);
                return Parsed::Answered(data.len());
            }
        };
        self.answer(&request, out);
        Parsed::Answered(len)
    }

    /// Answers a request that parsed.
    fn answer(&mut self, request: &httparse::Request<'_, '_>, out: &mut Output) {
        let (Some(method), Some(target), Some(version)) =
            (request.method, request.path, request.version)
        else {
            return self.refuse(Status::BadRequest, &Head::default(), out);
        };
        let head_only = match method {
            "GET" => false,
            "HEAD" => true,
            _ => return self.refuse(Status::MethodNotAllowed, &Head::default(), out),
        };
        let mut head = Head {
            head_only,
            http10: version == 0,
            ..Head::default()
        };
        let connection = match read_fields(request.headers, &mut head) {
            Ok(connection) => connection,
            Err(status) => return self.refuse(status, &head, out),
        };
        self.served += 1;
        let keep_alive = if head.http10 {
            connection.keep_alive && !connection.close
        } else {
            !connection.close
        };
        if !keep_alive
            || self.draining
            || self.served >= self.shared.max_requests
            || self.shared.keepalive_timeout.is_zero()
        {
            self.phase = Phase::Closing;
        }
        let dir = match resolve_target(target.as_bytes(), &mut self.path) {
            Ok(dir) => dir,
            Err(_) => return self.refuse(Status::BadRequest, &head, out),
        };
        if dir {
            if !self.path.is_empty() {
                self.path.push(b'/');
            }
            self.path.extend_from_slice(b"index.html");
        }
        self.path.push(0);
        let opened = CStr::from_bytes_with_nul(&self.path)
            .map_err(|_| Refused::NotFound)
            .and_then(|path| self.shared.opener.open(path));
        self.path.pop();
        match opened {
            Ok(file) if file.kind() == SFlag::S_IFREG => self.send_file(&head, file, out),
            Ok(file) if file.kind() == SFlag::S_IFDIR && !dir => {
                self.redirect_to_dir(&head, target.as_bytes(), out)
            }
            Ok(_) | Err(Refused::NotFound) => self.not_found(&head, out),
            Err(Refused::Forbidden) => self.page(Status::Forbidden, &head, out),
        }
    }

    /// 200, 206, 304 or 416 for a regular file.
    fn send_file(&mut self, head: &Head<'_>, opened: Opened, out: &mut Output) {
        let size = u64::try_from(opened.stat.st_size).unwrap_or(0);
        let mtime = opened.stat.st_mtime;
        let modified = format_http_date(mtime);
        let (tag, tag_len) = wire::etag(mtime, size);
        let tag = &tag[..tag_len];
        // RFC 9110 section 13.2.2: If-None-Match, when sent, decides alone.
        let unchanged = match head.if_none_match {
            Some(tags) => wire::none_match_hits(tags, tag),
            None => wire::not_modified(head.if_modified_since, mtime),
        };
        if unchanged {
            let reply = self.head(Status::NotModified, head, out);
            field(reply, "Last-Modified", &modified);
            field(reply, "ETag", tag);
            end_head(reply);
            return;
        }
        // If-Range holds the tag or the date this reply would carry.
        let range_applies = head.if_range.map_or(true, |v| {
            v.trim_ascii() == tag || v.trim_ascii() == modified
        });
        let range = match head.range {
            Some(value) if range_applies => parse_range(value, size),
            _ => Range::Whole,
        };
        let (status, start, len) = match range {
            Range::Whole => (Status::Ok, 0, size),
            Range::Part { start, len } => (Status::Partial, start, len),
            Range::Unsatisfiable => {
                let reply = self.head(Status::RangeNotSatisfiable, head, out);
                content_range(reply, None, size);
                field(reply, "Content-Length", b"0");
                end_head(reply);
                return;
            }
        };
        let content_type = wire::content_type(&self.path);
        let reply = self.head(status, head, out);
        field(reply, "Content-Type", content_type.as_bytes());
        number_field(reply, "Content-Length", len);
        field(reply, "Last-Modified", &modified);
        field(reply, "ETag", tag);
        field(reply, "Accept-Ranges", b"bytes");
        if status == Status::Partial {
            content_range(reply, Some((start, len)), size);
        }
        end_head(reply);
        if !head.head_only {
            self.body(opened.file, start, len, out);
        }
    }

    /// Queues `len` bytes of `file` from `start` behind the head: copied
    /// into the same byte run when small, else as a file range.
    fn body(&mut self, file: File, start: u64, len: u64, out: &mut Output) {
        if len > INLINE_BODY {
            out.send_file(file, start, len);
            self.queued = QUEUED_LIMIT;
            return;
        }
        let run = out.bytes();
        let at = run.len();
        let len = len as usize;
        run.resize(at + len, 0);
        let mut filled = 0;
        while filled < len {
            match file.read_at(&mut run[at + filled..], start + filled as u64) {
                Ok(0) | Err(_) => break,
                Ok(n) => filled += n,
            }
        }
        if filled < len {
            // The file shrank under us: the head promised `len` bytes, so
            // the connection cannot go on.
            run.truncate(at + filled);
            self.phase = Phase::Closing;
        }
        self.queued += len;
    }

    /// 404 with the root's `404.html`, or the built-in page.
    fn not_found(&mut self, head: &Head<'_>, out: &mut Output) {
        let page = self.shared.opener.open(c"404.html");
        match page {
            Ok(page) if page.kind() == SFlag::S_IFREG => {
                let size = u64::try_from(page.stat.st_size).unwrap_or(0);
                let reply = self.head(Status::NotFound, head, out);
                field(reply, "Content-Type", b"text/html; charset=utf-8");
                number_field(reply, "Content-Length", size);
                end_head(reply);
                if !head.head_only {
                    self.body(page.file, 0, size, out);
                }
            }
            _ => self.page(Status::NotFound, head, out),
        }
    }

    /// 301 to the directory's `/` form, so its page's relative links work.
    fn redirect_to_dir(&mut self, head: &Head<'_>, target: &[u8], out: &mut Output) {
        let (path, query) = match target.iter().position(|&b| b == b'?') {
            Some(q) => target.split_at(q),
            None => (target, &b""[..]),
        };
        let path = match path.iter().position(|&b| b == b'#') {
            Some(f) => &path[..f],
            None => path,
        };
        let reply = self.head(Status::MovedPermanently, head, out);
        reply.extend_from_slice(b"Location: ");
        reply.extend_from_slice(path);
        reply.push(b'/');
        reply.extend_from_slice(query);
        reply.extend_from_slice(b"\r\n");
        page_body(reply, Status::MovedPermanently, head.head_only);
    }

    /// A request that is not served: the built-in page, and the
    /// connection closes (what follows it cannot be trusted to be a
    /// request). `head` is what is known of the request (a HEAD gets no
    /// body).
    fn refuse(&mut self, status: Status, head: &Head<'_>, out: &mut Output) {
        self.phase = Phase::Closing;
        self.unread = true;
        self.page(status, head, out);
    }

    /// The built-in page of `status`.
    fn page(&mut self, status: Status, head: &Head<'_>, out: &mut Output) {
        let reply = self.head(status, head, out);
        if status == Status::MethodNotAllowed {
            field(reply, "Allow", b"GET, HEAD");
        }
        page_body(reply, status, head.head_only);
    }

    /// The status line and the fields every reply has; returns the byte
    /// run to add fields to.
    fn head<'o>(
        &mut self,
        status: Status,
        head: &Head<'_>,
        out: &'o mut Output,
    ) -> &'o mut Vec<u8> {
        // About a head's size: with the body bytes counted where they are
        // added, what a read's worth of pipelined requests may queue.
        self.queued += 256;
        let reply = out.bytes();
        reply.extend_from_slice(b"HTTP/1.1 ");
        reply.extend_from_slice(status.line().as_bytes());
        reply.extend_from_slice(b"\r\nServer: forkd\r\n");
        field(reply, "Date", self.shared.date.borrow_mut().now());
        if self.phase == Phase::Closing {
            reply.extend_from_slice(b"Connection: close\r\n");
        } else if head.http10 {
            reply.extend_from_slice(b"Connection: keep-alive\r\n");
        }
        reply
    }
}

#[cfg(test)]
mod tests;
