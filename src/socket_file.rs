//! Unix socket files on disk: telling one left by a crashed run (nobody
//! listens on it any more) from a live one, and removing only the former.
//! The control socket and `unix:` listeners share this, so both decide the
//! same way before they bind.
//!
//! Syscalls: lstat, socket + connect (non-blocking), getsockopt
//! (SO_PEERCRED), unlink. The probe never blocks: a live listener whose
//! backlog is full answers `EAGAIN` at once (unix(7)), where a blocking
//! connect would hang start-up or a reload until it accepted. This module
//! never binds, listens or accepts, and never removes anything but a
//! socket file nobody answers on.

use std::io;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;

use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};

/// What [`remove_stale`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stale {
    /// Nothing at the path: free to bind.
    Absent,
    /// A socket file nobody answered on; it was removed.
    Removed,
}

/// Why the path cannot be bound. The caller adds what to do, in the
/// words of its own config key.
#[derive(Debug, thiserror::Error)]
pub enum StaleError {
    #[error("the path exists and is not a socket")]
    NotASocket,
    /// A process answers on the socket (its pid when the kernel told, and
    /// `None` also when the backlog was full).
    #[error("another process{} is listening there", pid.map(|p| format!(" (pid {p})")).unwrap_or_default())]
    Live { pid: Option<i32> },
    #[error("cannot tell whether another process listens there: {0}")]
    Unknown(io::Error),
    #[error("cannot remove the stale socket file: {0}")]
    Remove(io::Error),
}

/// Removes the socket file at `path` if nobody listens on it; refuses to
/// touch a live socket or a file that is not a socket.
pub fn remove_stale(path: &Path) -> Result<Stale, StaleError> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Stale::Absent),
        Err(e) => return Err(StaleError::Unknown(e)),
    };
    if !meta.file_type().is_socket() {
        return Err(StaleError::NotASocket);
    }
    match mio::net::UnixStream::connect(path) {
        Ok(stream) => Err(StaleError::Live {
            pid: getsockopt(&stream, PeerCredentials).ok().map(|c| c.pid()),
        }),
        // The backlog is full: a listener is there, just busy.
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Err(StaleError::Live { pid: None }),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            match std::fs::remove_file(path) {
                Ok(()) => Ok(Stale::Removed),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Stale::Absent),
                Err(e) => Err(StaleError::Remove(e)),
            }
        }
        // Removed between the lstat and the connect.
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Stale::Absent),
        Err(e) => Err(StaleError::Unknown(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(tag: &str) -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("forkd-socket-file-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_stale_socket_is_removed_a_live_one_and_other_files_are_kept() {
        let dir = scratch("kinds");
        let path = dir.join("s.sock");
        assert_eq!(remove_stale(&path).unwrap(), Stale::Absent);
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert_eq!(remove_stale(&path).unwrap(), Stale::Removed);
        assert!(!path.exists());
        let live = std::os::unix::net::UnixListener::bind(&path).unwrap();
        match remove_stale(&path) {
            Err(StaleError::Live { pid }) => assert_eq!(pid, Some(std::process::id() as i32)),
            other => panic!("live socket: {other:?}"),
        }
        assert!(path.exists());
        drop(live);
        let file = dir.join("plain");
        std::fs::write(&file, "keep").unwrap();
        assert!(matches!(remove_stale(&file), Err(StaleError::NotASocket)));
        assert!(file.exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
