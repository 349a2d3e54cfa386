//! Unix socket files on disk: telling one left by a crashed run (nobody
//! listens on it any more) from a live one, and removing only the former;
//! and the directory a socket goes in, created when missing and removed
//! again at exit. The control socket and `unix:` listeners share this, so
//! both decide the same way before they bind.
//!
//! Syscalls: lstat, socket + connect (non-blocking), getsockopt
//! (SO_PEERCRED), unlink, mkdir, rmdir. The probe never blocks: a live
//! listener whose backlog is full answers `EAGAIN` at once (unix(7)),
//! where a blocking connect would hang start-up or a reload until it
//! accepted. This module never binds, listens or accepts, never removes
//! anything but a socket file nobody answers on, and never removes a
//! directory it did not create or one that is not empty.

use std::io;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

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

/// The directories [`create_parent`] made for a socket file, removed
/// again (deepest first, each only if empty) when this is dropped: after
/// the socket file itself, when it is a field of the socket's owner.
#[derive(Debug, Default)]
pub struct CreatedDirs(Vec<PathBuf>);

impl CreatedDirs {
    /// The directories made, outermost first.
    pub fn paths(&self) -> &[PathBuf] {
        &self.0
    }
}

impl Drop for CreatedDirs {
    fn drop(&mut self) {
        for dir in self.0.iter().rev() {
            // rmdir(2) refuses a directory that is not empty: anything put
            // there since (another socket, a user's file) keeps it.
            if std::fs::remove_dir(dir).is_err() {
                break;
            }
        }
    }
}

/// Creates the missing directories above the socket file `path` (mode
/// 0777 less the umask, as mkdir(1) does) and remembers which ones it
/// made, so that dropping the result removes them again.
pub fn create_parent(path: &Path) -> io::Result<CreatedDirs> {
    let Some(parent) = path.parent().filter(|d| !d.as_os_str().is_empty()) else {
        return Ok(CreatedDirs::default());
    };
    let missing: Vec<PathBuf> = parent
        .ancestors()
        .take_while(|dir| !dir.as_os_str().is_empty() && std::fs::symlink_metadata(dir).is_err())
        .map(Path::to_path_buf)
        .collect();
    let mut created = CreatedDirs::default();
    for dir in missing.into_iter().rev() {
        match std::fs::create_dir(&dir) {
            Ok(()) => created.0.push(dir),
            // Made by someone else meanwhile: theirs, not ours to remove.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("cannot create the directory {}: {e}", dir.display()),
                ))
            }
        }
    }
    Ok(created)
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

    #[test]
    fn only_the_directories_made_are_removed_and_only_when_empty() {
        let dir = scratch("dirs");
        let socket = dir.join("a/b/s.sock");
        let created = create_parent(&socket).unwrap();
        assert_eq!(created.paths(), [dir.join("a"), dir.join("a/b")]);
        assert!(dir.join("a/b").is_dir());
        drop(created);
        assert!(!dir.join("a").exists(), "both made, both removed");
        assert!(dir.exists(), "the existing parent stays");

        let created = create_parent(&socket).unwrap();
        std::fs::write(dir.join("a/b/keep"), "").unwrap();
        drop(created);
        assert!(dir.join("a/b/keep").exists(), "a directory in use stays");
        assert!(create_parent(&socket).unwrap().paths().is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
