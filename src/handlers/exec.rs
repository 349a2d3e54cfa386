//! `exec`: inetd / tcpserver style. Each connection runs `command` with the
//! socket as its stdin and stdout (stderr stays forkd's, so it reaches
//! forkd's log) and the UCSPI environment: `PROTO=TCP` with `TCPREMOTEIP`,
//! `TCPREMOTEPORT`, `TCPLOCALIP`, `TCPLOCALPORT`, or `PROTO=UNIX`.
//!
//! The argv and the inherited environment are prepared once per service;
//! per connection only the five UCSPI variables are added. Everything
//! between fork and exec is `process::ExecPlan`'s. This handler needs a
//! process per connection, so it has no `event`-mode session.
//!
//! It serves through the trait's capability for that, [`ConnectionProgram`]
//! (defined here: the handler supplies the plan, and spawning it, with or
//! without waiting, is the same for any handler that execs per connection).

use nix::unistd::Pid;

use super::{Connection, Context, Handler, HandlerError, Outcome, Peer, Session, Stream};
use crate::process::{exec::child_environment, ChildFd, ExecPlan, Leads, Prepared, ReportPipe};

/// The exec handler: the command, prepared once (resolved path, argv and
/// the environment every child starts from, as C strings).
#[derive(Debug, Clone)]
pub struct Exec {
    command: Vec<String>,
    prepared: Prepared,
    /// What each connection's program leads (decided once, at start).
    leads: Leads,
}

impl Exec {
    pub fn new(context: &Context<'_>) -> Result<Exec, HandlerError> {
        let config = context.service;
        let command = config.command.clone().unwrap_or_default();
        if command.is_empty() {
            return Err(HandlerError::Setup(format!(
                "service \"{}\": handler = \"exec\" needs a non-empty command = [...]",
                config.name
            )));
        }
        let base_env: Vec<(String, String)> = child_environment(std::iter::empty())
            .into_iter()
            .filter(|(k, _)| !UCSPI.contains(&k.as_str()))
            .collect();
        let prepared = Prepared::new(&command, &base_env)
            .map_err(|e| HandlerError::Setup(format!("service \"{}\": {e}", config.name)))?;
        // Only a forkd with no controlling terminal spares each program a
        // session of its own (see `Leads`).
        let leads = if crate::process::has_controlling_terminal() {
            Leads::Session
        } else {
            Leads::Group
        };
        Ok(Exec {
            command,
            prepared,
            leads,
        })
    }
}

/// A handler's capability to serve a connection by exec'ing a program in
/// its place ([`Handler::connection_program`]), inetd style. Only the plan
/// is the handler's; spawning it, from the supervisor or from a prefork
/// worker that waits for it, is the same for every such handler.
pub trait ConnectionProgram {
    /// The program's name, for messages.
    fn program(&self) -> &str;

    /// The plan that runs the program on `conn`.
    fn plan(&self, conn: Connection) -> Result<ExecPlan<'static>, String>;

    /// Spawns the program for `conn` without waiting for the exec (fork
    /// mode: the loop must not wait); the report says later whether it ran.
    /// A failure before exec goes to `reports` (read it with
    /// [`ReportPipe::failure`] once the child has exited with 127).
    fn spawn_reporting(
        &self,
        conn: Connection,
        reports: &ReportPipe,
        parent: Pid,
    ) -> Result<Pid, String> {
        self.plan(conn)?
            .spawn_reporting(reports, parent)
            .map_err(|e| format!("cannot run {:?} for a connection: {e}", self.program()))
    }

    /// In a prefork worker: runs the program and waits for it, so the
    /// worker serves one connection at a time like the built-in handlers.
    fn serve(&self, conn: Connection) -> Outcome {
        let spawned = self.plan(conn).and_then(|plan| {
            plan.spawn()
                .map_err(|e| format!("cannot run {:?} for a connection: {e}", self.program()))
        });
        let pid = match spawned {
            Ok(pid) => pid,
            Err(e) => {
                log::error!("{e}");
                return Outcome::Failed;
            }
        };
        pass_on_a_drain(pid);
        loop {
            match nix::sys::wait::waitpid(pid, None) {
                Ok(nix::sys::wait::WaitStatus::Exited(_, 0)) => return Outcome::Done,
                Ok(nix::sys::wait::WaitStatus::Exited(..))
                | Ok(nix::sys::wait::WaitStatus::Signaled(..)) => return Outcome::Failed,
                Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => return Outcome::Failed,
            }
        }
    }
}

