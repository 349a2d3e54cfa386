//! The sender side of sd_notify(3): one datagram per message, newline
//! separated `KEY=VALUE` assignments, sent to the `AF_UNIX` socket named by
//! `NOTIFY_SOCKET` (a path, or `@name` for the abstract namespace).
//!
//! Hand-written rather than a crate: it is one `sendto(2)` on a datagram
//! socket (docs/dependencies.md). The socket is close-on-exec (so exec'd
//! children never hold it) and non-blocking: a wedged receiver costs a
//! dropped message (EAGAIN, logged by the caller; the next STATUS or
//! WATCHDOG follows within the interval), never a stalled loop.

use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// A connection-less sender to systemd's notification socket.
#[derive(Debug)]
pub struct Notifier {
    socket: UnixDatagram,
    address: SocketAddr,
    /// As written in `NOTIFY_SOCKET`, for error messages.
    name: String,
    /// Only this process notifies; forked workers inherit the socket but
    /// must stay silent.
    owner: u32,
}

impl Notifier {
    /// Reads `NOTIFY_SOCKET` and removes it from the environment. `Ok(None)`
    /// when it is unset or empty (forkd was not started as `Type=notify`).
    ///
    /// Call only while the process is single-threaded (environment writes).
    pub fn from_env() -> Result<Option<Notifier>, String> {
        let Some(value) = std::env::var_os("NOTIFY_SOCKET") else {
            return Ok(None);
        };
        std::env::remove_var("NOTIFY_SOCKET");
        let value = value.to_string_lossy().into_owned();
        if value.is_empty() {
            return Ok(None);
        }
        Notifier::connect(&value).map(Some).map_err(|e| {
            format!("NOTIFY_SOCKET={value}: {e}; forkd runs without sd_notify (check the unit's Type= and NotifyAccess=)")
        })
    }

    /// A sender to `address`: an absolute path, or `@name` for an abstract
    /// socket (systemd uses both forms).
    pub fn connect(address: &str) -> io::Result<Notifier> {
        let parsed = match address.strip_prefix('@') {
            Some(abstract_name) => SocketAddr::from_abstract_name(abstract_name.as_bytes())?,
            None if address.starts_with('/') => SocketAddr::from_pathname(address)?,
            None => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "not an absolute path or an @abstract name",
                ))
            }
        };
        let socket = UnixDatagram::unbound()?;
        socket.set_nonblocking(true)?;
        Ok(Notifier {
            socket,
            address: parsed,
            name: address.to_string(),
            owner: std::process::id(),
        })
    }

    /// Sends one message (`"READY=1\nSTATUS=..."`). Does nothing, and
    /// succeeds, in any process but the one that created the sender.
    pub fn send(&self, message: &str) -> io::Result<()> {
        if std::process::id() != self.owner {
            return Ok(());
        }
        self.socket
            .send_to_addr(message.as_bytes(), &self.address)
            .map(|_| ())
    }

    /// After `--daemon`'s double fork the daemon is a new process; it, not
    /// the launcher, is the one that notifies from now on.
    pub fn adopt_current_process(&mut self) {
        self.owner = std::process::id();
    }

    /// The socket as `NOTIFY_SOCKET` named it.
    pub fn address(&self) -> &str {
        &self.name
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn receiver(tag: &str) -> (UnixDatagram, std::path::PathBuf) {
        let path =
            std::env::temp_dir().join(format!("forkd-notify-{tag}-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let socket = UnixDatagram::bind(&path).expect("bind receiver");
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        (socket, path)
    }

    fn recv(socket: &UnixDatagram) -> String {
        let mut buf = [0u8; 4096];
        let n = socket.recv(&mut buf).expect("a notification");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[test]
    fn messages_reach_a_path_socket_as_one_datagram_each() {
        let (socket, path) = receiver("path");
        let notifier = Notifier::connect(path.to_str().unwrap()).unwrap();
        notifier.send("READY=1\nSTATUS=2 programs").unwrap();
        notifier.send("WATCHDOG=1").unwrap();
        assert_eq!(recv(&socket), "READY=1\nSTATUS=2 programs");
        assert_eq!(recv(&socket), "WATCHDOG=1");
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn an_at_sign_names_an_abstract_socket() {
        let name = format!("forkd-notify-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let socket = UnixDatagram::bind_addr(&addr).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let notifier = Notifier::connect(&format!("@{name}")).unwrap();
        notifier.send("STOPPING=1").unwrap();
        assert_eq!(recv(&socket), "STOPPING=1");
    }

    #[test]
    fn a_relative_address_is_refused_with_the_reason() {
        let err = Notifier::connect("relative.sock").unwrap_err();
        assert!(err.to_string().contains("absolute path"), "{err}");
    }

    #[test]
    fn another_process_never_notifies() {
        let (socket, path) = receiver("owner");
        let mut notifier = Notifier::connect(path.to_str().unwrap()).unwrap();
        notifier.owner = std::process::id() + 1; // as seen from a forked worker
        notifier.send("READY=1").unwrap();
        notifier.adopt_current_process();
        notifier.send("STATUS=from the owner").unwrap();
        assert_eq!(recv(&socket), "STATUS=from the owner");
        let _ = std::fs::remove_file(path);
    }
}
