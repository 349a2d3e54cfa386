//! The metrics endpoint's sockets (`[daemon] metrics_listen`): a TCP or
//! Unix stream listener and its connections, each one HTTP/1.x request
//! and one reply, then closed (`Connection: close`). `GET /metrics` and
//! `GET /healthz` are the routes; the supervisor supplies their bodies.
//!
//! Everything is non-blocking and bounded, as on the control socket: at
//! most [`MAX_CONNECTIONS`] at once (more are closed at accept), a request
//! head of at most [`MAX_HEAD`] bytes (parsed with httparse; a longer,
//! malformed or unfinished one gets 400, 431 or is closed at
//! [`IDLE_TIMEOUT`]). A bad request closes only its own connection. This
//! module never touches supervisor state.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mio::event::Source;
use mio::net::{TcpListener, TcpStream, UnixListener, UnixStream};

use crate::config::ListenAddr;

/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 16;
/// Longest request head (request line and headers) read.
pub const MAX_HEAD: usize = 8 * 1024;
/// A connection that has not sent its request, or not taken its reply,
/// for this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// What a well-formed request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Metrics,
    Health,
}

/// A reply: status code, content type, body.
pub type Reply = (u16, &'static str, Vec<u8>);

/// The bound listener.
#[derive(Debug)]
pub struct ScrapeServer {
    listener: Listener,
    /// The Unix socket file, removed on drop.
    path: Option<PathBuf>,
    open: usize,
}

#[derive(Debug)]
enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

#[derive(Debug)]
enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl ScrapeServer {
    /// Binds `addr` (TCP or Unix; a stale Unix socket file is removed).
    pub fn bind(addr: &ListenAddr) -> io::Result<ScrapeServer> {
        let (listener, path) = match addr {
            ListenAddr::Tcp(sa) => (Listener::Tcp(TcpListener::bind(*sa)?), None),
            ListenAddr::Unix(path) => {
                crate::socket_file::remove_stale(path)
                    .map_err(|e| io::Error::other(e.to_string()))?;
                (
                    Listener::Unix(UnixListener::bind(path)?),
                    Some(path.clone()),
                )
            }
            other => {
                let text = crate::config::listen_text(other);
                return Err(io::Error::other(format!(
                    "{text} is not a TCP or Unix stream address"
                )));
            }
        };
        Ok(ScrapeServer {
            listener,
            path,
            open: 0,
        })
    }

    /// The bound TCP address (port 0 resolved), if TCP.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        match &self.listener {
            Listener::Tcp(l) => l.local_addr().ok(),
            Listener::Unix(_) => None,
        }
    }

    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    pub fn source(&mut self) -> &mut dyn Source {
        match &mut self.listener {
            Listener::Tcp(l) => l,
            Listener::Unix(l) => l,
        }
    }

    /// Every connection waiting in the backlog; past [`MAX_CONNECTIONS`]
    /// they are closed at once.
    pub fn accept(&mut self, now: Instant) -> Vec<ScrapeConnection> {
        let mut out = Vec::new();
        loop {
            let stream = match &self.listener {
                Listener::Tcp(l) => l.accept().map(|(s, _)| Stream::Tcp(s)),
                Listener::Unix(l) => l.accept().map(|(s, _)| Stream::Unix(s)),
            };
            match stream {
                Ok(stream) if self.open < MAX_CONNECTIONS => {
                    self.open += 1;
                    out.push(ScrapeConnection {
                        stream,
                        head: Vec::new(),
                        reply: None,
                        written: 0,
                        deadline: now + IDLE_TIMEOUT,
                    });
                }
                Ok(_) => log::warn!(
                    "metrics_listen: {MAX_CONNECTIONS} connections are open; closed a new one"
                ),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return out,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    log::warn!("metrics_listen: accept failed: {e}");
                    return out;
                }
            }
        }
    }

    /// A connection was dropped.
    pub fn closed(&mut self) {
        self.open = self.open.saturating_sub(1);
    }
}

