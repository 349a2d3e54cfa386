//! Whether the clients of given TCP connections still hold them open, asked
//! of the kernel through `NETLINK_SOCK_DIAG` (sock_diag(7), the interface
//! behind `ss`).
//!
//! `per_ip` bookkeeping can only over-count: a connection stays counted
//! until its process notices the close and lets go, while the client
//! already counts it as closed. When the bookkeeping says an address is at
//! its limit, [`still_open`] looks up each of that address's connections by
//! its exact 4-tuple (a hash lookup in the kernel, no table walk): one in
//! `ESTABLISHED` is still open; one whose client sent FIN is in
//! `CLOSE_WAIT` (or further along, or gone) and no longer counts.
//!
//! All lookups of one call go out in a single datagram and are answered one
//! reply each, matched by sequence number. This module holds no state,
//! never logs, and costs one send and one receive per reply.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

use nix::sys::socket::{
    recv, send, setsockopt, socket, sockopt, AddressFamily, MsgFlags, SockFlag, SockProtocol,
    SockType,
};
use nix::sys::time::TimeVal;

// linux/netlink.h, linux/sock_diag.h, linux/inet_diag.h, netinet/tcp.h
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLM_F_REQUEST: u16 = 0x1;
const NLMSG_ERROR: u16 = 2;
const TCP_ESTABLISHED: u8 = 1;
const NLMSG_HEADER: usize = 16;
/// nlmsghdr + struct inet_diag_req_v2 (family, protocol, ext, pad,
/// states, then the 48-byte inet_diag_sockid).
const REQUEST_LEN: usize = NLMSG_HEADER + 56;
/// Lookups per datagram: their replies (~90 bytes each) stay far below the
/// default receive buffer, so none is dropped with ENOBUFS.
const BATCH: usize = 32;
/// The kernel answers within the send; a reply this late is not coming.
const REPLY_TIMEOUT: Duration = Duration::from_millis(100);

/// One connection as the server sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tuple {
    pub local: SocketAddr,
    pub remote: SocketAddr,
}

/// For each connection, whether the kernel still has it in `ESTABLISHED`.
///
/// Each connection is looked up twice: the server's end, and the client's
/// end in case the client is on this host (a local load test, a proxy on
/// the same machine). The client's end changes state within its close(2),
/// while the server's end waits for the FIN to be processed, which a
/// loaded machine may defer (softirq work left to ksoftirqd on another
/// CPU): so a client end found past `ESTABLISHED` means closed, whatever
/// the server's end says yet.
pub fn still_open(conns: &[Tuple]) -> io::Result<Vec<bool>> {
    let socket = open()?;
    let mut open = Vec::with_capacity(conns.len());
    for chunk in conns.chunks(BATCH / 2) {
        let mut both = Vec::with_capacity(chunk.len() * 2);
        for conn in chunk {
            both.push(*conn);
            both.push(Tuple {
                local: conn.remote,
                remote: conn.local,
            });
        }
        let states = lookup(&socket, &both)?;
        open.extend(states.chunks(2).map(|pair| match pair {
            [server, client] => {
                *server == Some(TCP_ESTABLISHED) && !client.is_some_and(client_closed)
            }
            _ => false,
        }));
    }
    Ok(open)
}

/// Whether the kernel can be asked at all here (a sandbox may forbid
/// `AF_NETLINK`, as a unit's `RestrictAddressFamilies=` can).
pub fn available() -> io::Result<()> {
    open().map(drop)
}

fn open() -> io::Result<OwnedFd> {
    let fd = socket(
        AddressFamily::Netlink,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkSockDiag,
    )?;
    let timeout = TimeVal::new(0, REPLY_TIMEOUT.as_micros() as libc::suseconds_t);
    setsockopt(&fd, sockopt::ReceiveTimeout, &timeout)?;
    Ok(fd)
}

/// A state of the client's end that means it has closed: FIN_WAIT1,
/// FIN_WAIT2, TIME_WAIT, CLOSE, LAST_ACK, CLOSING. Not LISTEN: a lookup
/// the kernel cannot match exactly may answer with a listener on that port
/// (a remote client's port can be one this host listens on).
fn client_closed(state: u8) -> bool {
    matches!(state, 4 | 5 | 6 | 7 | 9 | 11)
}

/// The TCP state of each socket, None where there is none.
fn lookup(socket: &OwnedFd, conns: &[Tuple]) -> io::Result<Vec<Option<u8>>> {
    let mut request = Vec::with_capacity(conns.len() * REQUEST_LEN);
    for (i, conn) in conns.iter().enumerate() {
        push_request(&mut request, i as u32 + 1, conn);
    }
    if send(socket.as_raw_fd(), &request, MsgFlags::empty())? != request.len() {
        return Err(io::Error::other("short netlink send"));
    }
    let mut states = vec![None; conns.len()];
    let mut answered = 0;
    let mut buf = [0u8; 8192];
    while answered < conns.len() {
        let n = recv(socket.as_raw_fd(), &mut buf, MsgFlags::empty())?;
        if n == 0 {
            return Err(io::Error::other("netlink socket closed"));
        }
        for (seq, state) in replies(&buf[..n])? {
            let Some(slot) = (seq as usize)
                .checked_sub(1)
                .and_then(|i| states.get_mut(i))
            else {
                continue;
            };
            // An error reply (ENOENT: no such socket) leaves None.
            *slot = state;
            answered += 1;
        }
    }
    Ok(states)
}

