//! The event stream (`forkctl events`): what happened to programs and to
//! the configuration, in order, each with a sequence number and a
//! wall-clock time. A bounded ring in the supervisor: pushing never
//! allocates past [`CAPACITY`] entries, and a follower's poll (`after`)
//! only copies the entries past its cursor into the reply, so no follower
//! holds anything in forkd between polls.

use std::collections::VecDeque;
use std::time::SystemTime;

use serde_json::{json, Value};

/// Events kept; the oldest goes when a new one comes.
pub const CAPACITY: usize = 1024;

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Started {
        subject: String,
        pid: i32,
    },
    Exited {
        subject: String,
        pid: i32,
        how: String,
    },
    Backoff {
        subject: String,
        delay: String,
    },
    /// A pool's or service's worker was forked: at start, and each time
    /// forkd replaces one that exited (or adds one, for spares or `scale`).
    WorkerStarted {
        subject: String,
        pid: i32,
    },
    /// A pool's or service's worker exited; forkd replaces it unless the
    /// pool or service is stopping.
    WorkerExited {
        subject: String,
        pid: i32,
        how: String,
    },
    Fatal {
        subject: String,
        failures: u32,
    },
    ReloadApplied {
        summary: String,
    },
    /// A dry run (`forkctl reload --dry-run`): nothing changed.
    ReloadPlanned {
        summary: String,
    },
    ReloadRejected {
        errors: usize,
        first: String,
    },
    /// A service's refusals, sheds, timeouts or failures, as logged: the
    /// first of a kind at once, then a count per [`LOG_INTERVAL`].
    ///
    /// [`LOG_INTERVAL`]: crate::server::limits::LOG_INTERVAL
    Summary {
        subject: String,
        what: &'static str,
        count: u64,
    },
}

impl Event {
    fn kind(&self) -> &'static str {
        match self {
            Event::Started { .. } => "started",
            Event::Exited { .. } => "exited",
            Event::Backoff { .. } => "backoff",
            Event::WorkerStarted { .. } => "worker_started",
            Event::WorkerExited { .. } => "worker_exited",
            Event::Fatal { .. } => "fatal",
            Event::ReloadApplied { .. } => "reload_applied",
            Event::ReloadPlanned { .. } => "reload_planned",
            Event::ReloadRejected { .. } => "reload_rejected",
            Event::Summary { .. } => "summary",
        }
    }

    fn subject(&self) -> &str {
        match self {
            Event::Started { subject, .. }
            | Event::Exited { subject, .. }
            | Event::Backoff { subject, .. }
            | Event::WorkerStarted { subject, .. }
            | Event::WorkerExited { subject, .. }
            | Event::Fatal { subject, .. }
            | Event::Summary { subject, .. } => subject,
            Event::ReloadApplied { .. }
            | Event::ReloadPlanned { .. }
            | Event::ReloadRejected { .. } => "config",
        }
    }

    /// The rest of the text line.
    fn detail(&self) -> String {
        match self {
            Event::Started { pid, .. } | Event::WorkerStarted { pid, .. } => format!("pid {pid}"),
            Event::Exited { pid, how, .. } | Event::WorkerExited { pid, how, .. } => {
                format!("{how} (pid {pid})")
            }
            Event::Backoff { delay, .. } => format!("restarting in {delay}"),
            Event::Fatal { failures, .. } => format!("gave up after {failures} fast failures"),
            Event::ReloadApplied { summary } | Event::ReloadPlanned { summary } => summary.clone(),
            Event::ReloadRejected { errors, first } => format!("{errors} error(s): {first}"),
            Event::Summary { what, count, .. } => format!(
                "{what}: x{count} (summarised every {}s)",
                crate::server::limits::LOG_INTERVAL.as_secs()
            ),
        }
    }

    /// The kind-specific JSON fields.
    fn fields(&self) -> Value {
        match self {
            Event::Started { pid, .. } | Event::WorkerStarted { pid, .. } => json!({ "pid": pid }),
            Event::Exited { pid, how, .. } | Event::WorkerExited { pid, how, .. } => {
                json!({ "pid": pid, "how": how })
            }
            Event::Backoff { delay, .. } => json!({ "delay": delay }),
            Event::Fatal { failures, .. } => json!({ "failures": failures }),
            Event::ReloadApplied { summary } | Event::ReloadPlanned { summary } => {
                json!({ "summary": summary })
            }
            Event::ReloadRejected { errors, first } => json!({ "errors": errors, "first": first }),
            Event::Summary { what, count, .. } => json!({
                "what": what,
                "count": count,
                "interval_s": crate::server::limits::LOG_INTERVAL.as_secs(),
            }),
        }
    }
}