impl Drop for ScrapeServer {
    fn drop(&mut self) {
        if let Some(path) = &self.path {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// One client: its request head so far, then its reply.
#[derive(Debug)]
pub struct ScrapeConnection {
    stream: Stream,
    head: Vec<u8>,
    reply: Option<Vec<u8>>,
    written: usize,
    deadline: Instant,
}

impl ScrapeConnection {
    pub fn source(&mut self) -> &mut dyn Source {
        match &mut self.stream {
            Stream::Tcp(s) => s,
            Stream::Unix(s) => s,
        }
    }

    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Reads what arrived, answers a complete request with `answer`,
    /// writes what the socket takes. `false`: done, close it.
    pub fn pump(&mut self, answer: impl FnOnce(Route) -> Reply) -> bool {
        if self.reply.is_none() {
            match self.read_head() {
                Ok(Some(reply)) => self.reply = Some(reply),
                Ok(None) => return true,
                Err(()) => return false,
            }
            if let Some(Ok(route)) = self.route_of() {
                self.reply = Some(response(answer(route)));
            }
        }
        self.write()
    }

    /// `Ok(None)`: the head is not complete yet. `Ok(Some(_))`: a reply
    /// to send, provisional when the head parsed (its route answers).
    fn read_head(&mut self) -> Result<Option<Vec<u8>>, ()> {
        let mut buf = [0u8; 2048];
        loop {
            let read = match &mut self.stream {
                Stream::Tcp(s) => s.read(&mut buf),
                Stream::Unix(s) => s.read(&mut buf),
            };
            match read {
                Ok(0) => return Err(()),
                Ok(n) => {
                    let room = MAX_HEAD - self.head.len();
                    self.head.extend_from_slice(&buf[..n.min(room)]);
                    match self.route_of() {
                        Some(Ok(_)) => return Ok(Some(Vec::new())),
                        Some(Err(reply)) => return Ok(Some(response(reply))),
                        None if self.head.len() >= MAX_HEAD => {
                            let body = format!("request head larger than {MAX_HEAD} bytes\n");
                            return Ok(Some(response((431, TEXT, body.into_bytes()))));
                        }
                        None => {}
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Err(()),
            }
        }
    }

    /// The route of a complete head, the error reply of a bad one, or
    /// `None` while it is incomplete.
    fn route_of(&self) -> Option<Result<Route, Reply>> {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut request = httparse::Request::new(&mut headers);
        match request.parse(&self.head) {
            Ok(httparse::Status::Partial) => None,
            Ok(httparse::Status::Complete(_)) => Some(route(request.method, request.path)),
            Err(e) => Some(Err((400, TEXT, format!("bad request: {e}\n").into_bytes()))),
        }
    }

    fn write(&mut self) -> bool {
        let Some(reply) = &self.reply else {
            return true;
        };
        while self.written < reply.len() {
            let wrote = match &mut self.stream {
                Stream::Tcp(s) => s.write(&reply[self.written..]),
                Stream::Unix(s) => s.write(&reply[self.written..]),
            };
            match wrote {
                Ok(0) => return false,
                Ok(n) => self.written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        false
    }
}

const TEXT: &str = "text/plain; charset=utf-8";

/// `GET /metrics`, `GET /healthz` (a query string is ignored); 404 for
/// another path, 405 for another method.
fn route(method: Option<&str>, path: Option<&str>) -> Result<Route, Reply> {
    let path = path.unwrap_or_default();
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    let known = match path {
        "/metrics" => Some(Route::Metrics),
        "/healthz" => Some(Route::Health),
        _ => None,
    };
    match (method, known) {
        (Some("GET"), Some(route)) => Ok(route),
        (Some("GET"), None) => Err((404, TEXT, b"not found: try /metrics or /healthz\n".to_vec())),
        _ => Err((405, TEXT, b"method not allowed: use GET\n".to_vec())),
    }
}

/// The bytes of a whole HTTP/1.1 response that closes the connection.
fn response((status, content_type, body): Reply) -> Vec<u8> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Error",
    };
    let allow = if status == 405 { "Allow: GET\r\n" } else { "" };
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{allow}Connection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(&body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(route(Some("GET"), Some("/metrics")), Ok(Route::Metrics));
        assert_eq!(route(Some("GET"), Some("/healthz?x=1")), Ok(Route::Health));
        assert_eq!(route(Some("GET"), Some("/")).unwrap_err().0, 404);
        assert_eq!(route(Some("POST"), Some("/metrics")).unwrap_err().0, 405);
    }

    #[test]
    fn a_response_says_its_length_and_closes() {
        let text = String::from_utf8(response((200, TEXT, b"hi".to_vec()))).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(text.contains("Content-Length: 2\r\nConnection: close\r\n\r\nhi"));
    }
}
