//! Listening sockets: opening them (TCP v4/v6, UDP, Unix, or inherited from
//! systemd by name), saying where they are bound, and accepting from them.
//!
//! Every listener is created by the supervisor with `O_NONBLOCK` and
//! `O_CLOEXEC`, outlives the workers that accept from it, and is handed
//! unchanged from an old to a new service on reload ([`Listeners`] is keyed
//! by the configured [`ListenAddr`]). A `unix:` socket file left by a crashed
//! run is removed before binding, and the file is removed when its listener
//! is dropped. Accepting keeps a reserve fd so that `EMFILE` closes the
//! pending connection instead of spinning (field notes, trap 7). This module
//! never forks and never serves a connection.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

use nix::sys::socket::{
    self, sockopt, AddressFamily, Backlog, SockFlag, SockType, SockaddrStorage,
};

use crate::config::{ListenAddr, ServiceConfig};
use crate::handlers::{Connection, Peer, Stream};

/// The kernel object behind a listener.
#[derive(Debug)]
pub enum Socket {
    Tcp(TcpListener),
    Udp(UdpSocket),
    Unix(UnixListener),
}

/// One open listening socket.
#[derive(Debug)]
pub struct Listener {
    /// What the config asked for (the reload key).
    pub addr: ListenAddr,
    pub socket: Socket,
    /// The local address, known once bound (port 0 resolved).
    local: Option<SocketAddr>,
    /// A socket file this listener created and removes on drop.
    owned_path: Option<PathBuf>,
}

/// Open listeners keyed by their configured address: what a reload hands
/// from the old service to the new one.
pub type Listeners = HashMap<ListenAddr, Listener>;

/// Inherited sockets by name (`systemd:NAME`), supplied by the supervisor.
pub type InheritedLookup<'a> = &'a mut dyn FnMut(&str) -> Option<OwnedFd>;

impl Listener {
    /// Opens `addr` for `service`, or takes it from `reuse` (reload) or from
    /// `inherited` (socket activation). Errors name the address and the fix.
    pub fn open(
        addr: &ListenAddr,
        service: &ServiceConfig,
        reuse: &mut Listeners,
        inherited: InheritedLookup<'_>,
    ) -> Result<Listener, String> {
        if let Some(listener) = reuse.remove(addr) {
            return Ok(listener);
        }
        let name = &service.name;
        let at = display_addr(addr);
        let fail = |what: &str, e: &dyn fmt::Display| {
            format!("service \"{name}\": cannot {what} {at}: {e}")
        };
        let (socket, owned_path) = match addr {
            ListenAddr::Tcp(sa) => (
                Socket::Tcp(open_tcp(*sa, service).map_err(|e| fail("listen on", &e))?),
                None,
            ),
            ListenAddr::Udp(sa) => (
                Socket::Udp(open_udp(*sa).map_err(|e| fail("bind", &e))?),
                None,
            ),
            ListenAddr::Unix(path) => {
                remove_stale(path).map_err(|e| fail("listen on", &e))?;
                let socket = open_unix(path, service).map_err(|e| fail("listen on", &e))?;
                (Socket::Unix(socket), Some(path.clone()))
            }
            ListenAddr::Systemd(fd_name) => {
                let fd = inherited(fd_name).ok_or_else(|| {
                    format!(
                        "service \"{name}\": no socket named \"{fd_name}\" was passed by systemd \
                         (LISTEN_FDS/LISTEN_FDNAMES); start forkd from a .socket unit with \
                         FileDescriptorName={fd_name}, or listen on tcp://, udp:// or unix: instead"
                    )
                })?;
                (adopt(fd).map_err(|e| fail("use", &e))?, None)
            }
        };
        let local = match &socket {
            Socket::Tcp(s) => s.local_addr().ok(),
            Socket::Udp(s) => s.local_addr().ok(),
            Socket::Unix(_) => None,
        };
        Ok(Listener {
            addr: addr.clone(),
            socket,
            local,
            owned_path,
        })
    }

    /// Where it is bound, in config syntax (`tcp://127.0.0.1:41234`).
    pub fn bound(&self) -> String {
        match (&self.socket, self.local) {
            (Socket::Tcp(_), Some(sa)) => format!("tcp://{sa}"),
            (Socket::Udp(_), Some(sa)) => format!("udp://{sa}"),
            _ => display_addr(&self.addr),
        }
    }

    pub fn is_stream(&self) -> bool {
        !matches!(self.socket, Socket::Udp(_))
    }

