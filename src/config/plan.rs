//! The reload plan: for each program, pool and service, whether a reload
//! from `old` to `new` adds, removes, changes or keeps it, which keys
//! changed (old → new, spelled as in forkd.toml) and what the supervisor
//! will do about it.
//!
//! One pure function, [`plan`], computes it; the supervisor's reload
//! carries it out and `forkctl reload --dry-run` (and `forkd --check
//! --diff`) only print it, so the two cannot disagree. The action follows
//! from the keys' classes in `diff.rs`: a change to policy keys only is
//! applied in place, anything else replaces processes.

use serde::{Deserialize, Serialize};

use super::diff::{self, Apply, Change, Key, KindDiff};
use super::spell;
use super::{Config, Mode, ServiceConfig};

/// Everything a reload does, entry by entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// `[daemon]` keys that differ (each with how it applies).
    pub daemon: Vec<Change>,
    pub programs: Vec<Entry>,
    pub pools: Vec<Entry>,
    pub services: Vec<Entry>,
}

/// What happens to one program, pool or service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub name: String,
    pub status: Status,
    pub action: Action,
    /// The action in the operator's words, with its particulars (`start
    /// 2 instances`, `hand the listening socket over: tcp://...`).
    pub detail: String,
    /// The keys that differ; empty unless `status` is `changed`.
    pub changes: Vec<Change>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Added,
    Removed,
    Changed,
    Unchanged,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Unchanged: nothing is touched (same pids, same sockets).
    None,
    Start,
    Stop,
    /// Only policy changed: the running processes keep going.
    ApplyInPlace,
    /// A program's new instances start, then the old ones stop.
    Restart,
    /// A pool's or service's new workers start while the old ones finish;
    /// a service's listening sockets whose address stays are handed over.
    ReplaceWorkers,
}

impl Plan {
    /// The entry of program `name`, if either config has it.
    pub fn program(&self, name: &str) -> Option<&Entry> {
        self.programs.iter().find(|e| e.name == name)
    }

    /// The entry of pool `name`.
    pub fn pool(&self, name: &str) -> Option<&Entry> {
        self.pools.iter().find(|e| e.name == name)
    }
}

/// The plan for a reload from `old` to `new`.
///
/// ```
/// use std::path::Path;
/// use forkd::config::{plan, Action, Config};
///
/// let parse = |extra: &str| Config::parse(
///     &format!("[[program]]\nname = \"api\"\ncommand = [\"/bin/api\"]\n{extra}"),
///     Path::new("forkd.toml"),
/// ).unwrap();
/// let p = plan(&parse(""), &parse("stop_timeout = \"1s\"\n"));
/// assert_eq!(p.programs[0].action, Action::ApplyInPlace);
/// assert_eq!(p.to_string(), "program api: changed: apply in place\n    stop_timeout: \"10s\" → \"1s\"\n");
/// ```
pub fn plan(old: &Config, new: &Config) -> Plan {
    let d = diff::diff(old, new);
    Plan {
        daemon: diff::changes(diff::DAEMON_FIELDS, &old.daemon, &new.daemon),
        programs: entries(
            &d.programs,
            &old.programs,
            &new.programs,
            |p| &p.name,
            diff::PROGRAM_FIELDS,
            |kind, p| match kind {
                Status::Added if p.autostart => (
                    Action::Start,
                    format!(
                        "start {}",
                        crate::logging::count(p.instances as usize, "instance", "instances")
                    ),
                ),
                Status::Added => (Action::None, "not started (autostart = false)".into()),
                Status::Removed => (Action::Stop, "stop".into()),
                _ => (
                    Action::Restart,
                    "restart (new instances first, then the old ones stop)".into(),
                ),
            },
        ),
        pools: entries(
            &d.pools,
            &old.pools,
            &new.pools,
            |p| &p.name,
            diff::POOL_FIELDS,
            |kind, p| match kind {
                Status::Added => (
                    Action::Start,
                    format!(
                        "start {}",
                        crate::logging::count(p.workers as usize, "worker", "workers")
                    ),
                ),
                Status::Removed => (Action::Stop, "stop (workers finish their jobs)".into()),
                _ => (
                    Action::ReplaceWorkers,
                    "replace workers (the old ones finish their jobs)".into(),
                ),
            },
        ),
        services: service_entries(old, new, &d.services),
    }
    .with_scaling()
}

