//! The `metrics` reply: what the `status` reply shows (programs, services,
//! pools), plus the pools' latency histograms and forkd's own figures
//! (start time, reloads, children, open fds from `/proc/self/fd`, resident
//! memory from `/proc/self/statm`), as Prometheus text
//! ([`crate::control::exposition`]). Reading it changes nothing and costs
//! a status reply and two small procfs reads.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;

use super::Supervisor;
use crate::control::exposition::{Exposition, FamilySpec, Kind};

/// Program instance states, each a `forkd_program_state` series.
const PROGRAM_STATES: [&str; 7] = [
    "stopped", "waiting", "running", "backoff", "stopping", "exited", "fatal",
];

const FAMILIES: &[FamilySpec] = &[
    ("forkd_info", Kind::Gauge, "forkd's version, always 1."),
    (
        "forkd_start_time_seconds",
        Kind::Gauge,
        "When forkd started, in seconds since the Unix epoch.",
    ),
    (
        "forkd_reloads_total",
        Kind::Counter,
        "Configuration reloads since start, by result (ok: applied, failed: rejected).",
    ),
    (
        "forkd_last_reload_timestamp_seconds",
        Kind::Gauge,
        "When the last reload ended, in seconds since the Unix epoch.",
    ),
    (
        "forkd_children",
        Kind::Gauge,
        "forkd's live child processes: instances, workers and connection children.",
    ),
    (
        "forkd_zombies_reaped_total",
        Kind::Counter,
        "Exited children forkd reaped with waitpid, of every kind.",
    ),
    (
        "forkd_orphans_reaped_total",
        Kind::Counter,
        "Of those, processes forkd did not start: orphans re-parented to it as subreaper or PID 1.",
    ),
    (
        "forkd_loop_iterations_total",
        Kind::Counter,
        "Turns of forkd's event loop (one per wake-up).",
    ),
    (
        "forkd_open_fds",
        Kind::Gauge,
        "File descriptors forkd holds open.",
    ),
    (
        "forkd_resident_memory_bytes",
        Kind::Gauge,
        "forkd's resident set size.",
    ),
    (
        "forkd_program_up",
        Kind::Gauge,
        "1 when the program instance is running.",
    ),
    (
        "forkd_program_ready",
        Kind::Gauge,
        "1 when the instance's current run passed its ready check.",
    ),
    (
        "forkd_program_state",
        Kind::Gauge,
        "1 for the instance's state, 0 for the others.",
    ),
    (
        "forkd_program_restarts_total",
        Kind::Counter,
        "Times the instance was started again after its first start.",
    ),
    (
        "forkd_program_backoff_attempts",
        Kind::Gauge,
        "Fast failures in a row (start_retries of them make the instance fatal).",
    ),
    (
        "forkd_program_next_restart_seconds",
        Kind::Gauge,
        "Seconds until the instance backing off is started again.",
    ),
    (
        "forkd_program_last_exit_code",
        Kind::Gauge,
        "Exit code of the instance's last run that exited with a code.",
    ),
    (
        "forkd_program_uptime_seconds",
        Kind::Gauge,
        "Seconds the running instance has run.",
    ),
    (
        "forkd_service_up",
        Kind::Gauge,
        "1 when the service is running (not draining or stopping).",
    ),
    (
        "forkd_service_connections",
        Kind::Gauge,
        "Connections the service has open.",
    ),
    (
        "forkd_service_accepted_total",
        Kind::Counter,
        "Connections the service accepted and served.",
    ),
    (
        "forkd_service_refused_total",
        Kind::Counter,
        "Connections the service closed unserved, by reason (per_ip: the per-address limit; fd_limit: out of file descriptors).",
    ),
    (
        "forkd_service_errors_total",
        Kind::Counter,
        "Connections that ended in an error.",
    ),
    (
        "forkd_service_timeouts_total",
        Kind::Counter,
        "Connections closed by idle_timeout.",
    ),
    (
        "forkd_service_ignored_datagrams_total",
        Kind::Counter,
        "Datagrams the service ignored.",
    ),
    (
        "forkd_service_workers",
        Kind::Gauge,
        "The service's prefork or event workers, by state.",
    ),
    (
        "forkd_pool_up",
        Kind::Gauge,
        "1 when the pool is running (has a running worker).",
    ),
    (
        "forkd_pool_jobs_done_total",
        Kind::Counter,
        "Jobs the pool's workers answered.",
    ),
    (
        "forkd_pool_jobs_failed_total",
        Kind::Counter,
        "Jobs that failed (a worker's ERR answer, a timeout, retries used up).",
    ),
    (
        "forkd_pool_jobs_retried_total",
        Kind::Counter,
        "Jobs dispatched again after their worker died.",
    ),
    (
        "forkd_pool_jobs_refused_total",
        Kind::Counter,
        "Jobs refused as busy because the queue was full.",
    ),
    (
        "forkd_pool_jobs_in_flight",
        Kind::Gauge,
        "Jobs sent to workers and not yet answered.",
    ),
    (
        "forkd_pool_queue_depth",
        Kind::Gauge,
        "Jobs waiting for a worker.",
    ),
    (
        "forkd_pool_queue_capacity",
        Kind::Gauge,
        "Jobs the queue holds before callers hear busy (queue).",
    ),
    (
        "forkd_pool_workers",
        Kind::Gauge,
        "The pool's workers, by state.",
    ),
    (
        "forkd_pool_job_duration_seconds",
        Kind::Histogram,
        "Time from a job's submission to its result.",
    ),
];

