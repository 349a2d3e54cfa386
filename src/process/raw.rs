//! The system calls on a fork-mode connection child's path, each made
//! through `libc::syscall`: a fresh child faults in every page of code it
//! runs, and glibc's wrappers (read, send, setsockopt, prctl, sigaction,
//! sigprocmask, _exit) each sit on pages of their own, where this is one
//! function (see the module doc of [`crate::process`]). Errors come back as
//! `io::Error` from `errno`, as from the wrappers. Linux only, as forkd is,
//! on its 64-bit ports (x86-64, arm64: `timeval` and `sigaction` as laid
//! out here).

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::time::Duration;

/// The result of a syscall that returns -1 and sets errno on failure.
#[link_section = ".text.hot.forkd_child"]
fn check(r: libc::c_long) -> io::Result<libc::c_long> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// One read(2) into `buf`; returns the part it filled.
#[link_section = ".text.hot.forkd_child"]
pub fn read<'b>(fd: BorrowedFd<'_>, buf: &'b mut [MaybeUninit<u8>]) -> io::Result<&'b mut [u8]> {
    let fd = fd.as_raw_fd();
    // SAFETY: `buf` is writable for its length and read(2) writes at most
    // that many bytes into it; the fd is open (borrowed).
    let n = check(unsafe { libc::syscall(libc::SYS_read, fd, buf.as_mut_ptr(), buf.len()) })?;
    // SAFETY: read(2) initialised the first `n` bytes (0 <= n <= buf.len()).
    Ok(unsafe { std::slice::from_raw_parts_mut(buf.as_mut_ptr().cast::<u8>(), n as usize) })
}