impl Plan {
    /// An in-place program change with a new `instances` scales it.
    fn with_scaling(mut self) -> Plan {
        for e in &mut self.programs {
            let to = e.changes.iter().find(|c| c.key == "instances");
            if let (Action::ApplyInPlace, Some(to)) = (e.action, to) {
                let to = to.new.clone().unwrap_or_default();
                e.detail = format!("apply in place, scale to {to} instance(s)");
            }
        }
        self
    }
}

/// The entries of one kind, in the order of the new file, removed ones
/// last. `act` says what happens to an added or removed entry, or to a
/// changed one whose change is not policy only.
fn entries<T>(
    kind: &KindDiff,
    old: &[T],
    new: &[T],
    name: fn(&T) -> &String,
    table: &[Key<T>],
    act: impl Fn(Status, &T) -> (Action, String),
) -> Vec<Entry> {
    let mut out = Vec::new();
    for entry in new {
        let n = name(entry);
        let (status, action, detail, changes) = match old.iter().find(|o| name(o) == n) {
            None => {
                let (action, detail) = act(Status::Added, entry);
                (Status::Added, action, detail, Vec::new())
            }
            Some(_) if kind.unchanged.contains(n) => {
                (Status::Unchanged, Action::None, String::new(), Vec::new())
            }
            Some(before) => {
                let changes = diff::changes(table, before, entry);
                let (action, detail) = if in_place(&changes) {
                    (Action::ApplyInPlace, "apply in place".to_string())
                } else {
                    act(Status::Changed, entry)
                };
                (Status::Changed, action, detail, changes)
            }
        };
        out.push(Entry {
            name: n.clone(),
            status,
            action,
            detail,
            changes,
        });
    }
    for entry in old.iter().filter(|e| kind.removed.contains(name(e))) {
        let (action, detail) = act(Status::Removed, entry);
        out.push(Entry {
            name: name(entry).clone(),
            status: Status::Removed,
            action,
            detail,
            changes: Vec::new(),
        });
    }
    out
}

/// A change every key of which applies in place (and that names a key:
/// an unnamed difference is not assumed harmless).
fn in_place(changes: &[Change]) -> bool {
    !changes.is_empty() && changes.iter().all(|c| c.apply == Apply::InPlace)
}

/// Services: a changed one is always replaced; the plan names the
/// listening sockets handed over (open in an old service, listened on by
/// the new one), which keep their backlog across the reload.
fn service_entries(old: &Config, new: &Config, kind: &KindDiff) -> Vec<Entry> {
    let handed_over = |s: &ServiceConfig| -> Vec<String> {
        s.listen
            .iter()
            .filter(|addr| old.services.iter().any(|o| o.listen.contains(addr)))
            .map(spell::address)
            .collect()
    };
    let mut out = entries(
        kind,
        &old.services,
        &new.services,
        |s| &s.name,
        diff::SERVICE_FIELDS,
        |status, s| match status {
            Status::Removed => (
                Action::Stop,
                "close its listeners and drain its processes".into(),
            ),
            Status::Added => (Action::Start, starting(s)),
            _ => (Action::ReplaceWorkers, replacing(s)),
        },
    );
    for entry in out.iter_mut().filter(|e| e.status != Status::Removed) {
        if entry.action == Action::None {
            continue;
        }
        let Some(s) = new.services.iter().find(|s| s.name == entry.name) else {
            continue;
        };
        let sockets = handed_over(s);
        if !sockets.is_empty() {
            entry.detail.push_str(&format!(
                ", hand the listening socket over: {}",
                sockets.join(", ")
            ));
        }
    }
    out
}

fn starting(s: &ServiceConfig) -> String {
    match s.mode {
        Mode::Fork => "start accepting connections".into(),
        _ => format!(
            "start {}",
            crate::logging::count(s.workers.max(1) as usize, "worker", "workers")
        ),
    }
}

fn replacing(s: &ServiceConfig) -> String {
    match s.mode {
        Mode::Fork => "replace workers (open connections finish in the old ones)".into(),
        _ => "replace workers (new ones first, the old ones drain)".into(),
    }
}

