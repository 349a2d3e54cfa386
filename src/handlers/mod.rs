//! The built-in services a connection is handed to, behind one trait.
//!
//! A [`Handler`] is built once per service, in the supervisor, from a
//! [`Context`] (the service's settings and forkd's pid); what it opens
//! then it names in [`Handler::keep_open`], so the child set-up that
//! closes every other descriptor leaves those open. It serves in one of
//! these shapes, whatever the mode:
//!
//! - a [`Session`] per connection: a state machine fed the bytes read,
//!   which may speak first, queues its replies on an [`Output`] (byte runs
//!   and file ranges sent with sendfile, pulled again through
//!   [`Session::drained`] as the socket drains, so nothing large is
//!   buffered whole) and may ask for a timer ([`Session::deadline`]).
//!   `event` mode multiplexes sessions in one worker; `fork` and `prefork`
//!   drive one blocking ([`drive`]), unless the handler's own
//!   [`Handler::serve`] does better (echo answers in place, without a
//!   session, so a fork-mode child allocates nothing);
//! - a [`ConnectionProgram`]: a program exec'd per connection in place of
//!   a Rust child (exec); fork mode spawns it straight from the supervisor;
//! - a [`Datagrams`] state per `udp://` socket and worker, which sees each
//!   sender, keeps what it learns and may answer many peers.
//!
//! A handler whose sessions forward requests (the `pool` handler) names
//! where with [`Handler::upstream`]: an event worker keeps one connection
//! there for all its sessions, writes what [`Session::take_requests`]
//! hands it, and gives each answer back with [`Session::answer`] to the
//! session whose request it was. Sessions never do I/O themselves.
//!
//! Which modes and sockets each handler serves is one table
//! ([`crate::config::support`]), read by the config check and by
//! start-up; a test here holds each handler to its row.
//!
//! Files: `echo.rs`, `exec.rs`, `files.rs`, `ftp.rs` (with `ftp/`),
//! `http.rs` (with `http/`), `pool.rs` (with `upstream.rs`) and
//! `command.rs` (with `command/run.rs`) are the handlers; `root.rs` the
//! served directory of files, ftp and http; `output.rs` the output queue; `drive.rs` the blocking
//! driver; `linger.rs` the lingering close; `datagram.rs` the datagram side; `testing.rs` a handler for
//! tests only.
//! `chat.rs` (with `chat/room.rs`) is the UDP chat room; `inbox.rs` carries
//! the operator's messages from the supervisor to the worker holding it.
//!
//! This module never forks, accepts or binds (that is `server`), never logs
//! per connection, and never touches the supervisor's state: handlers run in
//! worker processes.

mod chat;
mod command;
mod datagram;
mod drive;
mod echo;
mod exec;
mod files;
mod ftp;
mod http;
mod inbox;
mod linger;
mod output;
mod pool;
mod root;
#[cfg(test)]
pub(crate) mod testing;
mod upstream;

use std::io::{self, Read, Write};
use std::mem::MaybeUninit;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use nix::unistd::Pid;

use crate::config::{HandlerKind, ServiceConfig};
use crate::process::raw;

pub use chat::{Chat, MAX_OPERATOR_TEXT};
pub use command::Commands;
pub use datagram::{Datagrams, Replies};
pub use drive::{drive, write_out};
pub use echo::Echo;
pub use exec::{ConnectionProgram, Exec};
pub use files::Files;
pub use ftp::Ftp;
pub use http::Http;
pub use inbox::{Inbox, PostError};
pub use linger::{linger, Discarded, Linger, LINGER_BYTES, LINGER_TIME};
pub use output::{Output, Written};
pub use pool::{Forwarder, PoolForwarding};
pub use upstream::{Endpoint, Upstream};

/// An accepted stream connection.
#[derive(Debug)]
pub enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    pub fn set_nonblocking(&self, on: bool) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_nonblocking(on),
            Stream::Unix(s) => s.set_nonblocking(on),
        }
    }

    /// `shutdown(SHUT_WR)`: the client reads what was written, then EOF.
    pub fn shutdown_write(&self) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.shutdown(std::net::Shutdown::Write),
            Stream::Unix(s) => s.shutdown(std::net::Shutdown::Write),
        }
    }

    /// `SO_RCVTIMEO` / `SO_SNDTIMEO`: a blocking read or write that waits
    /// longer fails with `WouldBlock`, so a silent client cannot hold a
    /// worker forever. A zero duration means no limit.
    #[link_section = ".text.hot.forkd_child"]
    pub fn set_timeouts(&self, read: Duration, write: Duration) -> io::Result<()> {
        let fd = self.as_fd();
        raw::set_socket_timeout(fd, libc::SO_RCVTIMEO, read)?;
        raw::set_socket_timeout(fd, libc::SO_SNDTIMEO, write)
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl AsFd for Stream {
    /// On the fork-mode child's few pages, by way of `as_raw_fd`: std's
    /// own `as_fd` for sockets is out of line, a page of its own to fault in.
    #[link_section = ".text.hot.forkd_child"]
    fn as_fd(&self) -> BorrowedFd<'_> {
        let fd = match self {
            Stream::Tcp(s) => s.as_raw_fd(),
            Stream::Unix(s) => s.as_raw_fd(),
        };
        // SAFETY: `fd` is the stream's own, open for as long as `self` is
        // borrowed.
        unsafe { BorrowedFd::borrow_raw(fd) }
    }
}