/// The ring. Sequence numbers start at 1 and never repeat.
#[derive(Debug)]
pub struct Events {
    ring: VecDeque<(u64, SystemTime, Event)>,
    capacity: usize,
    next_seq: u64,
}

impl Default for Events {
    fn default() -> Self {
        Events::with_capacity(CAPACITY)
    }
}

impl Events {
    pub fn with_capacity(capacity: usize) -> Events {
        Events {
            ring: VecDeque::with_capacity(capacity.min(CAPACITY)),
            capacity: capacity.max(1),
            next_seq: 1,
        }
    }

    pub fn push(&mut self, event: Event) {
        if self.ring.len() == self.capacity {
            self.ring.pop_front();
        }
        self.ring
            .push_back((self.next_seq, SystemTime::now(), event));
        self.next_seq += 1;
    }

    /// The event a state change makes, if any: back-off (with its delay)
    /// or FATAL.
    pub(super) fn push_transition(
        &mut self,
        name: &str,
        index: usize,
        inst: &super::instance::Instance,
    ) {
        let subject = format!("{name}#{index}");
        match inst.state {
            super::instance::State::Backoff => self.push(Event::Backoff {
                subject,
                delay: crate::logging::human_duration(inst.next_delay.unwrap_or_default()),
            }),
            super::instance::State::Fatal => self.push(Event::Fatal {
                subject,
                failures: inst.failures,
            }),
            _ => {}
        }
    }

    /// The events after `after` (all kept events for `None`), and how many
    /// the cursor missed because they left the ring before it asked.
    pub fn after(&self, after: Option<u64>) -> (Vec<&(u64, SystemTime, Event)>, u64) {
        let oldest = self.ring.front().map_or(self.next_seq, |e| e.0);
        // A cursor of 0 is a follower that began on an empty ring.
        let dropped = after.map_or(0, |after| oldest.saturating_sub(after + 1));
        let after = after.unwrap_or(0);
        let events = self.ring.iter().filter(|e| e.0 > after).collect();
        (events, dropped)
    }

    /// The `events` reply: `events`, `last_seq` (the cursor for the next
    /// poll) and `dropped`.
    pub fn reply(&self, after: Option<u64>) -> Value {
        let (events, dropped) = self.after(after);
        let list: Vec<Value> = events
            .iter()
            .map(|(seq, time, event)| {
                let mut v = json!({
                    "seq": seq,
                    "time": crate::logging::utc_timestamp(*time),
                    "kind": event.kind(),
                    "subject": event.subject(),
                    "detail": event.detail(),
                });
                if let (Some(obj), Value::Object(extra)) = (v.as_object_mut(), event.fields()) {
                    obj.extend(extra);
                }
                v
            })
            .collect();
        json!({
            "ok": true,
            "events": list,
            "last_seq": self.next_seq - 1,
            "dropped": dropped,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn started(n: i32) -> Event {
        Event::Started {
            subject: "web#0".into(),
            pid: n,
        }
    }

    #[test]
    fn sequence_numbers_increase_and_the_cursor_gets_only_newer() {
        let mut events = Events::with_capacity(8);
        for pid in 1..=3 {
            events.push(started(pid));
        }
        let reply = events.reply(None);
        let seqs: Vec<u64> = reply["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["seq"].as_u64().unwrap())
            .collect();
        assert_eq!(seqs, [1, 2, 3]);
        assert_eq!(reply["last_seq"], 3);
        assert_eq!(reply["events"][0]["kind"], "started");
        assert_eq!(reply["events"][0]["pid"], 1);
        let reply = events.reply(Some(2));
        assert_eq!(reply["events"].as_array().unwrap().len(), 1);
        assert_eq!(reply["dropped"], 0);
        assert_eq!(events.reply(Some(3))["events"].as_array().unwrap().len(), 0);
    }

    #[test]
    fn a_cursor_older_than_the_ring_is_told_how_many_it_missed() {
        let mut events = Events::with_capacity(4);
        for pid in 1..=10 {
            events.push(started(pid));
        }
        // Kept: 7..=10. A follower at 2 missed 3..=6.
        let reply = events.reply(Some(2));
        assert_eq!(reply["dropped"], 4);
        assert_eq!(reply["events"][0]["seq"], 7);
        assert_eq!(reply["events"].as_array().unwrap().len(), 4);
        // Right at the edge: nothing missed.
        assert_eq!(events.reply(Some(6))["dropped"], 0);
        // A first look (no cursor) is never "dropped"; a follower that
        // began on an empty ring (cursor 0) is.
        assert_eq!(events.reply(None)["dropped"], 0);
        assert_eq!(events.reply(Some(0))["dropped"], 6);
    }
}
