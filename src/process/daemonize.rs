//! The classic double fork, with a readiness pipe and a locked pidfile.
//!
//! `forkd --daemon` must return only when the daemon is really up (or say
//! why it is not), so the launcher waits on a pipe that the daemon writes
//! once start-up finished. The pidfile is locked with `flock(2)` before the
//! first fork: the lock belongs to the open file description, which the
//! daemon inherits, so a second launcher fails at once with a clear message.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg, OFlag};
use nix::unistd::ForkResult;

/// The daemon's end of the launcher handshake.
#[derive(Debug)]
pub struct Readiness {
    pipe: Option<OwnedFd>,
}

impl Readiness {
    /// Tells the launcher that start-up succeeded; it exits 0.
    pub fn ready(&mut self) {
        self.send("ok");
    }

    /// Tells the launcher why start-up failed; it prints `why` and exits 1.
    pub fn failed(&mut self, why: &str) {
        self.send(why);
    }

    fn send(&mut self, message: &str) {
        if let Some(fd) = self.pipe.take() {
            let _ = File::from(fd).write_all(message.as_bytes());
        }
    }
}

/// A pidfile held under an exclusive lock; removed when dropped.
#[derive(Debug)]
pub struct Pidfile {
    path: PathBuf,
    _lock: Flock<File>,
}

impl Drop for Pidfile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Opens and locks `path`, or says which forkd holds it.
fn lock_pidfile(path: &Path) -> Result<Flock<File>, String> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| format!("cannot open pidfile {}: {e}", path.display()))?;
    Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(mut file, errno)| {
        let mut holder = String::new();
        let _ = file.read_to_string(&mut holder);
        match errno {
            nix::errno::Errno::EWOULDBLOCK => format!(
                "pidfile {} is locked: another forkd is running (pid {})",
                path.display(),
                holder.trim()
            ),
            e => format!("cannot lock pidfile {}: {e}", path.display()),
        }
    })
}

/// Detaches from the terminal. In the launcher this never returns: it waits
/// for the daemon's start-up report and exits with 0 or 1. In the daemon it
/// returns the readiness handle and the pidfile, with the cwd at `/`, umask
/// 022, stdin on /dev/null and stdout/stderr on `log_file` or /dev/null.
///
/// Must be called before any thread or event loop exists.
pub fn daemonize(pidfile: &Path, log_file: Option<&Path>) -> Result<(Readiness, Pidfile), String> {
    let mut lock = lock_pidfile(pidfile)?;
    let path = std::path::absolute(pidfile).map_err(|e| e.to_string())?;
    let (report_read, report_write) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    // SAFETY: called from main before any thread exists; both sides go on
    // running ordinary Rust code, which is sound in a single-threaded child.
    match unsafe { nix::unistd::fork() }.map_err(|e| format!("fork: {e}"))? {
        ForkResult::Parent { child } => {
            drop(report_write);
            let mut report = String::new();
            let _ = File::from(report_read).read_to_string(&mut report);
            let _ = nix::sys::wait::waitpid(child, None);
            if report == "ok" {
                std::process::exit(crate::exit::OK);
            }
            if report.is_empty() {
                report = "the daemon exited during start-up".into();
            }
            eprintln!("forkd: {report}");
            std::process::exit(crate::exit::FAILURE);
        }
        ForkResult::Child => {}
    }
    drop(report_read);
    nix::unistd::setsid().map_err(|e| format!("setsid: {e}"))?;
    // SAFETY: still single-threaded; the intermediate child only `_exit`s.
    let second = unsafe { nix::unistd::fork() };
    if let ForkResult::Parent { .. } = second.map_err(|e| format!("fork: {e}"))? {
        // SAFETY: `_exit` ends the intermediate process without running
        // destructors that belong to the daemon (pidfile removal).
        unsafe { libc::_exit(0) }
    }
    // Now a grandchild: not a session leader, so never reacquires a terminal.
    std::env::set_current_dir("/").map_err(|e| format!("chdir /: {e}"))?;
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
    lock.set_len(0).map_err(|e| format!("pidfile: {e}"))?;
    lock.rewind().map_err(|e| format!("pidfile: {e}"))?;
    writeln!(lock, "{}", std::process::id()).map_err(|e| format!("pidfile: {e}"))?;
    redirect_stdio(log_file)?;
    Ok((
        Readiness {
            pipe: Some(report_write),
        },
        Pidfile { path, _lock: lock },
    ))
}

fn redirect_stdio(log_file: Option<&Path>) -> Result<(), String> {
    let null = File::options()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map_err(|e| format!("/dev/null: {e}"))?;
    let log = match log_file {
        Some(p) => File::options()
            .create(true)
            .append(true)
            .open(p)
            .map_err(|e| format!("cannot open log_file {}: {e}", p.display()))?,
        None => null.try_clone().map_err(|e| e.to_string())?,
    };
    nix::unistd::dup2_stdin(&null)
        .and(nix::unistd::dup2_stdout(&log))
        .and(nix::unistd::dup2_stderr(&log))
        .map_err(|e| format!("dup2: {e}"))
}