/// Where a connection comes from and arrived at (UCSPI's view).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    Tcp {
        remote: SocketAddr,
        local: SocketAddr,
    },
    Unix,
}

impl Peer {
    /// The client's IP, the key of `per_ip`; `None` for Unix sockets.
    pub fn ip(&self) -> Option<IpAddr> {
        match self {
            Peer::Tcp { remote, .. } => Some(remote.ip()),
            Peer::Unix => None,
        }
    }
}

/// One accepted connection with what the handler may need to know.
#[derive(Debug)]
pub struct Connection {
    pub stream: Stream,
    pub peer: Peer,
}

/// How a served connection ended; worker processes turn it into their exit
/// code so the supervisor can count errors and timeouts without a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The client closed, or the handler finished.
    Done,
    /// No byte arrived for `idle_timeout` (or a reply could not be written
    /// within `request_timeout`).
    TimedOut,
    /// An I/O error or a protocol violation closed the connection.
    Failed,
}

impl Outcome {
    pub fn exit_code(self) -> i32 {
        match self {
            Outcome::Done => 0,
            Outcome::Failed => 1,
            Outcome::TimedOut => 2,
        }
    }

    pub fn from_exit_code(code: i32) -> Outcome {
        match code {
            0 => Outcome::Done,
            2 => Outcome::TimedOut,
            _ => Outcome::Failed,
        }
    }

    /// Classifies an I/O error: the timeouts set by `set_timeouts` surface
    /// as `WouldBlock` / `TimedOut`.
    pub fn of_error(e: &io::Error) -> Outcome {
        match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Outcome::TimedOut,
            _ => Outcome::Failed,
        }
    }
}

/// What a session wants after being fed input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Keep reading.
    Continue,
    /// Send what is queued, then close.
    Close,
}

/// A connection's protocol state: fed every chunk read, it queues its
/// replies on the connection's [`Output`] (bytes, or file ranges the
/// driver sends with sendfile(2)). Never blocks and never does I/O itself;
/// the same session runs under `event` mode's loop and under the blocking
/// driver of `fork`/`prefork` ([`drive`]).
pub trait Session {
    /// The connection was just accepted, before any byte is read: a
    /// session that speaks first (a greeting) queues it here.
    fn start(&mut self, _out: &mut Output) -> Flow {
        Flow::Continue
    }

    fn input(&mut self, data: &[u8], out: &mut Output) -> Flow;

    /// The client closed its sending side (EOF). By default the session
    /// ends; one still owing answers returns `Continue` until they are out.
    fn input_ended(&mut self, _out: &mut Output) -> Flow {
        Flow::Close
    }

    /// Asked when the session closes before the client's EOF: whether
    /// the client may still be sending what it will never read (it
    /// refused a request mid-stream, or pipelined bytes were left). Then
    /// the close lingers ([`linger`]) so the kernel does not answer it
    /// with a reset that can cost the client the reply. By default no: a
    /// close between whole requests stays a plain close.
    fn unread_input(&self) -> bool {
        false
    }

    /// The worker drains (reload or stop) and will take no new
    /// connection. A session with nothing in hand between requests of a
    /// keep-alive protocol returns `Close`: it would otherwise hold the
    /// worker until `drain_timeout` for a client that may never send
    /// again (a load balancer's pooled connection). One in the middle of
    /// a request finishes it and closes after. By default the session
    /// goes on until its client is done.
    fn drain(&mut self) -> Flow {
        Flow::Continue
    }

    /// Whether to read more now; `false` holds the client back (it then
    /// waits in its own send) until an answer comes.
    fn wants_input(&self) -> bool {
        true
    }

    /// Everything queued has been written: output is pulled, so a session
    /// with more to send than it should hold (a listing, a stream) queues
    /// its next part here, as the socket drains.
    fn drained(&mut self, _out: &mut Output) -> Flow {
        Flow::Continue
    }

    /// When the session wants [`Session::wake`]: a pause it must keep
    /// (the classic clients need their `OK` alone in one read), a timed
    /// reply. Asked after every call into the session; the drivers keep
    /// their other connections going meanwhile (a timer heap in `event`
    /// mode, poll(2)'s timeout in the blocking driver).
    fn deadline(&self) -> Option<Instant> {
        None
    }

