//! Processes: fork, exec, the child-side setup between them, the double
//! fork, exit descriptions and restart back-off.
//!
//! Syscalls: fork, execve, setsid, prctl, setrlimit, setgroups/setgid/setuid,
//! sigprocmask, sigaction, waitpid, kill/killpg. Invariants: forks happen
//! only from the single-threaded supervisor (or from a forked worker that is
//! itself single-threaded); signals are blocked across every fork so no
//! handler of forkd's runs in a child; a child that does not exec ends in
//! `_exit`, never by returning into the caller's stack. This module never
//! decides *when* to fork or restart: the supervisor does.

pub mod backoff;
pub mod daemonize;
pub mod exec;

use std::convert::Infallible;
use std::fmt;
use std::io;

use nix::sys::signal::{self, SigSet, SigmaskHow, Signal};
use nix::sys::wait::WaitStatus;
use nix::unistd::{ForkResult, Pid};

pub use backoff::Backoff;
pub use exec::{ChildFd, Credentials, ExecPlan, ExecReport, SpawnError};

/// Forks with every signal blocked. The child resets all signal
/// dispositions to their defaults, unblocks signals and runs `child`, which
/// must not return (it execs or calls `_exit`). The parent gets the pid.
///
/// Blocking first closes the window in which a signal delivered to the child
/// would run forkd's handler (and write into forkd's self-pipe).
pub fn fork_with_signals_blocked(child: impl FnOnce() -> Infallible) -> io::Result<Pid> {
    let mut old = SigSet::empty();
    signal::sigprocmask(
        SigmaskHow::SIG_SETMASK,
        Some(&SigSet::all()),
        Some(&mut old),
    )?;
    // SAFETY: forkd's supervisor is single-threaded (no other thread can hold
    // a lock or be mid-allocation), and the child only runs `reset_signals`
    // and `child`, which ends in exec or `_exit`.
    let result = unsafe { nix::unistd::fork() };
    match result {
        Ok(ForkResult::Child) => {
            reset_signals();
            // `Infallible` stands for "never returns": exec or `_exit`.
            #[allow(unreachable_code)]
            match child() {}
        }
        Ok(ForkResult::Parent { child }) => {
            signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&old), None)?;
            Ok(child)
        }
        Err(e) => {
            let _ = signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&old), None);
            Err(e.into())
        }
    }
}

/// In a new child: every disposition back to `SIG_DFL` (ignored signals
/// would survive exec; Rust's runtime ignores SIGPIPE) and an empty mask.
/// Only sigaction and sigprocmask: async-signal-safe.
fn reset_signals() {
    for sig in Signal::iterator() {
        if matches!(sig, Signal::SIGKILL | Signal::SIGSTOP) {
            continue;
        }
        // SAFETY: installing SIG_DFL runs no Rust code in a handler.
        unsafe {
            let _ = signal::signal(sig, signal::SigHandler::SigDfl);
        }
    }
    let _ = signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
}

/// Runs `work` in a forked child that does not exec (a built-in handler or
/// worker) and ends it with `_exit(work())`. Signals start at their defaults.
pub fn fork_worker(work: impl FnOnce() -> i32) -> io::Result<Pid> {
    fork_with_signals_blocked(|| {
        // A panic must not unwind into the supervisor's frames (their
        // destructors unlink the control socket and pidfile): it becomes
        // exit code 70 (EX_SOFTWARE) here.
        let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)).unwrap_or(70);
        // SAFETY: `_exit` skips atexit handlers and unwinding, which belong
        // to the supervisor, not to this child.
        unsafe { libc::_exit(code) }
    })
}

/// Opens /dev/null onto any of fds 0, 1, 2 that forkd was started without,
/// so no pipe, socket or file of forkd's later lands on a standard fd number
/// (and is then clobbered by a child's `dup2`, or written to by `eprintln!`).
/// Call first thing in `main`, before any other fd is opened.
pub fn ensure_standard_fds() -> io::Result<()> {
    use std::os::fd::IntoRawFd;
    for _ in 0..3 {
        let null = std::fs::File::options()
            .read(true)
            .write(true)
            .open("/dev/null")?;
        // open(2) returns the lowest free number: a standard one while any is closed.
        let fd = null.into_raw_fd();
        if fd > 2 {
            // SAFETY: `fd` was just opened above and is owned by nobody else.
            drop(unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) });
            break;
        }
        // Below 3: it now *is* stdin/stdout/stderr, kept open for good.
    }
    Ok(())
}

/// How a child ended, in the words an operator reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitKind {
    Code(i32),
    Signal(i32),
}

