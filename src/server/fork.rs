//! `fork` mode (socketserver's ForkingTCPServer): the supervisor's loop
//! accepts, forks one child per connection, and closes its own copy of the
//! connection right after the fork (trap 15). The child runs the handler and
//! `_exit`s with the connection's [`Outcome`] as its code; a handler that
//! serves by exec'ing a program (`Handler::connection_program`: exec) has
//! it spawned straight from the supervisor with `process::ExecPlan`, with
//! no intermediate process. At `max_connections` live children the loop stops
//! accepting and the kernel's backlog holds the rest; it resumes when a
//! child is reaped. Nothing is logged per connection on the hot path.

use std::os::fd::AsFd;
use std::time::Instant;

use nix::unistd::Pid;

use super::child::KeepList;
use super::listener::Accepted;
use super::service::{unix_now, LiveConnection, Service, ServiceState};
use super::Role;
use crate::handlers::{Connection, Handler, Limits, Outcome};
use crate::process::ExitKind;

/// Accepts per readiness before returning to the loop (fairness with other
/// sources; the listener is edge-triggered, so the caller re-runs us while
/// this returns true).
const ACCEPT_BATCH: usize = 128;

impl Service {
    /// Accepts what is pending on stream listener `index` and forks a child
    /// for each connection. Returns true if it stopped at the batch bound
    /// with connections possibly still pending (call again).
    pub fn accept_ready(
        &mut self,
        index: usize,
        now: Instant,
        spawned: &mut dyn FnMut(Pid, Role),
    ) -> bool {
        if self.state != ServiceState::Running {
            return false;
        }
        for _ in 0..ACCEPT_BATCH {
            if self.conns.len() >= self.config.max_connections as usize {
                self.paused = true;
                return false;
            }
            let Some(listener) = self.listeners.get(index) else {
                return false;
            };
            let conn = match listener.accept(&mut self.reserve) {
                Accepted::Conn(conn) => conn,
                Accepted::WouldBlock => return false,
                Accepted::Retry => continue,
                Accepted::Shed => {
                    self.counts.shed += 1;
                    if let Some(line) = self.shed.note(now, &self.config.name) {
                        log::error!("{line}");
                    }
                    continue;
                }
                Accepted::Error(e) => {
                    log::error!(
                        "service \"{}\": accept on {} failed: {e}",
                        self.config.name,
                        listener.bound()
                    );
                    return false;
                }
            };
            let peer = conn.peer;
            if !self.per_ip.admit(&peer, self.parent) {
                self.counts.refused += 1;
                if let Some(line) = self.refusals.note(now, &self.config.name) {
                    log::warn!("{line}");
                }
                continue; // dropping `conn` closes it: the refusal
            }
            self.counts.served += 1;
            match self.fork_connection(conn) {
                Ok((pid, exec)) => {
                    self.conns.insert(
                        pid,
                        LiveConnection {
                            peer,
                            exec,
                            started: unix_now(),
                        },
                    );
                    spawned(pid, Role::Connection);
                }
                Err(e) => {
                    self.per_ip.release(&peer, self.parent);
                    self.counts.errors += 1;
                    if let Some(line) = self.failures.note(now, &self.config.name) {
                        log::error!("{line}: {e}");
                    }
                }
            }
        }
        true
    }

    /// The child for one connection; `conn` is closed in the parent when
    /// this returns (left in this frame, or moved into the exec plan, and dropped).
    fn fork_connection(&self, conn: Connection) -> Result<(Pid, bool), String> {
        if let (Some(program), Some(reports)) = (self.handler.connection_program(), &self.reports) {
            return program
                .spawn_reporting(conn, reports, self.parent)
                .map(|pid| (pid, true));
        }
        let handler = &*self.handler;
        let limits = Limits::of(&self.config);
        let parent = self.parent;
        // Listed here, before the fork: the child only reads the list.
        let mut keep = KeepList::new();
        keep.push(conn.stream.as_fd());
        handler.keep_open(&mut |fd| keep.push(fd));
        // The child takes the connection from its copy of this frame. A
        // closure that moved it and the rest in would be copied by
        // `memmove`: one more libc page for each child to fault in.
        let mut conn = Some(conn);
        crate::process::fork_worker(|| {
            serve_child(handler, conn.take(), &limits, parent, &mut keep)
        })
        .map(|pid| (pid, false))
        .map_err(|e| format!("fork failed while serving a connection: {e}"))
    }

    /// Whether `pid` is one of this service's connection children. They are
    /// recorded only here, not in the supervisor's pid → owner table: that
    /// one lives in memory each fork shares with the child, and writing it
    /// after every fork cost copy-on-write faults (`process::pid_table`).
    pub fn owns_connection(&self, pid: Pid) -> bool {
        self.conns.contains(pid)
    }

    /// Fork-mode connection children still alive.
    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    /// A connection child was reaped: free its place and count its outcome.
    pub(super) fn connection_exited(&mut self, pid: Pid, exit: ExitKind, now: Instant) {
        let Some(conn) = self.conns.remove(pid) else {
            return;
        };
        self.per_ip.release(&conn.peer, self.parent);
        // Only a child that failed before exec reports, and it then exits 127.
        let exec_failed = match (&mut self.reports, exit) {
            (Some(reports), ExitKind::Code(127)) if conn.exec => reports.failure(pid),
            _ => None,
        };
        if let Some(e) = exec_failed {
            self.counts.errors += 1;
            if let Some(line) = self.failures.note(now, &self.config.name) {
                let program = self
                    .handler
                    .connection_program()
                    .map_or("?", |x| x.program());
                log::error!("{line}: cannot run {program:?}: {e}");
            }
            return;
        }
        let group = self.reports.is_some();
        let outcome = match exit {
            ExitKind::Code(code) if !group => Outcome::from_exit_code(code),
            ExitKind::Code(0) => Outcome::Done,
            // A drain that ran out of time ends connections by signal.
            ExitKind::Signal(_) if self.state != ServiceState::Running => Outcome::Done,
            _ => Outcome::Failed,
        };
        let name = &self.config.name;
        match outcome {
            Outcome::Done => {}
            Outcome::TimedOut => {
                self.counts.timeouts += 1;
                if let Some(line) = self.timeouts.note(now, name) {
                    log::info!("{line}");
                }
            }
            Outcome::Failed => {
                self.counts.errors += 1;
                if let Some(line) = self.failures.note(now, name) {
                    log::warn!("{line} (pid {pid} {exit})");
                }
            }
        }
    }
}

/// What a connection child runs: the child set-up, then the handler; the
/// result is its exit code. On the fork-mode child's few pages of code
/// (see `crate::process`).
#[link_section = ".text.hot.forkd_child"]
fn serve_child(
    handler: &dyn Handler,
    conn: Option<Connection>,
    limits: &Limits,
    parent: Pid,
    keep: &mut KeepList,
) -> i32 {
    let (Some(conn), Some(keep)) = (conn, keep.as_mut_slice()) else {
        return 1;
    };
    if !super::child::setup(parent, keep, false) {
        return 1;
    }
    handler.serve(conn, limits).exit_code()
}
