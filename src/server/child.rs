//! What every process forked for a service does first, in the child: die
//! with forkd (PR_SET_PDEATHSIG, then the getppid re-check, trap 6), keep
//! SIGTERM for itself (blocked, so a drain lets the current connection
//! finish), and close every inherited fd it does not need (the supervisor's
//! epoll, signal pipe, other listeners and connections), so a listener
//! closed by the supervisor is really closed.
//!
//! Runs in a forked, single-threaded child that never returns into the
//! loop, so allocation is fine here; it never execs (that is
//! `process::ExecPlan`).

use std::os::fd::RawFd;

use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::unistd::Pid;

/// Prepares a service child. `keep` are the fds it goes on using (0, 1
/// and 2 are always kept). Returns false if forkd is already gone.
pub fn setup(parent: Pid, keep: &mut [RawFd], block_term: bool) -> bool {
    if nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).is_err() || nix::unistd::getppid() != parent
    {
        return false;
    }
    if block_term {
        let mut set = SigSet::empty();
        set.add(Signal::SIGTERM);
        let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), None);
    }
    close_other_fds(keep);
    true
}

/// Closes every fd from 3 up except `keep`, with one close_range(2) per gap.
pub fn close_other_fds(keep: &mut [RawFd]) {
    keep.sort_unstable();
    let mut next: u32 = 3;
    for &fd in keep.iter() {
        let Ok(fd) = u32::try_from(fd) else { continue };
        if fd < next {
            continue;
        }
        if fd > next {
            close_range(next, fd - 1);
        }
        next = fd + 1;
    }
    close_range(next, u32::MAX);
}

fn close_range(first: u32, last: u32) {
    // SAFETY: close_range only closes descriptors; this child owns its fd
    // table, and the Rust objects holding the closed fds (the supervisor's)
    // are never used or dropped here, since the child ends in `_exit`.
    unsafe {
        libc::syscall(libc::SYS_close_range, first, last, 0);
    }
}
