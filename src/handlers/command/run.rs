//! Runs one allowed command and collects what it prints, bounded in time
//! and in size.
//!
//! The command gets /dev/null as stdin and a pipe each for stdout and
//! stderr; forkd polls both read ends and a pidfd of the command (pidfd_open(2))
//! until both pipes reach EOF and the command has exited, or the deadline
//! passes, or the output reaches its limit. Then its process group (the
//! command leads its own session, `ExecPlan::leads`) is sent SIGKILL
//! before the leader is reaped: the leader is a zombie at worst, so its
//! pid, the group's id, cannot have been reused, and nothing the command
//! left behind outlives the request. Runs in the connection's worker
//! process, never in the supervisor; never logs.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitStatus};

use crate::process::{pidfd_open, signal_group, ChildFd, ExecPlan, Leads, SpawnError};

/// How a command's run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum End {
    /// It exited (with this code) or was killed by a signal of its own.
    Finished,
    /// The deadline passed first; its group was killed.
    TimedOut,
    /// Its output reached the limit; the rest was not read and its group
    /// was killed.
    Cut,
}

/// What a command printed, and how it ended.
#[derive(Debug)]
pub(super) struct Captured {
    pub(super) stdout: Vec<u8>,
    pub(super) stderr: Vec<u8>,
    pub(super) end: End,
}

/// The read size per pipe per wake-up.
const READ_CHUNK: usize = 16 << 10;

/// Spawns `plan` with its output captured, and waits as said above.
pub(super) fn run(
    mut plan: ExecPlan<'_>,
    timeout: Duration,
    max_output: usize,
) -> Result<Captured, SpawnError> {
    let (stdout, stdout_w) = output_pipe()?;
    let (stderr, stderr_w) = output_pipe()?;
    let null = File::open("/dev/null").map_err(SpawnError::Pipe)?;
    plan.stdin = ChildFd::Fd(null.into());
    plan.stdout = ChildFd::Fd(stdout_w);
    plan.stderr = ChildFd::Fd(stderr_w);
    plan.leads = Leads::Session;
    let pid = plan.spawn()?;
    let exited = pidfd_open(pid);
    let mut captured = Captured {
        stdout: Vec::new(),
        stderr: Vec::new(),
        end: End::Finished,
    };
    let deadline = Instant::now() + timeout;
    let mut pipes = [Some(stdout), Some(stderr)];
    // Without a pidfd (a kernel before 5.3) the pipes' EOF is the end.
    let mut running = exited.is_some();
    while pipes.iter().any(Option::is_some) || running {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            captured.end = End::TimedOut;
            break;
        }
        let mut fds: Vec<PollFd<'_>> = pipes
            .iter()
            .flatten()
            .chain(exited.as_ref().filter(|_| running))
            .map(|fd| PollFd::new(fd.as_fd(), PollFlags::POLLIN))
            .collect();
        let wait = PollTimeout::try_from(left.as_millis() + 1).unwrap_or(PollTimeout::MAX);
        match nix::poll::poll(&mut fds, wait) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(SpawnError::Pipe(e.into())),
        }
        let ready: Vec<bool> = fds
            .iter()
            .map(|fd| fd.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        drop(fds);
        let mut ready = ready.into_iter();
        for (i, slot) in pipes.iter_mut().enumerate() {
            let Some(pipe) = slot else { continue };
            if !ready.next().unwrap_or(false) {
                continue;
            }
            let (mine, other) = if i == 0 {
                (&mut captured.stdout, captured.stderr.len())
            } else {
                (&mut captured.stderr, captured.stdout.len())
            };
            match read_some(pipe, mine, max_output.saturating_sub(other)) {
                Ok(Read::More) => {}
                Ok(Read::Eof) | Err(_) => *slot = None,
                Ok(Read::Full) => captured.end = End::Cut,
            }
        }
        if captured.end == End::Cut {
            break;
        }
        if running && ready.next().unwrap_or(false) {
            running = false;
        }
    }
    // The leader is not reaped yet, so its pid still names its group.
    let _ = signal_group(pid, Signal::SIGKILL);
    loop {
        match waitpid(pid, None) {
            Ok(WaitStatus::Exited(..) | WaitStatus::Signaled(..))
            | Err(nix::errno::Errno::ECHILD) => break,
            Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(SpawnError::Pipe(e.into())),
        }
    }
    Ok(captured)
}

/// What one read of a pipe found.
enum Read {
    More,
    Eof,
    /// The output limit is reached: this run reads no more.
    Full,
}

/// Appends what `pipe` holds to `into`, at most `room` bytes in all.
fn read_some(pipe: &OwnedFd, into: &mut Vec<u8>, room: usize) -> io::Result<Read> {
    let mut buf = [0u8; READ_CHUNK];
    let n = loop {
        match nix::unistd::read(pipe, &mut buf) {
            Ok(n) => break n,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(nix::errno::Errno::EAGAIN) => return Ok(Read::More),
            Err(e) => return Err(e.into()),
        }
    };
    if n == 0 {
        return Ok(Read::Eof);
    }
    let room = room.saturating_sub(into.len());
    into.extend_from_slice(&buf[..n.min(room)]);
    Ok(if n > room { Read::Full } else { Read::More })
}

/// A pipe whose read end (first) is non-blocking; both close on exec (the
/// child gets the write end by dup2, which clears the flag there).
fn output_pipe() -> Result<(OwnedFd, OwnedFd), SpawnError> {
    let (read, write) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| SpawnError::Pipe(e.into()))?;
    fcntl(&read, FcntlArg::F_SETFL(OFlag::O_NONBLOCK)).map_err(|e| SpawnError::Pipe(e.into()))?;
    Ok((read, write))
}
