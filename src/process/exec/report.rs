//! How a child that failed before exec says why: a 12-byte report of its
//! pid, the failed step and the errno, on a close-on-exec pipe (one per
//! spawn, or one shared by many unconfirmed spawns).

use std::io;
use std::os::fd::OwnedFd;

use nix::unistd::Pid;

use super::{SpawnError, Step};

/// A failed child's report: its pid, the step that failed, and the errno.
/// 12 bytes, below PIPE_BUF, so reports from many children never interleave.
pub(super) const REPORT_LEN: usize = 12;

pub(super) fn decode_report(report: &[u8; REPORT_LEN]) -> (libc::pid_t, SpawnError) {
    let pid = i32::from_ne_bytes(report[0..4].try_into().expect("4 bytes"));
    let step = u32::from_ne_bytes(report[4..8].try_into().expect("4 bytes"));
    let errno = i32::from_ne_bytes(report[8..12].try_into().expect("4 bytes"));
    (
        pid,
        SpawnError::Child {
            step: Step::from_report(step),
            source: io::Error::from_raw_os_error(errno),
        },
    )
}

/// The read end of a spawn's close-on-exec report pipe: EOF means the exec
/// happened; a report is the failed step and its errno.
#[derive(Debug)]
pub struct ExecReport(pub(super) OwnedFd);

impl ExecReport {
    /// Blocks until the child has exec'd or failed; `None` if it exec'd.
    pub fn wait(self) -> Option<SpawnError> {
        let mut report = [0u8; REPORT_LEN];
        let mut got = 0;
        while got < report.len() {
            match nix::unistd::read(&self.0, &mut report[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Some(SpawnError::Report(e.into())),
            }
        }
        if got < REPORT_LEN {
            return None;
        }
        Some(decode_report(&report).1)
    }
}

/// One close-on-exec, non-blocking pipe that many unconfirmed spawns write
/// their pre-exec failure to (see [`ExecPlan::spawn_reporting`]). A child
/// writes its report before `_exit(127)`, so by the time the parent reaps
/// it with code 127 the report is in the pipe. If the pipe is ever full
/// (thousands of unread failures) the report is dropped and the exit reads
/// as the program's own 127.
#[derive(Debug)]
pub struct ReportPipe {
    read: OwnedFd,
    pub(super) write: OwnedFd,
    /// Reports read from the pipe for children not reaped yet, by pid.
    pending: std::collections::HashMap<libc::pid_t, SpawnError>,
}

impl ReportPipe {
    pub fn new() -> io::Result<ReportPipe> {
        let (read, write) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK)?;
        Ok(ReportPipe {
            read,
            write,
            pending: std::collections::HashMap::new(),
        })
    }

    /// The failure `pid` reported before exec, if any. Call once `pid` has
    /// been reaped (only worth calling for exit code 127).
    pub fn failure(&mut self, pid: Pid) -> Option<SpawnError> {
        let mut buf = [0u8; REPORT_LEN * 64];
        loop {
            match nix::unistd::read(&self.read, &mut buf) {
                Ok(n) if n > 0 => {
                    // Writes of REPORT_LEN bytes are atomic, so reads
                    // return whole reports.
                    for chunk in buf[..n].chunks_exact(REPORT_LEN) {
                        let (pid, error) = decode_report(chunk.try_into().expect("12 bytes"));
                        self.pending.insert(pid, error);
                    }
                    if n < buf.len() {
                        break;
                    }
                }
                Err(nix::errno::Errno::EINTR) => continue,
                _ => break,
            }
        }
        self.pending.remove(&pid.as_raw())
    }
}
