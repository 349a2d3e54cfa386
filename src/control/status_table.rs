//! `forkctl status` for people: one table row per program instance, pool
//! worker and service worker, then the cgroup, pool and service tables,
//! from the daemon's `status` reply. Pure formatting: no I/O but the final
//! print.

use std::io::Write;

use serde_json::Value;

/// Status as a table, one row per instance (or worker).
pub fn print_status(reply: &Value) {
    let mut rows = vec![[
        "NAME",
        "KIND",
        "INSTANCE",
        "STATE",
        "PID",
        "UPTIME",
        "RESTARTS",
        "LAST EXIT",
    ]
    .map(String::from)
    .to_vec()];
    for (kind, list, members) in [
        ("program", "programs", "instances"),
        ("pool", "pools", "workers"),
        ("service", "services", "workers"),
    ] {
        for entry in reply[list].as_array().into_iter().flatten() {
            let name = entry["name"].as_str().unwrap_or("?").to_string();
            let items = entry[members].as_array().cloned().unwrap_or_default();
            if items.is_empty() {
                // A pool held by its `after` says what it waits for.
                let state = entry["detail"]
                    .as_str()
                    .or(entry["state"].as_str())
                    .unwrap_or("-")
                    .to_string();
                rows.push(vec![
                    name.clone(),
                    kind.into(),
                    "-".into(),
                    state,
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                ]);
            }
            for item in items {
                rows.push(vec![
                    name.clone(),
                    kind.into(),
                    item["index"].to_string(),
                    // Why it is down and what comes next, when forkd says.
                    item["detail"]
                        .as_str()
                        .or(item["state"].as_str())
                        .unwrap_or("-")
                        .to_string(),
                    item["pid"].as_i64().map_or("-".into(), |p| p.to_string()),
                    item["uptime_secs"]
                        .as_u64()
                        .map_or("-".into(), |s| uptime(Some(s))),
                    item["restarts"]
                        .as_u64()
                        .map_or("-".into(), |r| r.to_string()),
                    last_exit(&item["last_exit"]),
                ]);
            }
        }
    }
    let mut out = table(&rows);
    for extra in [cgroup_rows(reply), pool_rows(reply), service_rows(reply)] {
        if extra.len() > 1 {
            out.push('\n');
            out.push_str(&table(&extra));
        }
    }
    let _ = std::io::stdout().write_all(out.as_bytes());
}

/// One row per program instance that runs in a cgroup of its own.
fn cgroup_rows(reply: &Value) -> Vec<Vec<String>> {
    let mut rows = vec![["INSTANCE", "CGROUP", "PROCESSES"]
        .map(String::from)
        .to_vec()];
    for entry in reply["programs"].as_array().into_iter().flatten() {
        for item in entry["instances"].as_array().into_iter().flatten() {
            if let Some(cgroup) = item["cgroup"].as_str() {
                rows.push(vec![
                    format!(
                        "{}#{}",
                        entry["name"].as_str().unwrap_or("?"),
                        item["index"]
                    ),
                    cgroup.to_string(),
                    item["cgroup_processes"].to_string(),
                ]);
            }
        }
    }
    rows
}

/// One row per pool with its job counters.
fn pool_rows(reply: &Value) -> Vec<Vec<String>> {
    let mut rows = vec![[
        "POOL",
        "TRANSPORT",
        "WORKER",
        "DONE",
        "FAILED",
        "RETRIED",
        "BUSY",
        "IN FLIGHT",
        "QUEUED",
        "P50",
        "P99",
    ]
    .map(String::from)
    .to_vec()];
    for entry in reply["pools"].as_array().into_iter().flatten() {
        let text = |key: &str| entry[key].as_str().unwrap_or("-").to_string();
        let count = |key: &str| entry[key].as_u64().map_or("-".into(), |n| n.to_string());
        let ms = |key: &str| {
            entry[key]
                .as_f64()
                .map_or("-".into(), |v| format!("{v:.2}ms"))
        };
        rows.push(vec![
            text("name"),
            text("transport"),
            text("worker"),
            count("done"),
            count("failed"),
            count("retried"),
            count("busy"),
            count("in_flight"),
            count("queued"),
            ms("latency_p50_ms"),
            ms("latency_p99_ms"),
        ]);
    }
    rows
}

/// One row per service with its counters: the front end at a glance.
fn service_rows(reply: &Value) -> Vec<Vec<String>> {
    let mut rows = vec![[
        "SERVICE", "MODE", "HANDLER", "LISTEN", "CONNS", "ACCEPTED", "REFUSED", "ERRORS",
        "TIMEOUTS", "IGNORED",
    ]
    .map(String::from)
    .to_vec()];
    for entry in reply["services"].as_array().into_iter().flatten() {
        let text = |key: &str| entry[key].as_str().unwrap_or("-").to_string();
        let count = |key: &str| entry[key].as_u64().map_or("-".into(), |n| n.to_string());
        let listen: Vec<&str> = entry["listen"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        rows.push(vec![
            text("name"),
            text("mode"),
            text("handler"),
            if listen.is_empty() {
                "-".into()
            } else {
                listen.join(",")
            },
            count("connections"),
            count("accepted"),
            count("refused"),
            count("errors"),
            count("timeouts"),
            count("ignored"),
        ]);
    }
    rows
}

/// Left-aligned columns separated by two spaces.
fn table(rows: &[Vec<String>]) -> String {
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

fn last_exit(v: &Value) -> String {
    let Some(text) = v["text"].as_str() else {
        return "-".into();
    };
    let short = text
        .trim_start_matches("exited with ")
        .trim_start_matches("killed by ");
    match v["secs_ago"].as_u64() {
        Some(ago) => format!("{short} ({} ago)", uptime(Some(ago))),
        None => short.to_string(),
    }
}

/// `42s`, `3m12s`, `5h03m`, `2d04h`.
pub fn uptime(secs: Option<u64>) -> String {
    let Some(s) = secs else { return "-".into() };
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86_400, s % 86_400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uptimes_read_short() {
        assert_eq!(uptime(Some(42)), "42s");
        assert_eq!(uptime(Some(192)), "3m12s");
        assert_eq!(uptime(Some(5 * 3600 + 180)), "5h03m");
        assert_eq!(uptime(None), "-");
    }
}
