//! What every process forked for a service does first, in the child: die
//! with forkd (PR_SET_PDEATHSIG, then the getppid re-check, trap 6), keep
//! SIGTERM for itself (blocked, so a drain lets the current connection
//! finish), and close every inherited fd it does not need (the supervisor's
//! epoll, signal pipe, other listeners and connections), so a listener
//! closed by the supervisor is really closed. What it keeps is its
//! connection or listeners and what its handler asked for
//! (`Handler::keep_open`); [`KeepList`] holds a fork-mode child's list
//! without allocating.
//!
//! Runs in a forked, single-threaded child that never returns into the
//! loop, so allocation is fine here; it never execs (that is
//! `process::ExecPlan`).

use std::os::fd::{AsRawFd, BorrowedFd, RawFd};

use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::unistd::Pid;

/// Prepares a service child. `keep` are the fds it goes on using (0, 1
/// and 2 are always kept). Returns false if forkd is already gone.
#[link_section = ".text.hot.forkd_child"]
pub fn setup(parent: Pid, keep: &mut [RawFd], block_term: bool) -> bool {
    if !crate::process::raw::die_with_parent(parent.as_raw()) {
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

/// The fds a fork-mode child keeps: its connection and what its handler
/// asks for ([`crate::handlers::Handler::keep_open`]). A fixed array, so
/// the child allocates nothing to build it.
#[derive(Debug)]
pub struct KeepList {
    fds: [RawFd; 1 + crate::handlers::MAX_KEPT_FDS],
    len: usize,
    overflow: bool,
}

impl KeepList {
    pub fn new() -> KeepList {
        KeepList {
            fds: [-1; 1 + crate::handlers::MAX_KEPT_FDS],
            len: 0,
            overflow: false,
        }
    }

    pub fn push(&mut self, fd: BorrowedFd<'_>) {
        match self.fds.get_mut(self.len) {
            Some(slot) => {
                *slot = fd.as_raw_fd();
                self.len += 1;
            }
            None => self.overflow = true,
        }
    }

    /// The list for [`setup`]; `None` if more were pushed than it holds
    /// (a handler over its [`crate::handlers::MAX_KEPT_FDS`]).
    #[link_section = ".text.hot.forkd_child"]
    pub fn as_mut_slice(&mut self) -> Option<&mut [RawFd]> {
        (!self.overflow).then_some(&mut self.fds[..self.len])
    }
}

/// Closes every fd from 3 up except `keep`, with one close_range(2) per gap.
#[link_section = ".text.hot.forkd_child"]
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

#[link_section = ".text.hot.forkd_child"]
fn close_range(first: u32, last: u32) {
    // SAFETY: close_range only closes descriptors; this child owns its fd
    // table, and the Rust objects holding the closed fds (the supervisor's)
    // are never used or dropped here, since the child ends in `_exit`.
    unsafe {
        libc::syscall(libc::SYS_close_range, first, last, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn the_keep_list_holds_the_connection_and_the_handlers_fds_and_refuses_more() {
        let files: Vec<std::fs::File> = (0..=crate::handlers::MAX_KEPT_FDS)
            .map(|_| std::fs::File::open("/dev/null").unwrap())
            .collect();
        let mut keep = KeepList::new();
        for f in &files {
            keep.push(f.as_fd());
        }
        let raw: Vec<RawFd> = files.iter().map(|f| f.as_raw_fd()).collect();
        assert_eq!(keep.as_mut_slice().unwrap(), &raw[..]);
        keep.push(files[0].as_fd());
        assert!(
            keep.as_mut_slice().is_none(),
            "one over: the child gives up"
        );
    }
}