    /// The [`Session::deadline`] has come (`now` is at or past it).
    fn wake(&mut self, _now: Instant, _out: &mut Output) -> Flow {
        Flow::Continue
    }

    /// For a handler with an [`Handler::upstream`]: appends the encoded
    /// frames to forward there to `to`; returns how many.
    fn take_requests(&mut self, _to: &mut Vec<u8>) -> usize {
        0
    }

    /// The upstream's answer to this session's oldest forwarded request
    /// (or an `ERR ` frame saying why there is none); queues the reply.
    fn answer(&mut self, _result: &[u8], _out: &mut Output) -> Flow {
        Flow::Continue
    }
}

/// What a handler is built with: in the supervisor, before any fork, so
/// whatever it opens here (a served directory, say) every child inherits.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// The service's settings.
    pub service: &'a ServiceConfig,
    /// The supervisor's pid: it names its pools' endpoints, and every
    /// child re-checks it as its parent.
    pub forkd: Pid,
}

impl<'a> Context<'a> {
    /// The context of a handler built by this process for `service`.
    pub fn new(service: &'a ServiceConfig) -> Context<'a> {
        Context {
            service,
            forkd: nix::unistd::getpid(),
        }
    }

    pub fn limits(&self) -> Limits {
        Limits::of(self.service)
    }
}

/// Descriptors a handler may ask to keep open in its children at most
/// ([`Handler::keep_open`]): the fork-mode child holds them in a fixed
/// array, so it allocates nothing to close the rest.
pub const MAX_KEPT_FDS: usize = 8;

/// One built-in service. Implementations hold only configuration (and
/// what they opened when built); all per-connection state lives in a
/// [`Session`] or on `serve`'s stack.
pub trait Handler {
    /// The `handler = "..."` keyword.
    fn name(&self) -> &'static str;

    /// Hands `keep` every descriptor the handler opened when it was built
    /// and goes on using in a child: `server`'s child set-up closes every
    /// other one (at most [`MAX_KEPT_FDS`]).
    fn keep_open(&self, _keep: &mut dyn FnMut(BorrowedFd<'_>)) {}

    /// A fresh protocol state for one connection, or `None` when this
    /// handler needs a process per connection (it cannot run in `event` mode).
    fn session(&self) -> Option<Box<dyn Session>>;

    /// Serves one connection to its end, blocking, in a worker process. The
    /// default runs the [`Handler::connection_program`] and waits for it,
    /// or else drives [`Handler::session`] with reads of at most `max_line`.
    fn serve(&self, conn: Connection, limits: &Limits) -> Outcome {
        if let Some(program) = self.connection_program() {
            return program.serve(conn);
        }
        match self.session() {
            Some(session) => drive(conn, session, limits),
            None => Outcome::Failed,
        }
    }

    /// A fresh datagram state for one `udp://` socket in one worker, kept
    /// across datagrams; `None` when the handler speaks no UDP (its row
    /// in the table says so too).
    fn datagrams(&self) -> Option<Box<dyn Datagrams>> {
        None
    }

    /// A handler that serves a connection by exec'ing a program in place
    /// of a Rust child: fork mode then spawns it straight from the
    /// supervisor (no intermediate process runs [`Handler::serve`]), and
    /// the default `serve` of a prefork worker runs it and waits.
    fn connection_program(&self) -> Option<&dyn ConnectionProgram> {
        None
    }

    /// Where this handler's sessions forward requests in `event` mode:
    /// the worker keeps one connection to it for all of them.
    fn upstream(&self) -> Option<&Endpoint> {
        None
    }

    /// Where the supervisor sends this handler's datagram state messages
    /// from the operator (`forkctl chat`); the worker reading the
    /// handler's `udp://` sockets polls it beside them.
    fn inbox(&self) -> Option<&Inbox> {
        None
    }
}

/// The per-connection bounds a handler applies.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub idle_timeout: Duration,
    pub request_timeout: Duration,
    pub max_line: usize,
}

impl Limits {
    pub fn of(config: &ServiceConfig) -> Limits {
        Limits {
            idle_timeout: config.idle_timeout,
            request_timeout: config.request_timeout,
            max_line: usize::try_from(config.max_line).unwrap_or(usize::MAX),
        }
    }