impl ExitKind {
    /// `None` for stops/continues, which are not exits.
    pub fn from_wait(status: WaitStatus) -> Option<(Pid, ExitKind)> {
        match status {
            WaitStatus::Exited(pid, code) => Some((pid, ExitKind::Code(code))),
            WaitStatus::Signaled(pid, sig, _) => Some((pid, ExitKind::Signal(sig as i32))),
            _ => None,
        }
    }

    pub fn success(self) -> bool {
        self == ExitKind::Code(0)
    }
}

impl fmt::Display for ExitKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ExitKind::Code(c) => write!(f, "exited with code {c}"),
            ExitKind::Signal(s) => {
                write!(f, "killed by {}", signal_name(s))?;
                if s == libc::SIGKILL {
                    write!(f, " (perhaps out of memory?)")?;
                }
                Ok(())
            }
        }
    }
}

/// `SIGTERM` for 15, `signal 99` for anything unknown.
pub fn signal_name(sig: i32) -> String {
    Signal::try_from(sig)
        .map(|s| s.as_str().to_string())
        .unwrap_or_else(|_| format!("signal {sig}"))
}

/// A signal as operators write it: `USR1`, `SIGUSR1`, `usr1` or `10`.
/// The one parser behind `stop_signal` and `forkctl signal`.
pub fn parse_signal(text: &str) -> Option<Signal> {
    if let Ok(n) = text.parse::<i32>() {
        return Signal::try_from(n).ok();
    }
    let upper = text.to_ascii_uppercase();
    let full = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    full.parse().ok()
}

/// Every pid that waitpid(-1, WNOHANG) hands back now, with how it ended.
/// SIGCHLD coalesces, so this loops until no exited child remains.
pub fn reap_all() -> Vec<(Pid, ExitKind)> {
    let mut reaped = Vec::new();
    loop {
        match nix::sys::wait::waitpid(None, Some(nix::sys::wait::WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(nix::errno::Errno::ECHILD) => break,
            Ok(status) => reaped.extend(ExitKind::from_wait(status)),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => break,
        }
    }
    reaped
}

/// Signals a whole process group (the child leads its own session).
/// A group that is already gone is not an error.
pub fn signal_group(pgid: Pid, sig: Signal) -> io::Result<()> {
    match signal::killpg(pgid, sig) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Makes forkd the reaper of orphaned descendants (PR_SET_CHILD_SUBREAPER),
/// so grandchildren that double-fork are reaped by the loop too.
pub fn become_subreaper() -> io::Result<()> {
    nix::sys::prctl::set_child_subreaper(true).map_err(io::Error::from)
}

/// Resolves `user`/`group` names (or numbers) to credentials, with the
/// user's supplementary groups.
pub fn resolve_credentials(
    user: Option<&str>,
    group: Option<&str>,
) -> Result<Option<Credentials>, String> {
    use nix::unistd::{Gid, Group, Uid, User};
    if user.is_none() && group.is_none() {
        return Ok(None);
    }
    let user = match user {
        None => None,
        Some(name) => Some(match name.parse::<u32>() {
            Ok(uid) => User::from_uid(Uid::from_raw(uid))
                .map_err(|e| format!("looking up uid {uid}: {e}"))?
                .ok_or_else(|| format!("no user with uid {uid}"))?,
            Err(_) => User::from_name(name)
                .map_err(|e| format!("looking up user {name:?}: {e}"))?
                .ok_or_else(|| format!("no user named {name:?}"))?,
        }),
    };
    let gid = match group {
        Some(name) => match name.parse::<u32>() {
            Ok(gid) => Gid::from_raw(gid),
            Err(_) => {
                Group::from_name(name)
                    .map_err(|e| format!("looking up group {name:?}: {e}"))?
                    .ok_or_else(|| format!("no group named {name:?}"))?
                    .gid
            }
        },
        None => user.as_ref().map(|u| u.gid).unwrap_or_else(Gid::current),
    };
    let uid = user.as_ref().map(|u| u.uid).unwrap_or_else(Uid::current);
    let groups = match &user {
        Some(u) => {
            let cname = std::ffi::CString::new(u.name.as_str())
                .map_err(|_| "user name contains a NUL byte".to_string())?;
            nix::unistd::getgrouplist(&cname, gid)
                .map_err(|e| format!("listing the groups of {:?}: {e}", u.name))?
        }
        None => vec![gid],
    };
    Ok(Some(Credentials { uid, gid, groups }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_by_name_or_number() {
        assert_eq!(parse_signal("USR1"), Some(Signal::SIGUSR1));
        assert_eq!(parse_signal("sighup"), Some(Signal::SIGHUP));
        assert_eq!(parse_signal("15"), Some(Signal::SIGTERM));
        assert_eq!(parse_signal("NOPE"), None);
        assert_eq!(parse_signal("999"), None);
    }
}
