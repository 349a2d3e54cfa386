//! One worker slot of a pool: its process's life ([`lifecycle::Slot`]),
//! its channel, the jobs in flight on it in order, and the two moves that
//! change them outside a reap: handing its new jobs to the channel
//! ([`send_unsent`]) and killing it ([`kill`]).

use std::collections::VecDeque;
use std::rc::Rc;
use std::time::Instant;

use mio::Token;
use nix::sys::signal::Signal;
use serde_json::{json, Value};

use super::book::Book;
use super::DEPTH;
use crate::ipc;
use crate::lifecycle::{self, State};

#[derive(Debug)]
pub(super) struct Worker {
    pub(super) index: usize,
    pub(super) token: Token,
    pub(super) life: lifecycle::Slot,
    pub(super) channel: Option<ipc::Parent>,
    /// Job ids sent, oldest (the one running) first.
    pub(super) in_flight: VecDeque<u64>,
    /// Of those, the newest ones given to this worker by `dispatch` but
    /// not yet handed to its channel.
    pub(super) unsent: usize,
    /// When the running job started (it became the oldest in flight).
    pub(super) head_since: Option<Instant>,
    pub(super) jobs: u64,
    /// Of those, the ones it answered `ERR ...`.
    pub(super) failed: u64,
    /// Workers this slot has had after its first.
    pub(super) restarts: u64,
    /// Why forkd killed it, if it did; its jobs fail or move on with this.
    pub(super) killed: Option<Killed>,
}

#[derive(Debug)]
pub(super) struct Killed {
    pub(super) reason: String,
    /// The running job already failed (a timeout): the jobs behind it
    /// never started and are sent again without charge.
    pub(super) head_failed: bool,
}

impl Worker {
    /// Running, channel up, room for another job.
    pub(super) fn accepts(&self) -> bool {
        matches!(self.life.state, State::Running { .. })
            && self.killed.is_none()
            && self.channel.is_some()
            && self.in_flight.len() < DEPTH
    }

    pub(super) fn status(&self, retiring: bool) -> Value {
        let state = match (self.life.state, &self.killed, retiring) {
            (_, Some(_), _) => "killed",
            (State::Running { .. }, None, false) => "running",
            (State::Running { .. } | State::Retiring { .. }, None, _) => "retiring",
            (State::Pending { .. }, None, _) if self.life.failures > 0 => "backoff",
            (State::Pending { .. }, None, _) => "starting",
            (State::Vacant, None, _) => "stopped",
        };
        let uptime = match self.life.state {
            State::Running { since, .. } => Some(since.elapsed().as_secs()),
            _ => None,
        };
        json!({
            "index": self.index,
            "state": state,
            "pid": self.life.pid().map(|p| p.as_raw()),
            "uptime_secs": uptime,
            "restarts": self.restarts,
            "failed": self.failed,
            "jobs": self.jobs,
            "in_flight": self.in_flight.len(),
        })
    }
}

/// Hands `worker`'s unsent jobs to its channel, oldest first, and writes
/// them together. Returns true if the channel broke: the worker is
/// killed, the jobs the channel did not take whole are taken back from it
/// and put at the front of `queue` (in their order), to go to another
/// worker.
pub(super) fn send_unsent(
    pool: &str,
    worker: &mut Worker,
    book: &Book,
    queue: &mut VecDeque<u64>,
) -> bool {
    // Nothing new, or a worker already killed (its jobs are settled at the
    // reap; writing its backlog again would only fail again): nothing to
    // do here. What waits from an earlier turn goes out on `channel_ready`.
    if worker.unsent == 0 || worker.killed.is_some() {
        worker.unsent = 0;
        return false;
    }
    let first = worker.in_flight.len() - std::mem::take(&mut worker.unsent);
    let Some(channel) = worker.channel.as_mut() else {
        return false;
    };
    // Queued first, then written together: one write(2) for a run of
    // small jobs instead of one per job.
    let mut stop = worker.in_flight.len();
    let mut broken = None;
    for at in first..worker.in_flight.len() {
        let Some(job) = book.jobs.get(&worker.in_flight[at]) else {
            continue;
        };
        if let Err(e) = channel.queue(Rc::clone(&job.payload)) {
            (stop, broken) = (at, Some(e));
            break;
        }
    }
    let Some(e) = broken.or_else(|| channel.flush().err()) else {
        return false;
    };
    // The jobs up to `stop` that the channel still holds never reached the
    // worker whole (the outbox is the tail of `in_flight`, in order): they
    // wait again, without using a retry.
    let unsent_from = stop.saturating_sub(channel.queued());
    for id in worker.in_flight.drain(unsent_from..).rev() {
        queue.push_front(id);
    }
    if worker.in_flight.is_empty() {
        worker.head_since = None;
    }
    kill(pool, worker, format!("its channel broke: {e}"), false);
    true
}

/// SIGKILLs a worker that broke its channel or overran `job_timeout`;
/// its jobs are settled when it is reaped.
pub(super) fn kill(pool: &str, worker: &mut Worker, reason: String, head_failed: bool) {
    if let Some(pid) = worker.life.pid() {
        log::warn!(
            "pool \"{pool}\" worker #{} (pid {pid}) {reason}",
            worker.index
        );
        let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
    }
    worker.killed = Some(Killed {
        reason: format!("worker #{} {reason}", worker.index),
        head_failed,
    });
}
