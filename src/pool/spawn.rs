//! Starting a pool worker: its channel's names in the ledger first, then a
//! forked built-in ([`super::builtin`]) or an exec'd command that finds its
//! channel on stdin/stdout or in its environment.

use nix::unistd::Pid;

use super::builtin;
use crate::config::Transport;
use crate::ipc::{self, names, ChannelId};

/// Writes a channel's queue or segment names in the ledger before they exist.
pub(super) fn record_names(
    transport: Transport,
    id: ChannelId<'_>,
    ledger: Option<&mut names::Ledger>,
) -> std::io::Result<()> {
    let Some(ledger) = ledger else {
        return Ok(());
    };
    match transport {
        Transport::Pipe => Ok(()),
        Transport::Mqueue => ipc::mqueue::names(id)
            .iter()
            .try_for_each(|n| ledger.record(names::Kind::Mqueue, n)),
        Transport::Shm => ipc::shm::names(id)
            .iter()
            .try_for_each(|n| ledger.record(names::Kind::Shm, n)),
    }
}

/// Forks a built-in worker: it keeps only its channel and answers jobs
/// until the channel closes.
pub(super) fn spawn_builtin(name: &str, mut child: ipc::Child, parent: Pid) -> Result<Pid, String> {
    let job = builtin::lookup(name).ok_or_else(|| format!("no built-in worker \"{name}\""))?;
    let pid = crate::process::fork_worker(move || {
        let mut keep = child.fds();
        if !crate::server::child_setup(parent, &mut keep, false) {
            return 1;
        }
        match crate::worker::serve_on(&mut child, |payload| Ok(job(payload))) {
            Ok(()) => 0,
            Err(_) => 1,
        }
    })
    .map_err(|e| format!("fork failed: {e}"))?;
    Ok(pid)
}

/// Execs a worker command with its channel described in its environment
/// (over the pipe transport: on its stdin and stdout; over the others
/// stdin is /dev/null, so a worker never reads forkd's terminal). A
/// failure names the command.
pub(super) fn spawn_command(
    command: &crate::process::exec::Prepared,
    child: &ipc::Child,
) -> Result<Pid, String> {
    use std::os::fd::BorrowedFd;
    let cannot = |e: &dyn std::fmt::Display| format!("cannot run {:?}: {e}", command.program());
    let setup = child.exec_setup();
    let mut plan = command.plan();
    for (name, value) in &setup.env {
        plan.add_env(name, value).map_err(|e| cannot(&e))?;
    }
    // SAFETY: the fds belong to `child`, which outlives the spawn.
    let borrow = |fd: i32| unsafe { BorrowedFd::borrow_raw(fd) };
    plan.stdin = match setup.stdin {
        Some(fd) => crate::process::exec::ChildFd::Borrowed(borrow(fd)),
        None => crate::process::exec::ChildFd::Fd(
            std::fs::File::open("/dev/null")
                .map_err(|e| cannot(&format_args!("/dev/null: {e}")))?
                .into(),
        ),
    };
    if let Some(fd) = setup.stdout {
        plan.stdout = crate::process::exec::ChildFd::Borrowed(borrow(fd));
    }
    plan.keep = setup.keep;
    plan.spawn().map_err(|e| cannot(&e))
}