/// Writes all of `buf` to the socket `fd` (MSG_NOSIGNAL: a peer that hung
/// up is EPIPE, never SIGPIPE), retrying after EINTR and short writes.
#[link_section = ".text.hot.forkd_child"]
pub fn send_all(fd: BorrowedFd<'_>, mut buf: &[u8]) -> io::Result<()> {
    let fd = fd.as_raw_fd();
    while !buf.is_empty() {
        // SAFETY: `buf` is readable for its length; a null address with
        // length 0 is send(2).
        let r = unsafe {
            libc::syscall(
                libc::SYS_sendto,
                fd,
                buf.as_ptr(),
                buf.len(),
                libc::MSG_NOSIGNAL,
                std::ptr::null::<libc::sockaddr>(),
                0usize,
            )
        };
        match check(r) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => buf = &buf[n as usize..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// `SO_RCVTIMEO` or `SO_SNDTIMEO` on socket `fd`; zero is no limit (the
/// kernel's meaning of a zero timeval). A limit under a microsecond is one
/// microsecond, so it still limits.
#[link_section = ".text.hot.forkd_child"]
pub fn set_socket_timeout(
    fd: BorrowedFd<'_>,
    option: libc::c_int,
    limit: Duration,
) -> io::Result<()> {
    let secs = libc::time_t::try_from(limit.as_secs()).unwrap_or(libc::time_t::MAX);
    let mut micros = libc::suseconds_t::from(limit.subsec_micros());
    if secs == 0 && micros == 0 && !limit.is_zero() {
        micros = 1;
    }
    let tv = libc::timeval {
        tv_sec: secs,
        tv_usec: micros,
    };
    // SAFETY: `tv` is a timeval on this stack and its size is passed.
    check(unsafe {
        libc::syscall(
            libc::SYS_setsockopt,
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            option,
            &tv as *const libc::timeval,
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    })
    .map(drop)
}

/// PR_SET_PDEATHSIG with SIGKILL, then whether the parent is still
/// `parent` (it may have died before the prctl: trap 6).
#[link_section = ".text.hot.forkd_child"]
pub fn die_with_parent(parent: libc::pid_t) -> bool {
    // SAFETY: PR_SET_PDEATHSIG takes a signal number (passed as the
    // kernel's unsigned long); getppid takes nothing.
    unsafe {
        let (option, signal) = (
            libc::PR_SET_PDEATHSIG as libc::c_ulong,
            libc::SIGKILL as libc::c_ulong,
        );
        libc::syscall(libc::SYS_prctl, option, signal) == 0
            && libc::syscall(libc::SYS_getppid) == libc::c_long::from(parent)
    }
}

/// The kernel's `struct sigaction` for `rt_sigaction(2)` (x86-64, arm64 and
/// most other Linux ports: handler first).
#[repr(C)]
struct KernelSigaction {
    handler: libc::sighandler_t,
    flags: libc::c_ulong,
    restorer: usize,
    mask: u64,
}

impl KernelSigaction {
    /// `SIG_DFL` with no flags: needs no restorer, which is all glibc's
    /// wrapper would add.
    const DEFAULT: KernelSigaction = KernelSigaction {
        handler: libc::SIG_DFL,
        flags: 0,
        restorer: 0,
        mask: 0,
    };
}

/// The kernel's sigset size, for rt_sigaction and rt_sigprocmask.
const SIGSET_SIZE: usize = 8;

/// `sig`'s disposition now (a handler's address, `SIG_DFL` or `SIG_IGN`),
/// asked of the kernel: glibc's wrapper refuses the numbers it reserves.
pub fn disposition(sig: libc::c_int) -> io::Result<libc::sighandler_t> {
    let mut old = KernelSigaction::DEFAULT;
    // SAFETY: a null new action only queries; `old` is a kernel sigaction
    // on this stack.
    check(unsafe {
        libc::syscall(
            libc::SYS_rt_sigaction,
            sig,
            std::ptr::null::<KernelSigaction>(),
            &mut old as *mut KernelSigaction,
            SIGSET_SIZE,
        )
    })?;
    Ok(old.handler)
}

/// `sig` back to `SIG_DFL`, the numbers glibc reserves for itself (which
/// its wrapper refuses) like any other.
#[link_section = ".text.hot.forkd_child"]
pub fn default_disposition(sig: libc::c_int) {
    let dfl = KernelSigaction::DEFAULT;
    // SAFETY: installing SIG_DFL runs no handler; `dfl` lives on this stack.
    unsafe {
        libc::syscall(
            libc::SYS_rt_sigaction,
            sig,
            &dfl as *const KernelSigaction,
            std::ptr::null_mut::<KernelSigaction>(),
            SIGSET_SIZE,
        );
    }
}

/// An empty signal mask.
#[link_section = ".text.hot.forkd_child"]
pub fn unblock_all_signals() {
    let empty: u64 = 0;
    // SAFETY: sets the mask from a kernel sigset on this stack.
    unsafe {
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            &empty as *const u64,
            std::ptr::null_mut::<u64>(),
            SIGSET_SIZE,
        );
    }
}

/// exit_group(2): ends the child at once, without atexit handlers or
/// unwinding (they belong to the supervisor), as `_exit` does.
#[link_section = ".text.hot.forkd_child"]
pub fn exit(code: i32) -> ! {
    // SAFETY: exit_group does not return.
    unsafe {
        libc::syscall(libc::SYS_exit_group, code);
        std::hint::unreachable_unchecked()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;

    #[test]
    fn read_and_send_all_move_the_bytes_and_report_errors() {
        let (a, mut b) = UnixStream::pair().unwrap();
        send_all(a.as_fd(), b"hello").unwrap();
        let mut got = [0u8; 5];
        b.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hello");
        b.write_all(b"back").unwrap();
        let mut buf = [MaybeUninit::uninit(); 16];
        assert_eq!(read(a.as_fd(), &mut buf).unwrap(), b"back");
        drop(b);
        assert_eq!(read(a.as_fd(), &mut buf).unwrap(), b"");
        let e = send_all(a.as_fd(), b"x").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EPIPE), "EPIPE, not SIGPIPE");
        let write_only = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/null")
            .unwrap();
        assert_eq!(
            read(write_only.as_fd(), &mut buf)
                .unwrap_err()
                .raw_os_error(),
            Some(libc::EBADF)
        );
    }

    #[test]
    fn socket_timeouts_are_set_as_the_socket_reports_them() {
        let (a, _b) = UnixStream::pair().unwrap();
        let fd = a.as_fd();
        set_socket_timeout(fd, libc::SO_RCVTIMEO, Duration::from_millis(1500)).unwrap();
        assert_eq!(a.read_timeout().unwrap(), Some(Duration::from_millis(1500)));
        set_socket_timeout(fd, libc::SO_SNDTIMEO, Duration::from_nanos(10)).unwrap();
        let tiny = a.write_timeout().unwrap();
        assert!(
            tiny.is_some_and(|t| t > Duration::ZERO),
            "10 ns still limits (the kernel rounds it up to a tick): {tiny:?}"
        );
        set_socket_timeout(fd, libc::SO_RCVTIMEO, Duration::ZERO).unwrap();
        assert_eq!(a.read_timeout().unwrap(), None, "zero is no limit");
        let file = std::fs::File::open("/dev/null").unwrap();
        let e = set_socket_timeout(file.as_fd(), libc::SO_RCVTIMEO, Duration::ZERO).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOTSOCK));
    }
}