/// The plan for people: one line per entry, then one per changed key.
impl std::fmt::Display for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if !self.daemon.is_empty() {
            writeln!(f, "[daemon]: changed")?;
            for c in &self.daemon {
                let how = match c.apply {
                    Apply::InPlace => "in place",
                    Apply::NextStart => "at forkd's next start",
                    Apply::Replace => "replaces processes",
                };
                writeln!(f, "    {} ({how})", change(c))?;
            }
        }
        for (kind, list) in [
            ("program", &self.programs),
            ("pool", &self.pools),
            ("service", &self.services),
        ] {
            for e in list {
                let status = match e.status {
                    Status::Added => "added",
                    Status::Removed => "removed",
                    Status::Changed => "changed",
                    Status::Unchanged => "unchanged",
                };
                if e.detail.is_empty() {
                    writeln!(f, "{kind} {}: {status}", e.name)?;
                } else {
                    writeln!(f, "{kind} {}: {status}: {}", e.name, e.detail)?;
                }
                for c in &e.changes {
                    writeln!(f, "    {}", change(c))?;
                }
            }
        }
        Ok(())
    }
}

/// `stop_timeout: "5s" → "1s"`.
fn change(c: &Change) -> String {
    let show = |v: &Option<String>| v.clone().unwrap_or_else(|| "(not set)".into());
    format!("{}: {} → {}", c.key, show(&c.old), show(&c.new))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::parse as config;

    const OLD: &str = r#"
[[program]]
name = "policy"
command = ["/bin/a"]

[[program]]
name = "argv"
command = ["/bin/b"]

[[program]]
name = "gone"
command = ["/bin/c"]

[[pool]]
name = "upper"
worker = "builtin:upper"

[[service]]
name = "echo"
listen = ["tcp://127.0.0.1:7000"]
handler = "echo"
"#;

    const NEW: &str = r#"
[[program]]
name = "policy"
command = ["/bin/a"]
restart = "never"
stop_signal = "INT"

[[program]]
name = "argv"
command = ["/bin/b", "-v"]
stop_timeout = "1s"

[[program]]
name = "fresh"
command = ["/bin/d"]
instances = 2

[[pool]]
name = "upper"
worker = "builtin:upper"
queue = 8

[[service]]
name = "echo"
listen = ["tcp://127.0.0.1:7000", "tcp://127.0.0.1:7001"]
handler = "echo"
mode = "prefork"
"#;

    #[test]
    fn policy_changes_apply_in_place_and_others_restart() {
        let p = plan(&config(OLD), &config(NEW));
        let policy = p.program("policy").unwrap();
        assert_eq!(
            (policy.status, policy.action),
            (Status::Changed, Action::ApplyInPlace)
        );
        let keys: Vec<&str> = policy.changes.iter().map(|c| c.key.as_str()).collect();
        assert_eq!(keys, ["restart", "stop_signal"]);
        // One restart key among policy keys: the whole change restarts.
        assert_eq!(p.program("argv").unwrap().action, Action::Restart);
        assert_eq!(p.program("fresh").unwrap().detail, "start 2 instances");
        assert_eq!(p.program("gone").unwrap().status, Status::Removed);
        assert_eq!(p.pool("upper").unwrap().action, Action::ApplyInPlace);
        assert_eq!(p.services[0].action, Action::ReplaceWorkers);
        assert!(
            p.services[0]
                .detail
                .ends_with("hand the listening socket over: tcp://127.0.0.1:7000"),
            "{}",
            p.services[0].detail
        );
    }

    #[test]
    fn the_plan_reads_as_a_list() {
        let text = plan(&config(OLD), &config(NEW)).to_string();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "program policy: changed: apply in place");
        assert_eq!(lines[1], "    restart: \"on-failure\" → \"never\"");
        assert_eq!(lines[2], "    stop_signal: \"TERM\" → \"INT\"");
        assert!(text.contains("program gone: removed: stop\n"), "{text}");
        assert!(
            text.contains("    command: [\"/bin/b\"] → [\"/bin/b\", \"-v\"]\n"),
            "{text}"
        );
    }

    #[test]
    fn an_unchanged_config_plans_nothing_and_survives_json() {
        let p = plan(&config(OLD), &config(OLD));
        assert!(p.programs.iter().all(|e| e.action == Action::None));
        let changed = plan(&config(OLD), &config(NEW));
        let json = serde_json::to_value(&changed).unwrap();
        assert_eq!(json["programs"][0]["action"], "apply_in_place");
        assert_eq!(json["programs"][0]["changes"][0]["old"], "\"on-failure\"");
        let back: Plan = serde_json::from_value(json).unwrap();
        assert_eq!(back, changed);
    }
}
