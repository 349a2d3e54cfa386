//! Opening a request's file under the root so that neither a name nor a
//! symlink leads out of it, checked by the kernel on the file opened, not
//! on the string: openat2(2) with `RESOLVE_BENEATH` (and
//! `RESOLVE_NO_SYMLINKS` unless `follow_symlinks`) where the kernel has it
//! (Linux 5.6); where openat2 answers ENOSYS, a walk from the root's
//! directory fd one component at a time with `O_NOFOLLOW`, resolving a
//! followed symlink's target itself, within the root.

use std::cell::Cell;
use std::ffi::CStr;
use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{FileStat, Mode, SFlag};

/// Symlinks followed in one walk at most (the kernel's own limit).
const MAX_LINKS: usize = 40;

/// Why a file is not served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Absent (404).
    NotFound,
    /// A symlink where none may be, a way out of the root, or no
    /// permission (403).
    Forbidden,
}

/// What was opened.
#[derive(Debug)]
pub struct Opened {
    pub file: File,
    pub stat: FileStat,
}

impl Opened {
    pub fn kind(&self) -> SFlag {
        SFlag::from_bits_truncate(self.stat.st_mode) & SFlag::S_IFMT
    }
}

/// The root directory and how names under it are opened.
#[derive(Debug)]
pub struct Opener {
    root: OwnedFd,
    follow_symlinks: bool,
    /// Cleared for good once openat2 answers ENOSYS.
    have_openat2: Cell<bool>,
}

/// The flags of the file itself: read-only, and O_NONBLOCK so a FIFO
/// planted under the root cannot hold the worker in open(2).
fn file_flags() -> OFlag {
    OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK | OFlag::O_NOCTTY
}

impl Opener {
    pub fn new(root: OwnedFd, follow_symlinks: bool) -> Opener {
        Opener {
            root,
            follow_symlinks,
            have_openat2: Cell::new(true),
        }
    }

    pub fn root(&self) -> &OwnedFd {
        &self.root
    }

    /// Opens `path` (root-relative, as `wire::resolve_target` makes it)
    /// and fstat(2)s it.
    pub fn open(&self, path: &CStr) -> Result<Opened, Refused> {
        let fd = if self.have_openat2.get() {
            match self.open_beneath(path) {
                Err(Errno::ENOSYS) => {
                    self.have_openat2.set(false);
                    self.walk(path.to_bytes())
                }
                other => other,
            }
        } else {
            self.walk(path.to_bytes())
        };
        let fd = fd.map_err(refusal)?;
        let stat = nix::sys::stat::fstat(&fd).map_err(refusal)?;
        Ok(Opened {
            file: File::from(fd),
            stat,
        })
    }

    fn open_beneath(&self, path: &CStr) -> Result<OwnedFd, Errno> {
        let mut resolve = ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_MAGICLINKS;
        if !self.follow_symlinks {
            resolve |= ResolveFlag::RESOLVE_NO_SYMLINKS;
        }
        let how = OpenHow::new().flags(file_flags()).resolve(resolve);
        // EAGAIN: a rename raced the lookup (openat2(2)); try again.
        let mut tries = 0;
        loop {
            match nix::fcntl::openat2(&self.root, path, how) {
                Err(Errno::EAGAIN) if tries < 3 => tries += 1,
                other => return other,
            }
        }
    }

    /// The fallback: one component at a time from the root's fd, each
    /// opened with O_NOFOLLOW; a symlink is refused, or (with
    /// `follow_symlinks`) read and its target walked in its place, where
    /// `..` may climb only as far as the root and an absolute target is
    /// refused.
    pub(super) fn walk(&self, path: &[u8]) -> Result<OwnedFd, Errno> {
        let mut dirs: Vec<OwnedFd> = Vec::new();
        // Components still to walk, the next one last.
        let mut pending: Vec<Vec<u8>> = split_reversed(path);
        let mut links = 0;
        while let Some(name) = pending.pop() {
            match name.as_slice() {
                b"" | b"." => continue,
                b".." => {
                    dirs.pop().ok_or(Errno::EXDEV)?;
                    continue;
                }
                _ => {}
            }
            let at = dirs.last().map_or(self.root.as_fd(), |d| d.as_fd());
            let last = pending.is_empty();
            let flags = if last {
                file_flags() | OFlag::O_NOFOLLOW
            } else {
                OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC
            };
            match nix::fcntl::openat(at, name.as_slice(), flags, Mode::empty()) {
                Ok(fd) if last => return Ok(fd),
                Ok(fd) => dirs.push(fd),
                Err(Errno::ELOOP | Errno::ENOTDIR) if is_symlink(at, &name) => {
                    if !self.follow_symlinks {
                        return Err(Errno::ELOOP);
                    }
                    links += 1;
                    if links > MAX_LINKS {
                        return Err(Errno::ELOOP);
                    }
                    let target = nix::fcntl::readlinkat(at, name.as_slice())?;
                    let target = target.as_encoded_bytes();
                    if target.first() == Some(&b'/') {
                        return Err(Errno::EXDEV);
                    }
                    pending.extend(split_reversed(target));
                }
                Err(e) => return Err(e),
            }
        }
        // Only `.`/`..` segments: the root itself (or a directory in it).
        let at = dirs.last().map_or(self.root.as_fd(), |d| d.as_fd());
        nix::fcntl::openat(at, ".", file_flags(), Mode::empty())
    }
}

