//! Who is at the other end of a control connection: `SO_PEERCRED`'s uid,
//! gid and pid, and the supplementary groups as they were at connect
//! (`SO_PEERGROUPS`, or /proc on kernels without it), from which
//! [`super::server`] decides the peer's role.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use mio::net::UnixStream;

/// Who is at the other end of a connection (from `SO_PEERCRED`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    pub uid: u32,
    pub gid: u32,
    pub pid: i32,
}

/// The peer's supplementary groups as they were when it connected, like
/// its SO_PEERCRED: /proc/PID/status would answer for whatever holds that
/// pid now, or for another thread of the peer. Kernels before 4.13 have no
/// SO_PEERGROUPS (ENOPROTOOPT) and get /proc as the fallback.
pub fn peer_groups(stream: &UnixStream, pid: i32) -> Vec<u32> {
    match so_peergroups(stream.as_fd()) {
        Ok(groups) => groups,
        Err(e) if e.raw_os_error() == Some(libc::ENOPROTOOPT) => proc_supplementary_groups(pid),
        Err(e) => {
            log::warn!("control socket: cannot read the peer's groups (pid {pid}): {e}");
            Vec::new()
        }
    }
}

/// getsockopt(SO_PEERGROUPS): socket(7). When the buffer is too small the
/// kernel answers ERANGE with the size it needs in `len`.
fn so_peergroups(fd: BorrowedFd<'_>) -> io::Result<Vec<u32>> {
    const GID: usize = std::mem::size_of::<libc::gid_t>();
    let mut groups: Vec<libc::gid_t> = vec![0; 32];
    loop {
        let mut len = (groups.len() * GID) as libc::socklen_t;
        // SAFETY: `fd` is a live socket for the call; the kernel writes at
        // most `len` bytes into `groups`, which owns exactly that many, and
        // stores the length it wrote (or needs) in `len`.
        let rc = unsafe {
            libc::getsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &mut len,
            )
        };
        let len = len as usize;
        if rc == 0 {
            groups.truncate(len / GID);
            return Ok(groups);
        }
        let error = io::Error::last_os_error();
        if error.raw_os_error() == Some(libc::ERANGE) && len > groups.len() * GID {
            groups.resize(len.div_ceil(GID), 0);
            continue;
        }
        return Err(error);
    }
}

/// The `Groups:` line of /proc/PID/status (supplementary groups).
fn proc_supplementary_groups(pid: i32) -> Vec<u32> {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return Vec::new();
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("Groups:"))
        .map(|g| {
            g.split_whitespace()
                .filter_map(|n| n.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_groups_are_the_connecting_process_groups() {
        let (ours, _theirs) = UnixStream::pair().unwrap();
        let mut mine: Vec<u32> = nix::unistd::getgroups()
            .unwrap()
            .into_iter()
            .map(|g| g.as_raw())
            .collect();
        let mut seen = so_peergroups(ours.as_fd()).unwrap();
        mine.sort_unstable();
        seen.sort_unstable();
        assert_eq!(seen, mine);
    }
}