/// The (sequence, socket state) of each message in one datagram; the state
/// is None for an error reply.
fn replies(mut data: &[u8]) -> io::Result<Vec<(u32, Option<u8>)>> {
    let mut out = Vec::new();
    while data.len() >= NLMSG_HEADER {
        let len = u32::from_ne_bytes(data[0..4].try_into().expect("4 bytes")) as usize;
        let kind = u16::from_ne_bytes(data[4..6].try_into().expect("2 bytes"));
        let seq = u32::from_ne_bytes(data[8..12].try_into().expect("4 bytes"));
        if len < NLMSG_HEADER || len > data.len() {
            return Err(io::Error::other("malformed netlink reply"));
        }
        match kind {
            // inet_diag_msg: family, state, ...
            SOCK_DIAG_BY_FAMILY => out.push((seq, data[..len].get(NLMSG_HEADER + 1).copied())),
            NLMSG_ERROR => out.push((seq, None)),
            _ => {}
        }
        data = data.get((len + 3) & !3..).unwrap_or(&[]);
    }
    Ok(out)
}

/// One exact lookup: nlmsghdr, then inet_diag_req_v2 naming the socket by
/// its addresses and ports (network byte order) with no cookie.
fn push_request(m: &mut Vec<u8>, seq: u32, conn: &Tuple) {
    let family = match (conn.local, conn.remote) {
        (SocketAddr::V4(_), SocketAddr::V4(_)) => libc::AF_INET,
        _ => libc::AF_INET6,
    };
    m.extend_from_slice(&(REQUEST_LEN as u32).to_ne_bytes());
    m.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    m.extend_from_slice(&NLM_F_REQUEST.to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel's
    m.extend_from_slice(&[family as u8, libc::IPPROTO_TCP as u8, 0, 0]);
    m.extend_from_slice(&u32::MAX.to_ne_bytes()); // any state
    m.extend_from_slice(&conn.local.port().to_be_bytes());
    m.extend_from_slice(&conn.remote.port().to_be_bytes());
    m.extend_from_slice(&address(conn.local.ip(), family));
    m.extend_from_slice(&address(conn.remote.ip(), family));
    m.extend_from_slice(&0u32.to_ne_bytes()); // any interface
    m.extend_from_slice(&[0xff; 8]); // INET_DIAG_NOCOOKIE
}

/// An address as the sockid's 16 bytes: IPv4 in the first four; IPv6 (a v4
/// client of a dual-stack listener as its v4-mapped form) in all sixteen.
fn address(ip: IpAddr, family: libc::c_int) -> [u8; 16] {
    let mut out = [0u8; 16];
    match ip {
        IpAddr::V4(v4) if family == libc::AF_INET => out[..4].copy_from_slice(&v4.octets()),
        IpAddr::V4(v4) => out = v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => out = v6.octets(),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};

    fn tuple(served: &TcpStream) -> Tuple {
        Tuple {
            local: served.local_addr().unwrap(),
            remote: served.peer_addr().unwrap(),
        }
    }

    #[test]
    fn a_connection_is_open_until_its_client_closes_it() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let local = listener.local_addr().unwrap();
        let mut clients: Vec<TcpStream> =
            (0..3).map(|_| TcpStream::connect(local).unwrap()).collect();
        let served: Vec<TcpStream> = (0..3).map(|_| listener.accept().unwrap().0).collect();
        let tuples: Vec<Tuple> = served.iter().map(tuple).collect();
        assert_eq!(still_open(&tuples).unwrap(), [true, true, true]);
        // The client closes one; the server still holds its end.
        let closed = clients.remove(1);
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let expected: Vec<bool> = tuples.iter().map(|t| t.remote.port() != port).collect();
        assert_eq!(still_open(&tuples).unwrap(), expected);
        let gone = *tuples.iter().find(|t| t.remote.port() == port).unwrap();
        drop(served);
        assert_eq!(still_open(&[gone]).unwrap(), [false], "no socket at all");
    }

    #[test]
    fn many_lookups_in_one_call_each_get_their_answer() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let local = listener.local_addr().unwrap();
        let mut clients = Vec::new();
        let mut served = Vec::new();
        for _ in 0..200 {
            clients.push(TcpStream::connect(local).unwrap());
            served.push(listener.accept().unwrap().0);
        }
        let tuples: Vec<Tuple> = served.iter().map(tuple).collect();
        assert!(still_open(&tuples).unwrap().iter().all(|open| *open));
        drop(clients);
    }
}