/// Waits, in a prefork worker, for the program `pid` it runs to exit; a
/// SIGTERM for the worker meanwhile (a drain or stop) is passed on once to
/// the program's process group, so the program and what it started end as
/// they would in fork mode. The worker blocks SIGTERM and reads it from a
/// signalfd of its own: polling another signalfd sees it pending without
/// taking it, so the worker still drains once this connection ends.
fn pass_on_a_drain(pid: Pid) {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use nix::sys::signal::{SigSet, Signal};
    use nix::sys::signalfd::{SfdFlags, SignalFd};
    use std::os::fd::AsFd;
    let Some(exited) = crate::process::pidfd_open(pid) else {
        return;
    };
    let mut term = SigSet::empty();
    term.add(Signal::SIGTERM);
    let Ok(drain) = SignalFd::with_flags(&term, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
    else {
        return;
    };
    let mut passed = false;
    loop {
        let mut fds = [
            PollFd::new(exited.as_fd(), PollFlags::POLLIN),
            PollFd::new(drain.as_fd(), PollFlags::POLLIN),
        ];
        // Once passed on, the SIGTERM stays pending (for the worker): only
        // the exit is waited for then.
        let watched = if passed { 1 } else { 2 };
        match poll(&mut fds[..watched], PollTimeout::NONE) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return,
        }
        let ready = |fd: &PollFd| fd.revents().is_some_and(|r| !r.is_empty());
        if ready(&fds[0]) {
            return;
        }
        if watched == 2 && ready(&fds[1]) {
            // The leader is not reaped yet, so its pid still names its group.
            let _ = crate::process::signal_group(pid, Signal::SIGTERM);
            passed = true;
        }
    }
}

impl ConnectionProgram for Exec {
    fn program(&self) -> &str {
        &self.command[0]
    }

    /// `command` with the socket on fds 0 and 1 (one fd in forkd: the
    /// child copies its stdin to stdout) and the UCSPI variables, leading a
    /// process group of its own (a drain or stop signals the group: the
    /// supervisor in fork mode, the worker in prefork mode).
    fn plan(&self, conn: Connection) -> Result<ExecPlan<'static>, String> {
        let mut plan = self.prepared.plan();
        plan.leads = self.leads;
        add_ucspi(&mut plan, &conn.peer).map_err(|e| e.to_string())?;
        plan.stdin = ChildFd::Fd(conn.stream.into_owned());
        plan.stdout = ChildFd::Stdin;
        Ok(plan)
    }
}

/// Variables a client-facing program reads, set fresh for each connection.
const UCSPI: [&str; 5] = [
    "PROTO",
    "TCPREMOTEIP",
    "TCPREMOTEPORT",
    "TCPLOCALIP",
    "TCPLOCALPORT",
];

/// Adds the UCSPI variables of one connection to `plan`.
fn add_ucspi(plan: &mut ExecPlan<'_>, peer: &Peer) -> Result<(), crate::process::SpawnError> {
    match peer {
        Peer::Tcp { remote, local } => {
            plan.add_env("PROTO", "TCP")?;
            plan.add_env("TCPREMOTEIP", remote.ip())?;
            plan.add_env("TCPREMOTEPORT", remote.port())?;
            plan.add_env("TCPLOCALIP", local.ip())?;
            plan.add_env("TCPLOCALPORT", local.port())?;
        }
        Peer::Unix => plan.add_env("PROTO", "UNIX")?,
    }
    Ok(())
}

impl Stream {
    fn into_owned(self) -> std::os::fd::OwnedFd {
        match self {
            Stream::Tcp(s) => s.into(),
            Stream::Unix(s) => s.into(),
        }
    }
}

impl Handler for Exec {
    fn name(&self) -> &'static str {
        "exec"
    }

    fn connection_program(&self) -> Option<&dyn ConnectionProgram> {
        Some(self)
    }

    fn session(&self) -> Option<Box<dyn Session>> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn added(peer: &Peer) -> Vec<String> {
        let prepared = Prepared::new(&["/bin/true".to_string()], &[]).unwrap();
        let mut plan = prepared.plan();
        add_ucspi(&mut plan, peer).unwrap();
        plan.added_env()
            .map(|v| v.to_str().unwrap().to_string())
            .collect()
    }

    #[test]
    fn ucspi_environment_names_both_ends() {
        let peer = Peer::Tcp {
            remote: "127.0.0.1:5000".parse().unwrap(),
            local: "[::1]:7000".parse().unwrap(),
        };
        let env = added(&peer);
        assert!(env.contains(&"PROTO=TCP".into()));
        assert!(env.contains(&"TCPREMOTEIP=127.0.0.1".into()));
        assert!(env.contains(&"TCPREMOTEPORT=5000".into()));
        assert!(env.contains(&"TCPLOCALIP=::1".into()));
        assert!(env.contains(&"TCPLOCALPORT=7000".into()));
        assert_eq!(added(&Peer::Unix), vec!["PROTO=UNIX".to_string()]);
    }
}
