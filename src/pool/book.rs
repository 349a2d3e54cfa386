//! A pool's jobs: the ones not yet answered (by id), what became of the
//! others (counts, latencies, the histogram), and the answers waiting to
//! be routed to their callers.

use std::collections::VecDeque;
use std::time::Instant;

use super::{latency, ClientId, LATENCIES};
use crate::ipc::Payload;

/// A finished job: its result payload (`ERR reason` when it failed) for
/// the caller's `seq`-th job.
#[derive(Debug)]
pub struct Done {
    pub client: ClientId,
    pub seq: u64,
    pub result: Vec<u8>,
}

#[derive(Debug)]
pub(super) struct Job {
    pub(super) payload: Payload,
    pub(super) client: ClientId,
    pub(super) seq: u64,
    pub(super) attempts: u32,
    pub(super) submitted: Instant,
}

#[derive(Debug, Default)]
pub(super) struct Stats {
    pub(super) done: u64,
    pub(super) failed: u64,
    pub(super) retried: u64,
    pub(super) busy: u64,
    pub(super) latencies_us: VecDeque<u64>,
    /// Every job's latency since the pool started (`forkctl metrics`).
    pub(super) histogram: latency::Histogram,
}

/// The jobs not yet answered, what became of the others, and the answers
/// waiting to be routed to their callers.
#[derive(Debug, Default)]
pub(super) struct Book {
    pub(super) jobs: crate::id_hash::IdMap<u64, Job>,
    pub(super) stats: Stats,
    pub(super) done: Vec<Done>,
}

impl Book {
    /// Ends job `id` (if it is still pending) with the failure `message`
    /// (which starts with `ERR `).
    pub(super) fn fail(&mut self, id: u64, message: String, now: Instant) {
        if let Some(job) = self.jobs.remove(&id) {
            self.finish(job, message.into_bytes(), now);
        }
    }

    pub(super) fn finish(&mut self, job: Job, result: Vec<u8>, now: Instant) {
        let stats = &mut self.stats;
        if result.starts_with(b"ERR ") {
            stats.failed += 1;
        } else {
            stats.done += 1;
        }
        if stats.latencies_us.len() == LATENCIES {
            stats.latencies_us.pop_front();
        }
        let took = now.duration_since(job.submitted);
        stats.histogram.record(took);
        let us = took.as_micros();
        stats
            .latencies_us
            .push_back(u64::try_from(us).unwrap_or(u64::MAX));
        self.done.push(Done {
            client: job.client,
            seq: job.seq,
            result,
        });
    }
}