impl Supervisor {
    /// The whole exposition.
    pub(super) fn metrics_text(&self) -> String {
        let status = self.status_reply(&[]);
        let mut out = Exposition::new(FAMILIES);
        self.daemon_metrics(&mut out);
        for program in list(&status["programs"]) {
            program_metrics(program, &mut out);
        }
        for service in list(&status["services"]) {
            service_metrics(service, &mut out);
        }
        for pool in list(&status["pools"]) {
            pool_metrics(pool, &mut out);
        }
        self.pool_histograms(&mut out);
        out.render()
    }

    fn daemon_metrics(&self, out: &mut Exposition) {
        out.sample(
            "forkd_info",
            "",
            &[("version", env!("CARGO_PKG_VERSION"))],
            1.0,
        );
        out.sample(
            "forkd_start_time_seconds",
            "",
            &[],
            unix_seconds(self.control.started_at),
        );
        out.sample(
            "forkd_reloads_total",
            "",
            &[("result", "ok")],
            self.reload.applied as f64,
        );
        out.sample(
            "forkd_reloads_total",
            "",
            &[("result", "failed")],
            self.reload.rejected as f64,
        );
        if let Some(at) = self.reload.last_at {
            out.sample(
                "forkd_last_reload_timestamp_seconds",
                "",
                &[],
                unix_seconds(at),
            );
        }
        let children = self.children.len() + self.connection_children();
        out.sample("forkd_children", "", &[], children as f64);
        let counts = self.loop_counts;
        for (family, value) in [
            ("forkd_zombies_reaped_total", counts.reaped),
            ("forkd_orphans_reaped_total", counts.orphans),
            ("forkd_loop_iterations_total", counts.iterations),
        ] {
            out.sample(family, "", &[], value as f64);
        }
        if let Some(fds) = open_fds() {
            out.sample("forkd_open_fds", "", &[], fds as f64);
        }
        if let Some(bytes) = resident_bytes() {
            out.sample("forkd_resident_memory_bytes", "", &[], bytes as f64);
        }
    }

    fn pool_histograms(&self, out: &mut Exposition) {
        for running in &self.pools.list {
            let name = running.pool.name();
            if !self.config.pools.iter().any(|p| p.name == name) {
                continue; // removed by a reload, draining
            }
            let histogram = running.pool.latency_histogram();
            let family = "forkd_pool_job_duration_seconds";
            for (bound, count) in histogram.cumulative() {
                let le = crate::control::exposition::number(bound);
                out.sample(
                    family,
                    "_bucket",
                    &[("pool", name), ("le", &le)],
                    count as f64,
                );
            }
            let labels = [("pool", name)];
            out.sample(family, "_sum", &labels, histogram.sum().as_secs_f64());
            out.sample(family, "_count", &labels, histogram.count() as f64);
        }
    }
}

fn list(value: &Value) -> impl Iterator<Item = &Value> {
    value.as_array().into_iter().flatten()
}

fn text(value: &Value) -> &str {
    value.as_str().unwrap_or_default()
}

fn program_metrics(program: &Value, out: &mut Exposition) {
    let name = text(&program["name"]);
    for instance in list(&program["instances"]) {
        let index = instance["index"].to_string();
        let labels = [("program", name), ("instance", index.as_str())];
        let state = text(&instance["state"]);
        let flag = |on: bool| if on { 1.0 } else { 0.0 };
        out.sample("forkd_program_up", "", &labels, flag(state == "running"));
        out.sample(
            "forkd_program_ready",
            "",
            &labels,
            flag(instance["ready"] == true),
        );
        for each in PROGRAM_STATES {
            let with_state = [labels[0], labels[1], ("state", each)];
            out.sample("forkd_program_state", "", &with_state, flag(state == each));
        }
        let number = |key: &str| instance[key].as_f64();
        let restarts = number("restarts").unwrap_or_default();
        out.sample("forkd_program_restarts_total", "", &labels, restarts);
        let attempts = number("attempts").unwrap_or_default();
        out.sample("forkd_program_backoff_attempts", "", &labels, attempts);
        if let Some(ms) = number("next_attempt_in_ms").filter(|_| state == "backoff") {
            out.sample(
                "forkd_program_next_restart_seconds",
                "",
                &labels,
                ms / 1000.0,
            );
        }
        if let Some(code) = instance["last_exit"]["code"].as_f64() {
            out.sample("forkd_program_last_exit_code", "", &labels, code);
        }
        if let Some(secs) = number("uptime_secs") {
            out.sample("forkd_program_uptime_seconds", "", &labels, secs);
        }
    }
}