fn split_reversed(path: &[u8]) -> Vec<Vec<u8>> {
    path.split(|&b| b == b'/')
        .rev()
        .map(<[u8]>::to_vec)
        .collect()
}

fn is_symlink(at: std::os::fd::BorrowedFd<'_>, name: &[u8]) -> bool {
    nix::sys::stat::fstatat(at, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)
        .is_ok_and(|s| SFlag::from_bits_truncate(s.st_mode) & SFlag::S_IFMT == SFlag::S_IFLNK)
}

/// What an errno of open(2) or openat2(2) means to the client.
fn refusal(e: Errno) -> Refused {
    match e {
        // A symlink refused, a way out of the root, no permission.
        Errno::ELOOP | Errno::EXDEV | Errno::EACCES | Errno::EPERM => Refused::Forbidden,
        _ => Refused::NotFound,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;
    use std::path::Path;

    fn opener(root: &Path, follow: bool) -> Opener {
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        Opener::new(
            nix::fcntl::open(root, flags, Mode::empty()).unwrap(),
            follow,
        )
    }

    /// root/{a.txt, d/b.txt, in -> d/b.txt, up -> ../outside.txt,
    /// abs -> /etc/hostname, dlink -> d}; outside.txt beside root.
    fn tree(tag: &str) -> std::path::PathBuf {
        let base =
            std::env::temp_dir().join(format!("forkd-http-open-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let root = base.join("root");
        std::fs::create_dir_all(root.join("d")).unwrap();
        std::fs::write(root.join("a.txt"), "a").unwrap();
        std::fs::write(root.join("d/b.txt"), "b").unwrap();
        std::fs::write(base.join("outside.txt"), "secret").unwrap();
        symlink("d/b.txt", root.join("in")).unwrap();
        symlink("../outside.txt", root.join("up")).unwrap();
        symlink("/etc/hostname", root.join("abs")).unwrap();
        symlink("d", root.join("dlink")).unwrap();
        root
    }

    fn read(fd: OwnedFd) -> String {
        std::io::read_to_string(File::from(fd)).unwrap()
    }

    /// Both ways of opening (openat2 and the walk) agree on every case.
    #[test]
    fn no_name_or_symlink_leaves_the_root_either_way() {
        let root = tree("cases");
        let strict = opener(&root, false);
        let follow = opener(&root, true);
        for (path, want_strict, want_follow) in [
            ("a.txt", Ok("a"), Ok("a")),
            ("d/b.txt", Ok("b"), Ok("b")),
            ("in", Err(Refused::Forbidden), Ok("b")),
            ("dlink/b.txt", Err(Refused::Forbidden), Ok("b")),
            ("up", Err(Refused::Forbidden), Err(Refused::Forbidden)),
            ("abs", Err(Refused::Forbidden), Err(Refused::Forbidden)),
            ("missing", Err(Refused::NotFound), Err(Refused::NotFound)),
            ("a.txt/x", Err(Refused::NotFound), Err(Refused::NotFound)),
        ] {
            for (opener, want) in [(&strict, want_strict), (&follow, want_follow)] {
                let c = std::ffi::CString::new(path).unwrap();
                let got = opener
                    .open(&c)
                    .map(|o| std::io::read_to_string(o.file).unwrap());
                assert_eq!(got.as_deref().map_err(|e| *e), want, "openat2 {path}");
                let walked = opener.walk(path.as_bytes()).map(read).map_err(refusal);
                assert_eq!(walked.as_deref().map_err(|e| *e), want, "walk {path}");
            }
        }
        std::fs::remove_dir_all(root.parent().unwrap()).unwrap();
    }
}