    /// A second descriptor for the same socket (`dup(2)`), for a reload:
    /// the new service takes it while the old one still holds its own, so
    /// the address is never closed and re-bound and its backlog is kept.
    /// The copy owns no socket file: dropping it unlinks nothing, and
    /// [`Listener::take_path`] moves the file over once the reload commits.
    pub fn share(&self) -> io::Result<Listener> {
        let socket = match &self.socket {
            Socket::Tcp(s) => Socket::Tcp(s.try_clone()?),
            Socket::Udp(s) => Socket::Udp(s.try_clone()?),
            Socket::Unix(s) => Socket::Unix(s.try_clone()?),
        };
        Ok(Listener {
            addr: self.addr.clone(),
            socket,
            local: self.local,
            owned_path: None,
        })
    }

    /// Gives up the socket file this listener would remove on drop (a
    /// reload handed the socket to a new service, which removes it later).
    pub fn take_path(&mut self) -> Option<PathBuf> {
        self.owned_path.take()
    }

    /// Makes this listener remove `path` on drop (see [`Listener::take_path`]).
    pub fn own_path(&mut self, path: Option<PathBuf>) {
        if path.is_some() {
            self.owned_path = path;
        }
    }

    /// The descriptor itself, for giving an inherited socket back to
    /// [`crate::systemd::Inherited`] when its service goes away.
    pub fn into_fd(mut self) -> io::Result<OwnedFd> {
        self.owned_path = None;
        // `Drop` forbids moving the socket out: keep a duplicate instead
        // and let this descriptor close (the socket lives on in the copy).
        self.as_fd().try_clone_to_owned()
    }

    /// Whether the socket came from systemd (`systemd:NAME`): systemd keeps
    /// its own copy for the next start, so forkd never shuts it down.
    pub fn is_inherited(&self) -> bool {
        matches!(self.addr, ListenAddr::Systemd(_))
    }

    /// Stops the socket itself from listening, in every process that holds
    /// it: on Linux `shutdown(2)` of a listening socket refuses new clients
    /// and resets those in the backlog. Used when a service stops, because
    /// a prefork worker busy with a connection still holds a copy. Not for
    /// a socket systemd passed: the `.socket` unit still owns it and queues
    /// connections for the next forkd.
    pub fn stop_listening(&self) {
        if self.is_stream() && !self.is_inherited() {
            let _ = socket::shutdown(self.as_raw_fd(), socket::Shutdown::Both);
        }
    }

    /// Accepts one connection (blocking stream, close-on-exec).
    pub fn accept(&self, reserve: &mut ReserveFd) -> Accepted {
        let result = match &self.socket {
            Socket::Tcp(l) => l.accept().map(|(s, remote)| {
                let local = match self.local {
                    Some(sa) if !sa.ip().is_unspecified() => sa,
                    _ => s.local_addr().unwrap_or(remote),
                };
                Connection {
                    stream: Stream::Tcp(s),
                    peer: Peer::Tcp { remote, local },
                }
            }),
            Socket::Unix(l) => l.accept().map(|(s, _)| Connection {
                stream: Stream::Unix(s),
                peer: Peer::Unix,
            }),
            Socket::Udp(_) => return Accepted::WouldBlock,
        };
        match result {
            Ok(conn) => Accepted::Conn(conn),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Accepted::WouldBlock,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Accepted::Retry,
            // The peer gave up between SYN and accept: nothing to serve.
            Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => Accepted::Retry,
            // accept(2): errors of the pending connection's network, to be
            // treated like EAGAIN by retrying (the backlog still holds others).
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(
                        libc::ENETDOWN
                            | libc::EPROTO
                            | libc::ENOPROTOOPT
                            | libc::EHOSTDOWN
                            | libc::ENONET
                            | libc::EHOSTUNREACH
                            | libc::EOPNOTSUPP
                            | libc::ENETUNREACH
                    )
                ) =>
            {
                Accepted::Retry
            }
            Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) => {
                reserve.shed(self);
                Accepted::Shed
            }
            Err(e) => Accepted::Error(e),
        }
    }
}

impl AsFd for Listener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match &self.socket {
            Socket::Tcp(s) => s.as_fd(),
            Socket::Udp(s) => s.as_fd(),
            Socket::Unix(s) => s.as_fd(),
        }
    }
}