fn service_metrics(service: &Value, out: &mut Exposition) {
    let name = text(&service["name"]);
    let owner = ("service", name);
    let fields = [
        ("forkd_service_up", "state"),
        ("forkd_service_connections", "connections"),
        ("forkd_service_accepted_total", "accepted"),
        ("forkd_service_errors_total", "errors"),
        ("forkd_service_timeouts_total", "timeouts"),
        ("forkd_service_ignored_datagrams_total", "ignored"),
    ];
    samples(service, owner, &fields, out);
    for reason in ["per_ip", "fd_limit"] {
        let refused = service["refused_by"][reason].as_f64().unwrap_or_default();
        let labels = [owner, ("reason", reason)];
        out.sample("forkd_service_refused_total", "", &labels, refused);
    }
    if matches!(service["mode"].as_str(), Some("prefork" | "event")) {
        // Fork mode's connection children are in `connections`.
        let workers = list(&service["workers"]).filter(|w| w["role"] != "connection");
        let states = ["starting", "idle", "busy", "draining"];
        by_state(workers, &states, "forkd_service_workers", owner, out);
    }
}

fn pool_metrics(pool: &Value, out: &mut Exposition) {
    let owner = ("pool", text(&pool["name"]));
    let fields = [
        ("forkd_pool_up", "state"),
        ("forkd_pool_jobs_done_total", "done"),
        ("forkd_pool_jobs_failed_total", "failed"),
        ("forkd_pool_jobs_retried_total", "retried"),
        ("forkd_pool_jobs_refused_total", "busy"),
        ("forkd_pool_jobs_in_flight", "in_flight"),
        ("forkd_pool_queue_depth", "queued"),
        ("forkd_pool_queue_capacity", "queue"),
    ];
    samples(pool, owner, &fields, out);
    let states = [
        "starting", "running", "backoff", "retiring", "killed", "stopped",
    ];
    by_state(
        list(&pool["workers"]),
        &states,
        "forkd_pool_workers",
        owner,
        out,
    );
}

/// One sample per `(family, key)` of `entry`, labelled `owner`; the key
/// `state` becomes 1 when it is `running`, else 0.
fn samples(entry: &Value, owner: (&str, &str), fields: &[(&str, &str)], out: &mut Exposition) {
    for &(family, key) in fields {
        let value = match key {
            "state" => f64::from(u8::from(entry[key] == "running")),
            _ => entry[key].as_f64().unwrap_or_default(),
        };
        out.sample(family, "", &[owner], value);
    }
}

/// One series per state in `states` (and per other state seen), counting
/// the workers in it.
fn by_state<'a>(
    workers: impl Iterator<Item = &'a Value>,
    states: &[&'a str],
    family: &str,
    owner: (&str, &str),
    out: &mut Exposition,
) {
    let mut counts: Vec<(&str, u64)> = states.iter().map(|&s| (s, 0)).collect();
    for state in workers.map(|w| text(&w["state"])) {
        match counts.iter_mut().find(|(s, _)| *s == state) {
            Some((_, n)) => *n += 1,
            None => counts.push((state, 1)),
        }
    }
    for (state, count) in counts {
        out.sample(family, "", &[owner, ("state", state)], count as f64);
    }
}

fn unix_seconds(at: SystemTime) -> f64 {
    at.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

/// Entries of `/proc/self/fd`, less the one the listing itself opens.
fn open_fds() -> Option<usize> {
    let entries = std::fs::read_dir("/proc/self/fd").ok()?.count();
    Some(entries.saturating_sub(1))
}

/// The second field of `/proc/self/statm` (resident pages) times the page
/// size (proc(5)).
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE).ok()??;
    Some(pages * u64::try_from(page).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn family_names_follow_prometheus_conventions() {
        for (name, kind, help) in FAMILIES {
            assert!(name.starts_with("forkd_"), "{name}");
            assert_eq!(*kind == Kind::Counter, name.ends_with("_total"), "{name}");
            assert!(help.ends_with('.'), "{name}");
        }
    }

    #[test]
    fn a_program_instance_has_one_state_set() {
        let program = serde_json::json!({ "name": "api", "instances": [
            { "index": 0, "state": "backoff", "restarts": 2, "attempts": 1,
              "next_attempt_in_ms": 1500, "last_exit": { "code": 3 } }
        ]});
        let mut out = Exposition::new(FAMILIES);
        program_metrics(&program, &mut out);
        let text = out.render();
        let series = "{program=\"api\",instance=\"0\"";
        for line in [
            format!("forkd_program_up{series}}} 0"),
            format!("forkd_program_state{series},state=\"backoff\"}} 1"),
            format!("forkd_program_state{series},state=\"running\"}} 0"),
            format!("forkd_program_restarts_total{series}}} 2"),
            format!("forkd_program_next_restart_seconds{series}}} 1.5"),
            format!("forkd_program_last_exit_code{series}}} 3"),
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
    }

    #[test]
    fn the_process_figures_are_read() {
        assert!(open_fds().is_some_and(|n| n >= 3));
        assert!(resident_bytes().is_some_and(|b| b > 0));
    }
}