    /// The read buffer size: `max_line` bounded to something sane.
    pub fn read_buffer(&self) -> usize {
        self.max_line.clamp(1, 64 << 10)
    }
}

/// The read size of [`serve_in_place`].
const BLOCKING_READ: usize = 8 << 10;

/// Serves a connection whose reply to each read is that read's bytes
/// changed in place (`transform`), with no session and no output buffer:
/// in a forked child the allocation alone touched malloc's arena, its
/// thread cache and a heap page, each a copy-on-write fault. Its code is on
/// the fork-mode child's few pages (see `crate::process`).
#[link_section = ".text.hot.forkd_child"]
pub(crate) fn serve_in_place(
    conn: Connection,
    limits: &Limits,
    mut transform: impl FnMut(&mut [u8]),
) -> Outcome {
    serve_reads(conn, limits, |stream, input| {
        transform(input);
        raw::send_all(stream.as_fd(), input).map(|()| Flow::Continue)
    })
}

/// Sets the connection's timeouts, then hands every read to `answer`
/// until EOF, a timeout, an error or `Flow::Close`.
#[link_section = ".text.hot.forkd_child"]
fn serve_reads(
    mut conn: Connection,
    limits: &Limits,
    mut answer: impl FnMut(&mut Stream, &mut [u8]) -> io::Result<Flow>,
) -> Outcome {
    if let Err(e) = conn
        .stream
        .set_timeouts(limits.idle_timeout, limits.request_timeout)
    {
        return Outcome::of_error(&e);
    }
    // On the stack, small and not zeroed: in a freshly forked child every
    // page touched is a copy-on-write fault; a 64 KiB heap buffer (brk,
    // memset, malloc_consolidate) cost more than the echo itself, and
    // zeroing 8 KiB of stack touched pages a short read never fills.
    let mut stack = [MaybeUninit::<u8>::uninit(); BLOCKING_READ];
    let size = limits.read_buffer().min(BLOCKING_READ);
    loop {
        let input = match read_uninit(&conn.stream, &mut stack[..size]) {
            Ok([]) => return Outcome::Done,
            Ok(input) => input,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Outcome::Done,
            Err(e) => return Outcome::of_error(&e),
        };
        match answer(&mut conn.stream, input) {
            Ok(Flow::Continue) => {}
            Ok(Flow::Close) => return Outcome::Done,
            Err(e) => return Outcome::of_error(&e),
        }
    }
}

/// One read(2) from `stream` into `buf`; returns the part it filled.
#[link_section = ".text.hot.forkd_child"]
fn read_uninit<'b>(stream: &Stream, buf: &'b mut [MaybeUninit<u8>]) -> io::Result<&'b mut [u8]> {
    raw::read(stream.as_fd(), buf)
}

/// Why a service's handler cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    #[error("{0}")]
    Setup(String),
}

/// Builds the handler a service's config names.
pub fn build(context: &Context<'_>) -> Result<Box<dyn Handler>, HandlerError> {
    let kind = context.service.handler;
    Ok(match kind {
        HandlerKind::Echo => Box::new(Echo),
        HandlerKind::Exec => Box::new(Exec::new(context)?),
        HandlerKind::Pool => Box::new(PoolForwarding::new(context)?),
        HandlerKind::Files => Box::new(Files::new(context)?),
        HandlerKind::Command => Box::new(Commands::new(context)?),
        HandlerKind::Chat => Box::new(Chat::new(context)?),
        HandlerKind::Ftp => Box::new(Ftp::new(context)?),
        HandlerKind::Http => Box::new(Http::new(context)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{handler_rows as rows, Config, Mode};

    /// Each built handler does what its row says, and no more.
    #[test]
    fn built_handlers_keep_to_their_rows() {
        let text = "[[pool]]\nname = \"p\"\nworker = \"builtin:upper\"\n";
        for row in rows() {
            let kind = row.kind.keyword();
            let scheme = if row.stream { "tcp" } else { "udp" };
            // What each handler needs, and only that (other handlers'
            // keys are config errors).
            let needs = match row.kind {
                HandlerKind::Pool => "pool = \"p\"",
                HandlerKind::Exec => "command = [\"/bin/cat\"]",
                HandlerKind::Command => "commands = { cat = [\"/bin/cat\"] }",
                HandlerKind::Files | HandlerKind::Ftp | HandlerKind::Http => "root = \"/\"",
                HandlerKind::Echo | HandlerKind::Chat => "",
            };
            let service = format!(
                "{text}[[service]]\nname = \"s\"\nlisten = [\"{scheme}://127.0.0.1:1\"]\nhandler = \"{kind}\"\n{needs}\nmode = \"fork\"\n"
            );
            let config = Config::parse(&service, std::path::Path::new("t.toml")).unwrap();
            let context = Context::new(&config.services[0]);
            let handler = build(&context).unwrap();
            assert_eq!(handler.name(), kind);
            assert_eq!(
                handler.session().is_some(),
                row.stream && row.modes.contains(&Mode::Event),
                "{kind}: a session exactly when event mode serves its streams"
            );
            assert_eq!(
                handler.datagrams().is_some(),
                row.datagram,
                "{kind}: datagrams exactly when udp:// is allowed"
            );
        }
    }
}