impl AsRawFd for Listener {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.as_fd().as_raw_fd()
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Some(path) = &self.owned_path {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// What one accept gave.
#[derive(Debug)]
pub enum Accepted {
    Conn(Connection),
    /// Nothing pending.
    WouldBlock,
    /// Interrupted or aborted by the peer: try again.
    Retry,
    /// Out of fds: the pending connection was accepted and closed.
    Shed,
    Error(io::Error),
}

/// A spare fd (`/dev/null`) given up on `EMFILE` to accept and close the
/// connection that would otherwise stay pending and wake the loop forever.
#[derive(Debug)]
pub struct ReserveFd(Option<std::fs::File>);

impl ReserveFd {
    pub fn new() -> ReserveFd {
        ReserveFd(std::fs::File::open("/dev/null").ok())
    }

    fn shed(&mut self, listener: &Listener) {
        self.0 = None;
        if let Ok(fd) = socket::accept4(listener.as_fd().as_raw_fd(), SockFlag::SOCK_CLOEXEC) {
            let _ = nix::unistd::close(fd);
        }
        self.0 = std::fs::File::open("/dev/null").ok();
    }
}

impl Default for ReserveFd {
    fn default() -> Self {
        ReserveFd::new()
    }
}

/// `tcp://HOST:PORT`, `unix:/path`, … as the user wrote it.
pub fn display_addr(addr: &ListenAddr) -> String {
    match addr {
        ListenAddr::Tcp(sa) => format!("tcp://{sa}"),
        ListenAddr::Udp(sa) => format!("udp://{sa}"),
        ListenAddr::Unix(p) => format!("unix:{}", p.display()),
        ListenAddr::Systemd(n) => format!("systemd:{n}"),
    }
}

fn family(sa: &SocketAddr) -> AddressFamily {
    match sa {
        SocketAddr::V4(_) => AddressFamily::Inet,
        SocketAddr::V6(_) => AddressFamily::Inet6,
    }
}

const FLAGS: SockFlag = SockFlag::SOCK_CLOEXEC.union(SockFlag::SOCK_NONBLOCK);

fn backlog(config: &ServiceConfig) -> io::Result<Backlog> {
    let n = i32::try_from(config.backlog).unwrap_or(i32::MAX);
    Backlog::new(n.min(Backlog::MAXCONN.into()))
        .map_err(|_| io::Error::other("backlog out of range"))
}

fn open_tcp(sa: SocketAddr, config: &ServiceConfig) -> io::Result<TcpListener> {
    let fd = socket::socket(family(&sa), SockType::Stream, FLAGS, None)?;
    // A restarted forkd rebinds at once despite connections in TIME_WAIT.
    socket::setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    if config.tcp_nodelay {
        // Linux copies TCP_NODELAY to accepted sockets.
        socket::setsockopt(&fd, sockopt::TcpNoDelay, &true)?;
    }
    socket::bind(fd.as_raw_fd(), &SockaddrStorage::from(sa))?;
    socket::listen(&fd, backlog(config)?)?;
    Ok(TcpListener::from(fd))
}

fn open_udp(sa: SocketAddr) -> io::Result<UdpSocket> {
    let fd = socket::socket(family(&sa), SockType::Datagram, FLAGS, None)?;
    socket::setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    socket::bind(fd.as_raw_fd(), &SockaddrStorage::from(sa))?;
    Ok(UdpSocket::from(fd))
}

fn open_unix(path: &Path, config: &ServiceConfig) -> io::Result<UnixListener> {
    let fd = socket::socket(AddressFamily::Unix, SockType::Stream, FLAGS, None)?;
    socket::bind(fd.as_raw_fd(), &socket::UnixAddr::new(path)?)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(config.socket_mode))?;
    socket::listen(&fd, backlog(config)?)?;
    Ok(UnixListener::from(fd))
}

/// Removes a socket file left by a crashed run (see
/// [`crate::socket_file`]); refuses to touch a live socket or a file that
/// is not a socket, saying what to do.
fn remove_stale(path: &Path) -> io::Result<()> {
    use crate::socket_file::{Stale, StaleError};
    let what_to_do = match crate::socket_file::remove_stale(path) {
        Ok(Stale::Absent) => return Ok(()),
        Ok(Stale::Removed) => {
            log::info!(
                "removed a stale socket file {} (nothing answered on it)",
                path.display()
            );
            return Ok(());
        }
        Err(e @ StaleError::Live { .. }) => format!("{e}; stop it or choose another path"),
        Err(e) => format!("{e}; remove it or choose another path"),
    };
    Err(io::Error::other(what_to_do))
}

/// Takes ownership of an inherited socket, whatever its type.
fn adopt(fd: OwnedFd) -> io::Result<Socket> {
    let kind = socket::getsockopt(&fd, sockopt::SockType)?;
    let domain =
        socket::SockaddrLike::family(&socket::getsockname::<SockaddrStorage>(fd.as_raw_fd())?);
    nix::fcntl::fcntl(
        &fd,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    )?;
    let socket = match (kind, domain) {
        (SockType::Datagram, _) => Socket::Udp(UdpSocket::from(fd)),
        (SockType::Stream, Some(AddressFamily::Unix)) => Socket::Unix(UnixListener::from(fd)),
        (SockType::Stream, _) => Socket::Tcp(TcpListener::from(fd)),
        _ => return Err(io::Error::other("unsupported socket type")),
    };
    match &socket {
        Socket::Tcp(s) => s.set_nonblocking(true)?,
        Socket::Udp(s) => s.set_nonblocking(true)?,
        Socket::Unix(s) => s.set_nonblocking(true)?,
    }
    Ok(socket)
}
