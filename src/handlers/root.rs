//! The directory a file-serving handler (`files`, `ftp`) serves, and the
//! rules for touching it.
//!
//! The root is opened once, when the handler is built, and every name is
//! then checked ([`check_name`]) and opened relative to that descriptor
//! with `O_NOFOLLOW`, so neither a name nor a symbolic link leaves it; only
//! regular files are read. An upload goes to a hidden temporary name
//! (`O_EXCL`), is renamed into place (renameat2(2), with
//! `RENAME_NOREPLACE` unless overwriting) only once complete, and is
//! removed when dropped unfinished, so an early EOF, a timeout or a
//! refusal leaves nothing behind. Never blocks on a socket; writes to the
//! file system in place.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, RenameFlags};
use nix::sys::stat::{Mode, SFlag};
use nix::unistd::UnlinkatFlags;

use super::{Context, HandlerError};

/// Names of uploads in progress start so; no request may name one.
pub const PARTIAL_PREFIX: &str = ".forkd-partial-";

/// Opens the service's `root` for `handler` (`files`, `ftp`, `http`): a
/// missing key or a directory that cannot be opened is a start-up error.
pub fn open_dir(context: &Context<'_>, handler: &str) -> Result<OwnedFd, HandlerError> {
    let config = context.service;
    let Some(root) = &config.root else {
        return Err(HandlerError::Setup(format!(
            "service \"{}\": handler = \"{handler}\" needs root = \"/DIR\"",
            config.name
        )));
    };
    open_path(root).map_err(|e| {
        HandlerError::Setup(format!(
            "service \"{}\": cannot open root \"{}\": {}",
            config.name,
            root.display(),
            e.desc()
        ))
    })
}

fn open_path(path: &Path) -> nix::Result<OwnedFd> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    nix::fcntl::open(path, flags, Mode::empty())
}

/// The served directory, open; cheap to clone (every session holds one).
#[derive(Debug, Clone)]
pub struct Root {
    dir: Rc<OwnedFd>,
}

impl Root {
    /// Opens the service's `root` for `handler`: a missing key or a
    /// directory that cannot be opened is a start-up error.
    pub fn of(context: &Context<'_>, handler: &str) -> Result<Root, HandlerError> {
        open_dir(context, handler).map(|dir| Root { dir: Rc::new(dir) })
    }

    /// Opens the directory at `path` (the unit tests' roots).
    #[cfg(test)]
    pub fn open(path: &Path) -> nix::Result<Root> {
        open_path(path).map(|dir| Root { dir: Rc::new(dir) })
    }

    /// Whether `name` exists in the root, as anything (a symbolic link
    /// counts, dangling or not).
    pub fn exists(&self, name: &str) -> bool {
        nix::sys::stat::fstatat(&*self.dir, name, AtFlags::AT_SYMLINK_NOFOLLOW).is_ok()
    }

    /// Opens `name` for reading: a regular file, no symlink; its size.
    /// The error is the reason, in a client's words.
    pub fn open_regular(&self, name: &str) -> Result<(File, u64), &'static str> {
        check_name(name)?;
        let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
        let fd = match nix::fcntl::openat(&*self.dir, name, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => return Err("no such file"),
            Err(Errno::ELOOP) => return Err("a symbolic link"),
            Err(Errno::EACCES) => return Err("permission denied"),
            Err(_) => return Err("cannot open"),
        };
        let stat = nix::sys::stat::fstat(&fd).map_err(|_| "cannot open")?;
        if !is_regular(stat.st_mode) {
            return Err("not a regular file");
        }
        Ok((File::from(fd), u64::try_from(stat.st_size).unwrap_or(0)))
    }

    /// The names of the root's regular files (not symbolic links), sorted;
    /// hidden names (a leading `.`, uploads in progress among them) and
    /// names that are not UTF-8 are left out.
    pub fn regular_files(&self) -> io::Result<Vec<String>> {
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        // A descriptor of its own: the read position is not shared.
        let mut dir = nix::dir::Dir::openat(&*self.dir, ".", flags, Mode::empty())?;
        let mut names = Vec::new();
        for entry in dir.iter() {
            let entry = entry?;
            let Ok(name) = entry.file_name().to_str() else {
                continue;
            };
            if name.starts_with('.') {
                continue;
            }
            let stat = nix::sys::stat::fstatat(&*self.dir, name, AtFlags::AT_SYMLINK_NOFOLLOW);
            if stat.is_ok_and(|s| is_regular(s.st_mode)) {
                names.push(name.to_string());
            }
        }
        names.sort();
        Ok(names)
    }

    /// Starts an upload of `name` under a temporary name; `None` when that
    /// file cannot be made.
    pub fn upload(&self, name: String) -> Option<Upload> {
        let partial = format!(
            "{PARTIAL_PREFIX}{}-{}",
            std::process::id(),
            UPLOADS.fetch_add(1, Ordering::Relaxed)
        );
        let flags =
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let fd = nix::fcntl::openat(
            &*self.dir,
            partial.as_str(),
            flags,
            Mode::from_bits_truncate(0o644),
        )
        .ok()?;
        Some(Upload {
            root: self.clone(),
            name,
            partial,
            file: File::from(fd),
            written: 0,
            done: false,
        })
    }
}

impl AsFd for Root {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.dir.as_fd()
    }
}

fn is_regular(mode: libc::mode_t) -> bool {
    SFlag::from_bits_truncate(mode) & SFlag::S_IFMT == SFlag::S_IFREG
}

/// A name stays in the root: a basename, not hidden upload state.
pub fn check_name(name: &str) -> Result<(), &'static str> {
    match name {
        "" => Err("empty"),
        "." | ".." => Err("a directory"),
        _ if name.contains('/') => Err("contains /"),
        _ if name.contains('\0') => Err("contains NUL"),
        _ if name.len() > 255 => Err("longer than 255 bytes"),
        _ if name.starts_with(PARTIAL_PREFIX) => Err("an upload in progress"),
        _ => Ok(()),
    }
}

/// Numbers this process's uploads, so two at once never share a name.
static UPLOADS: AtomicU64 = AtomicU64::new(0);

/// An upload in progress: its temporary file, removed unless finished.
#[derive(Debug)]
pub struct Upload {
    root: Root,
    name: String,
    partial: String,
    file: File,
    written: u64,
    done: bool,
}

impl Upload {
    /// Appends `data` to the temporary file.
    pub fn write(&mut self, data: &[u8]) -> io::Result<()> {
        self.file.write_all(data)?;
        self.written += data.len() as u64;
        Ok(())
    }

    /// Bytes stored so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// The upload is complete: into place, not over an existing file
    /// unless `overwrite`. Returns whether it was stored; if not, `Drop`
    /// removes it.
    pub fn finish(mut self, overwrite: bool) -> bool {
        let flags = if overwrite {
            RenameFlags::empty()
        } else {
            RenameFlags::RENAME_NOREPLACE
        };
        let dir = &*self.root.dir;
        let renamed =
            nix::fcntl::renameat2(dir, self.partial.as_str(), dir, self.name.as_str(), flags);
        self.done = renamed.is_ok();
        self.done
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        if !self.done {
            let _ = nix::unistd::unlinkat(
                &*self.root.dir,
                self.partial.as_str(),
                UnlinkatFlags::NoRemoveDir,
            );
        }
    }
}
