//! The names forkd gave its message queues and shared-memory segments,
//! written down so that the next forkd removes what a killed one left.
//!
//! /dev/mqueue need not be mounted, so forkd never lists it: every name is
//! appended to a ledger file next to the control socket (`<socket>.ipc`)
//! before the object is created, and at start-up every name in the ledger
//! is unlinked (only one forkd can own a control socket, so whatever the
//! ledger names belongs to a forkd that is gone) and the ledger emptied.
//! At a clean exit the objects are unlinked by their owners and the ledger
//! removed.

use std::io::{self, BufRead, Write};
use std::path::{Path, PathBuf};

/// Which kind of POSIX IPC object a name is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Mqueue,
    Shm,
}

impl Kind {
    fn tag(self) -> &'static str {
        match self {
            Kind::Mqueue => "mq",
            Kind::Shm => "shm",
        }
    }

    /// Removes the object; gone already is fine.
    pub fn unlink(self, name: &str) -> io::Result<()> {
        let result = match self {
            Kind::Mqueue => nix::mqueue::mq_unlink(name),
            Kind::Shm => nix::sys::mman::shm_unlink(name),
        };
        match result {
            Ok(()) | Err(nix::errno::Errno::ENOENT) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

/// The ledger of one forkd.
#[derive(Debug)]
pub struct Ledger {
    path: PathBuf,
    file: std::fs::File,
    written: std::collections::HashSet<String>,
}

impl Ledger {
    /// The ledger beside `control_socket`. Removes whatever the previous
    /// forkd of that socket left and returns how many names it removed.
    pub fn open(control_socket: &Path) -> io::Result<(Ledger, usize)> {
        let mut path = control_socket.as_os_str().to_owned();
        path.push(".ipc");
        let path = PathBuf::from(path);
        let removed = sweep(&path)?;
        let file = std::fs::File::options()
            .create(true)
            .write(true)
            .truncate(true)
            .open(&path)?;
        Ok((
            Ledger {
                path,
                file,
                written: Default::default(),
            },
            removed,
        ))
    }

    /// Writes `name` down; call before creating the object.
    pub fn record(&mut self, kind: Kind, name: &str) -> io::Result<()> {
        let line = format!("{} {name}\n", kind.tag());
        if self.written.insert(line.clone()) {
            self.file.write_all(line.as_bytes())?;
        }
        Ok(())
    }
}

impl Drop for Ledger {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Unlinks every object the ledger at `path` names; returns how many
/// existed.
fn sweep(path: &Path) -> io::Result<usize> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut removed = 0;
    for line in io::BufReader::new(file).lines() {
        let line = line?;
        let (kind, name) = match line.split_once(' ') {
            Some(("mq", name)) => (Kind::Mqueue, name),
            Some(("shm", name)) => (Kind::Shm, name),
            _ => continue,
        };
        // Only names forkd makes: a ledger edited by hand must not
        // become a way to unlink anything else.
        if !name.starts_with("/forkd.") || name[1..].contains('/') {
            continue;
        }
        let existed = match kind {
            Kind::Mqueue => nix::mqueue::mq_unlink(name).is_ok(),
            Kind::Shm => nix::sys::mman::shm_unlink(name).is_ok(),
        };
        removed += usize::from(existed);
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_ledger_removes_what_the_first_one_left() {
        let dir = std::env::temp_dir().join(format!("forkd-ledger-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("control.sock");
        let name = format!("/forkd.{}.ledgertest.0.seg", std::process::id());
        let (mut first, _) = Ledger::open(&socket).unwrap();
        first.record(Kind::Shm, &name).unwrap();
        let fd = nix::sys::mman::shm_open(
            name.as_str(),
            nix::fcntl::OFlag::O_CREAT | nix::fcntl::OFlag::O_RDWR,
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .unwrap();
        drop(fd);
        // A killed forkd drops nothing: its ledger stays on disk.
        std::mem::forget(first);
        let (second, removed) = Ledger::open(&socket).unwrap();
        assert_eq!(removed, 1);
        assert!(Kind::Shm.unlink(&name).is_ok());
        let again = nix::sys::mman::shm_open(
            name.as_str(),
            nix::fcntl::OFlag::O_RDWR,
            nix::sys::stat::Mode::empty(),
        );
        assert_eq!(again.err(), Some(nix::errno::Errno::ENOENT));
        drop(second);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
