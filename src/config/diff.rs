//! What a reload changes: programs, pools and services added, removed,
//! changed or unchanged, matched by name.
//!
//! Also which keys of one entry differ, in forkd.toml's words, and how a
//! reload applies a change to each: one table per kind of entry
//! (`PROGRAM_FIELDS`, `SERVICE_FIELDS`, `POOL_FIELDS`, `DAEMON_FIELDS`),
//! one line per key with its class ([`Apply`]: in place, replace, next
//! start) and its spelling. A new key goes into its table; the tests hold
//! the tables to the parser's key lists and the policy keys to the list
//! forkd.toml(5) gives. Pure comparison of two validated [`Config`]s: the
//! plan (`plan.rs`) turns it into actions, the supervisor carries them out.
//! An entry is "changed" when any of its settings differs (structural
//! equality of its config struct).
//! Dependencies are not followed: a service whose pool changed is itself
//! "unchanged" unless its own table changed.

use serde::{Deserialize, Serialize};

use super::{spell, values};
use super::{Config, DaemonConfig, PoolConfig, ProgramConfig, ServiceConfig, WorkerKind};
use Apply::{InPlace, NextStart, Replace};

/// The names of one kind of entry (programs, pools or services), sorted into
/// what a reload does with them. `added`, `changed` and `unchanged` follow
/// the order of the new file; `removed` the order of the old one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KindDiff {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<String>,
    pub unchanged: Vec<String>,
}

impl KindDiff {
    /// True when a reload leaves this kind of entry alone.
    pub fn is_unchanged(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }

    /// True when neither file has an entry of this kind.
    pub fn is_absent(&self) -> bool {
        self.is_unchanged() && self.unchanged.is_empty()
    }
}

/// `1 added, 0 removed, 2 changed, 3 unchanged`.
impl std::fmt::Display for KindDiff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} added, {} removed, {} changed, {} unchanged",
            self.added.len(),
            self.removed.len(),
            self.changed.len(),
            self.unchanged.len()
        )
    }
}

/// Everything a reload from `old` to `new` changes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigDiff {
    /// Whether `[daemon]` settings differ.
    pub daemon_changed: bool,
    pub programs: KindDiff,
    pub pools: KindDiff,
    pub services: KindDiff,
}

impl ConfigDiff {
    /// True when the two configurations are equivalent (the file path aside).
    pub fn is_empty(&self) -> bool {
        !self.daemon_changed
            && self.programs.is_unchanged()
            && self.pools.is_unchanged()
            && self.services.is_unchanged()
    }

    /// One line for the reload log and `forkctl reload`: the counts of
    /// each kind that either file has, then whether `[daemon]` changed, or
    /// `nothing changed`.
    ///
    /// ```
    /// use std::path::Path;
    /// use forkd::config::{diff, Config};
    ///
    /// let old = Config::parse(
    ///     "[[service]]\nname = \"echo\"\nlisten = [\"tcp://127.0.0.1:0\"]\nhandler = \"echo\"\n",
    ///     Path::new("forkd.toml"),
    /// ).unwrap();
    /// let new = Config::parse(
    ///     "[[service]]\nname = \"echo\"\nlisten = [\"tcp://127.0.0.1:0\"]\nhandler = \"echo\"\nmode = \"prefork\"\n",
    ///     Path::new("forkd.toml"),
    /// ).unwrap();
    /// assert_eq!(
    ///     diff(&old, &new).summary(),
    ///     "services: 0 added, 0 removed, 1 changed, 0 unchanged"
    /// );
    /// assert_eq!(diff(&old, &old).summary(), "nothing changed");
    /// ```
    pub fn summary(&self) -> String {
        if self.is_empty() {
            return "nothing changed".into();
        }
        let mut parts: Vec<String> = [
            ("programs", &self.programs),
            ("services", &self.services),
            ("pools", &self.pools),
        ]
        .into_iter()
        .filter(|(_, kind)| !kind.is_absent())
        .map(|(name, kind)| format!("{name}: {kind}"))
        .collect();
        if self.daemon_changed {
            parts.push("[daemon] changed".into());
        }
        parts.join("; ")
    }
}

/// Compares two configurations by entry name.
///
/// ```
/// use std::path::Path;
/// use forkd::config::{diff, Config};
///
/// let old = Config::parse(
///     "[[program]]\nname = \"api\"\ncommand = [\"/bin/api\"]\n",
///     Path::new("forkd.toml"),
/// ).unwrap();
/// let new = Config::parse(
///     "[[program]]\nname = \"api\"\ncommand = [\"/bin/api\", \"-v\"]\n",
///     Path::new("forkd.toml"),
/// ).unwrap();
/// assert_eq!(diff(&old, &new).programs.changed, ["api"]);
/// ```
pub fn diff(old: &Config, new: &Config) -> ConfigDiff {
    ConfigDiff {
        daemon_changed: old.daemon != new.daemon,
        programs: diff_kind(&old.programs, &new.programs, |p: &ProgramConfig| &p.name),
        pools: diff_kind(&old.pools, &new.pools, |p: &PoolConfig| &p.name),
        services: diff_kind(&old.services, &new.services, |s: &ServiceConfig| &s.name),
    }
}

fn diff_kind<T: PartialEq>(old: &[T], new: &[T], name: impl Fn(&T) -> &String) -> KindDiff {
    let mut out = KindDiff::default();
    for entry in new {
        let entry_name = name(entry);
        match old.iter().find(|o| name(o) == entry_name) {
            None => out.added.push(entry_name.clone()),
            Some(before) if before == entry => out.unchanged.push(entry_name.clone()),
            Some(_) => out.changed.push(entry_name.clone()),
        }
    }
    for entry in old {
        if !new.iter().any(|n| name(n) == name(entry)) {
            out.removed.push(name(entry).clone());
        }
    }
    out
}

/// How a reload carries out a change to one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Apply {
    /// Policy: what happens to the running processes next (restart rules,
    /// back-off, stop), or a setting read live. Applied without
    /// restarting anything.
    InPlace,
    /// Read when a process starts: new processes replace the running ones
    /// (programs: new instances first, then the old ones stopped; pools and
    /// services: new workers while the old ones finish).
    Replace,
    /// Read once when forkd starts: takes effect at forkd's next start.
    NextStart,
}

/// One key of a table: its name in forkd.toml, how a reload applies a
/// change to it, and its value as forkd.toml spells it. Two values differ
/// when their spellings do (`spell.rs` keeps them exact).
pub struct Key<T: 'static> {
    pub name: &'static str,
    pub apply: Apply,
    pub spell: fn(&T) -> spell::Spelled,
}

/// A key whose value differs: `old → new`, spelled as in forkd.toml
/// (`None`: not set).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub key: String,
    pub old: Option<String>,
    pub new: Option<String>,
    pub apply: Apply,
}

/// The keys of `table` whose values differ between `a` and `b`.
pub fn changes<T>(table: &[Key<T>], a: &T, b: &T) -> Vec<Change> {
    table
        .iter()
        .filter_map(|k| {
            let (old, new) = ((k.spell)(a), (k.spell)(b));
            (old != new).then(|| Change {
                key: k.name.to_string(),
                old,
                new,
                apply: k.apply,
            })
        })
        .collect()
}

const fn key<T>(name: &'static str, apply: Apply, spell: fn(&T) -> spell::Spelled) -> Key<T> {
    Key { name, apply, spell }
}

/// The keys whose values differ, in the words of forkd.toml.
pub fn program_changes(a: &ProgramConfig, b: &ProgramConfig) -> Vec<&'static str> {
    named_differences(PROGRAM_FIELDS, a, b)
}

/// Every `[[program]]` key but `name`. Policy keys are applied in place,
/// and `instances` (the program scales, as with `forkctl scale`);
/// `stdout` and `stderr` are not: a running process keeps the output it
/// was started with, so only new instances can follow a change.
#[rustfmt::skip]
pub const PROGRAM_FIELDS: &[Key<ProgramConfig>] = &[
    key("command", Replace, |p| spell::list(&p.command)),
    key("restart", InPlace, |p| spell::keyword(values::RESTART, p.restart)),
    key("backoff_initial", InPlace, |p| spell::duration(p.backoff_initial)),
    key("backoff_max", InPlace, |p| spell::duration(p.backoff_max)),
    key("stable_after", InPlace, |p| spell::duration(p.stable_after)),
    key("start_retries", InPlace, |p| spell::number(p.start_retries)),
    key("instances", InPlace, |p| spell::number(p.instances)),
    key("autostart", InPlace, |p| spell::boolean(p.autostart)),
    key("user", Replace, |p| spell::optional_string(&p.user)),
    key("group", Replace, |p| spell::optional_string(&p.group)),
    key("cwd", Replace, |p| spell::optional_path(&p.cwd)),
    key("env", Replace, |p| spell::env(&p.env)),
    key("umask", Replace, |p| spell::optional_octal(p.umask)),
    key("rlimits", Replace, |p| spell::rlimits(&p.rlimits)),
    key("stop_signal", InPlace, |p| spell::signal(p.stop_signal)),
    key("stop_timeout", InPlace, |p| spell::duration(p.stop_timeout)),
    key("stdout", Replace, |p| spell::output(&p.stdout)),
    key("stderr", Replace, |p| spell::output(&p.stderr)),
    key("fatal_retry", InPlace, |p| spell::optional_duration(p.fatal_retry)),
    key("after", InPlace, |p| spell::list(&p.after)),
    key("ready", Replace, |p| spell::ready(&p.ready)),
    key("ready_after", Replace, |p| spell::duration(p.ready_after)),
    key("pidfile", Replace, |p| spell::optional_path(&p.pidfile)),
    key("start_timeout", InPlace, |p| spell::duration(p.start_timeout)),
];

/// The keys whose values differ, in the words of forkd.toml.
pub fn service_changes(a: &ServiceConfig, b: &ServiceConfig) -> Vec<&'static str> {
    named_differences(SERVICE_FIELDS, a, b)
}

/// Every `[[service]]` key but `name`. A changed service is built anew
/// (its listening sockets handed over), so every key replaces its workers.
#[rustfmt::skip]
pub const SERVICE_FIELDS: &[Key<ServiceConfig>] = &[
    key("listen", Replace, |s| spell::listen(&s.listen)),
    key("mode", Replace, |s| spell::keyword(values::MODE, s.mode)),
    key("handler", Replace, |s| spell::keyword(values::HANDLER, s.handler)),
    key("workers", Replace, |s| spell::number(s.workers)),
    key("min_spare", Replace, |s| spell::optional_number(s.min_spare)),
    key("max_spare", Replace, |s| spell::optional_number(s.max_spare)),
    key("max_workers", Replace, |s| spell::optional_number(s.max_workers)),
    key("max_requests", Replace, |s| spell::number(s.max_requests)),
    key("max_connections", Replace, |s| spell::number(s.max_connections)),
    key("per_ip", Replace, |s| spell::number(s.per_ip)),
    key("idle_timeout", Replace, |s| spell::duration(s.idle_timeout)),
    key("request_timeout", Replace, |s| spell::duration(s.request_timeout)),
    key("drain_timeout", Replace, |s| spell::duration(s.drain_timeout)),
    key("backlog", Replace, |s| spell::number(s.backlog)),
    key("max_line", Replace, |s| spell::number(s.max_line)),
    key("max_frame", Replace, |s| spell::number(s.max_frame)),
    key("socket_mode", Replace, |s| spell::octal(s.socket_mode, 4)),
    key("tcp_nodelay", Replace, |s| spell::boolean(s.tcp_nodelay)),
    key("pool", Replace, |s| spell::optional_string(&s.pool)),
    key("command", Replace, |s| spell::optional_list(&s.command)),
    key("root", Replace, |s| spell::optional_path(&s.root)),
    key("commands", Replace, |s| spell::commands(&s.commands)),
    key("timeout", Replace, |s| spell::duration(s.timeout)),
    key("max_file_size", Replace, |s| spell::number(s.max_file_size)),
    key("overwrite", Replace, |s| spell::boolean(s.overwrite)),
    key("max_output", Replace, |s| spell::number(s.max_output)),
    key("pause", Replace, |s| spell::duration(s.pause)),
    key("upload_quiet", Replace, |s| spell::duration(s.upload_quiet)),
    key("max_members", Replace, |s| spell::number(s.max_members)),
    key("member_timeout", Replace, |s| spell::duration(s.member_timeout)),
    key("follow_symlinks", Replace, |s| spell::boolean(s.follow_symlinks)),
    key("max_requests_per_connection", Replace, |s| spell::number(s.max_requests_per_connection)),
    key("keepalive_timeout", Replace, |s| spell::duration(s.keepalive_timeout)),
];

/// Every `[[pool]]` key but `name`. Settings of the jobs and the worker
/// count apply in place (`Pool::reconfigure` scales); a new worker,
/// transport or frame size starts new workers.
#[rustfmt::skip]
pub const POOL_FIELDS: &[Key<PoolConfig>] = &[
    key("workers", InPlace, |p| spell::number(p.workers)),
    key("transport", Replace, |p| spell::string(p.transport.keyword())),
    key("worker", Replace, builtin_worker),
    key("command", Replace, worker_command),
    key("queue", InPlace, |p| spell::number(p.queue)),
    key("retries", InPlace, |p| spell::number(p.retries)),
    key("max_frame", Replace, |p| spell::number(p.max_frame)),
    key("job_timeout", InPlace, |p| spell::duration(p.job_timeout)),
    key("after", InPlace, |p| spell::list(&p.after)),
];

/// `worker = "builtin:NAME"`, unset for a `command` pool.
fn builtin_worker(p: &PoolConfig) -> spell::Spelled {
    match &p.worker {
        WorkerKind::Builtin(name) => spell::string(&format!("builtin:{name}")),
        WorkerKind::Command(_) => None,
    }
}

/// A pool's `command`, unset for a built-in worker.
fn worker_command(p: &PoolConfig) -> spell::Spelled {
    match &p.worker {
        WorkerKind::Command(argv) => spell::list(argv),
        WorkerKind::Builtin(_) => None,
    }
}

/// Every `[daemon]` key. The log level and the numbers read live apply in
/// place; the control socket and the log file are opened once.
#[rustfmt::skip]
pub const DAEMON_FIELDS: &[Key<DaemonConfig>] = &[
    key("control_socket", NextStart, |d| spell::optional_path(&d.control_socket)),
    key("control_group", NextStart, |d| spell::optional_string(&d.control_group)),
    key("control_read_group", NextStart, |d| spell::optional_string(&d.control_read_group)),
    key("stop_timeout", InPlace, |d| spell::duration(d.stop_timeout)),
    key("log_level", InPlace, |d| spell::keyword(values::LOG_LEVEL, d.log_level)),
    key("log_file", NextStart, |d| spell::optional_path(&d.log_file)),
    key("log_lines", InPlace, |d| spell::number(d.log_lines)),
    key("cgroup", NextStart, cgroup_setting),
    key("metrics_listen", NextStart, |d| match &d.metrics_listen {
        Some(addr) => spell::string(&spell::address(addr)),
        None => spell::optional_string(&None),
    }),
];

/// `cgroup = "auto" | "off" | PATH`.
fn cgroup_setting(d: &DaemonConfig) -> spell::Spelled {
    match &d.cgroup {
        super::CgroupSetting::Auto => spell::string("auto"),
        super::CgroupSetting::Off => spell::string("off"),
        super::CgroupSetting::Path(dir) => spell::path(dir),
    }
}

/// The names of the keys that differ, or `["settings"]` when none does (a
/// change the table does not name).
fn named_differences<T>(table: &'static [Key<T>], a: &T, b: &T) -> Vec<&'static str> {
    let changed: Vec<&'static str> = table
        .iter()
        .filter(|k| (k.spell)(a) != (k.spell)(b))
        .map(|k| k.name)
        .collect();
    if changed.is_empty() {
        vec!["settings"]
    } else {
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::parse as config;

    const OLD: &str = r#"
[[program]]
name = "api"
command = ["/bin/api"]

[[program]]
name = "gone"
command = ["/bin/gone"]

[[pool]]
name = "upper"
worker = "builtin:upper"

[[service]]
name = "echo"
listen = ["tcp://127.0.0.1:7000"]
handler = "echo"
"#;

    fn names<T>(table: &[Key<T>]) -> Vec<&'static str> {
        let mut names: Vec<&str> = table.iter().map(|k| k.name).collect();
        names.sort_unstable();
        names
    }

    fn all_but_name(all: &[&'static str]) -> Vec<&'static str> {
        let mut names: Vec<&str> = all.iter().copied().filter(|k| *k != "name").collect();
        names.sort_unstable();
        names
    }

    /// A key the tables miss would be reported as "settings" on reload,
    /// and its change never applied in place.
    #[test]
    fn every_key_is_named() {
        use crate::config::{service, tables};
        assert_eq!(names(PROGRAM_FIELDS), all_but_name(tables::PROGRAM_KEYS));
        assert_eq!(names(SERVICE_FIELDS), all_but_name(service::SERVICE_KEYS));
        assert_eq!(names(POOL_FIELDS), all_but_name(tables::POOL_KEYS));
        assert_eq!(names(DAEMON_FIELDS), all_but_name(tables::DAEMON_KEYS));
    }

    fn applied<T>(table: &[Key<T>], apply: Apply) -> Vec<&'static str> {
        let mut names: Vec<&str> = table
            .iter()
            .filter(|k| k.apply == apply)
            .map(|k| k.name)
            .collect();
        names.sort_unstable();
        names
    }

    /// The policy keys, as forkd.toml(5) lists them: a change to only
    /// these keeps every pid. A new key lands in one of these lists.
    #[test]
    fn every_key_is_classified() {
        assert_eq!(
            applied(PROGRAM_FIELDS, InPlace),
            [
                "after",
                "autostart",
                "backoff_initial",
                "backoff_max",
                "fatal_retry",
                "instances",
                "restart",
                "stable_after",
                "start_retries",
                "start_timeout",
                "stop_signal",
                "stop_timeout",
            ]
        );
        assert!(applied(PROGRAM_FIELDS, NextStart).is_empty());
        assert!(applied(SERVICE_FIELDS, InPlace).is_empty());
        assert_eq!(
            applied(POOL_FIELDS, InPlace),
            ["after", "job_timeout", "queue", "retries", "workers"]
        );
        assert_eq!(
            applied(DAEMON_FIELDS, NextStart),
            [
                "cgroup",
                "control_group",
                "control_read_group",
                "control_socket",
                "log_file",
                "metrics_listen"
            ]
        );
    }

    /// Each spelling tells a set key from its default: a table whose
    /// every key is set differs from a bare one in every key.
    #[test]
    fn every_key_spells_its_change() {
        let bare = config(
            "[[program]]\nname = \"p\"\ncommand = [\"/bin/p\"]\n\
             [[pool]]\nname = \"q\"\nworker = \"builtin:upper\"\n",
        );
        let set = config(
            r#"
[daemon]
control_socket = "/tmp/x.sock"
control_group = "wheel"
control_read_group = "adm"
stop_timeout = "3s"
log_level = "debug"
log_file = "/tmp/forkd.log"
log_lines = 7
cgroup = "off"
metrics_listen = "tcp://127.0.0.1:9464"

[[program]]
name = "p"
command = ["/bin/p", "-v"]
restart = "never"
backoff_initial = "1s"
backoff_max = "2m"
stable_after = "3s"
start_retries = 9
instances = 2
autostart = false
user = "nobody"
group = "nogroup"
cwd = "/tmp"
env = { A = "1" }
umask = "077"
rlimits = { nofile = 64 }
stop_signal = "INT"
stop_timeout = "1500ms"
stdout = "null"
stderr = "/tmp/err.log"
fatal_retry = "5m"
after = ["db"]
ready = "notify"
ready_after = "2s"
pidfile = "/tmp/p.pid"
start_timeout = "3s"

[[program]]
name = "db"
command = ["/bin/db"]

[[pool]]
name = "q"
workers = 7
transport = "shm"
command = ["/bin/worker"]
queue = 3
retries = 4
max_frame = 1000
job_timeout = "9s"
after = ["db"]
"#,
        );
        let keys = |changes: Vec<Change>| {
            let mut names: Vec<String> = changes.into_iter().map(|c| c.key).collect();
            names.sort_unstable();
            names
        };
        assert_eq!(
            keys(changes(PROGRAM_FIELDS, &bare.programs[0], &set.programs[0])),
            all_but_name(crate::config::tables::PROGRAM_KEYS)
        );
        assert_eq!(
            keys(changes(POOL_FIELDS, &bare.pools[0], &set.pools[0])),
            all_but_name(crate::config::tables::POOL_KEYS)
        );
        assert_eq!(
            keys(changes(DAEMON_FIELDS, &bare.daemon, &set.daemon)),
            all_but_name(crate::config::tables::DAEMON_KEYS)
        );
        let c = &changes(PROGRAM_FIELDS, &bare.programs[0], &set.programs[0]);
        let stop = c.iter().find(|c| c.key == "stop_timeout").unwrap();
        assert_eq!(
            (stop.old.as_deref(), stop.new.as_deref()),
            (Some("\"10s\""), Some("\"1500ms\""))
        );
    }

    #[test]
    fn identical_configs_have_an_empty_diff() {
        let d = diff(&config(OLD), &config(OLD));
        assert!(d.is_empty());
        assert_eq!(d.programs.unchanged, ["api", "gone"]);
        assert_eq!(d.pools.unchanged, ["upper"]);
        assert_eq!(d.services.unchanged, ["echo"]);
    }

    #[test]
    fn entries_are_matched_by_name() {
        let new = r#"
[daemon]
log_level = "debug"

[[program]]
name = "fresh"
command = ["/bin/fresh"]

[[program]]
name = "api"
command = ["/bin/api"]
instances = 3

[[pool]]
name = "upper"
worker = "builtin:upper"

[[service]]
name = "echo"
listen = ["tcp://127.0.0.1:7000"]
handler = "echo"
"#;
        let d = diff(&config(OLD), &config(new));
        assert!(d.daemon_changed);
        assert_eq!(d.programs.added, ["fresh"]);
        assert_eq!(d.programs.removed, ["gone"]);
        assert_eq!(d.programs.changed, ["api"]);
        assert!(d.programs.unchanged.is_empty());
        assert!(d.pools.is_unchanged());
        assert!(d.services.is_unchanged());
        assert!(!d.is_empty());
    }

    #[test]
    fn a_moved_entry_is_unchanged_and_the_path_is_ignored() {
        let reordered = r#"
[[service]]
name = "echo"
listen = ["tcp://127.0.0.1:7000"]
handler = "echo"

[[pool]]
name = "upper"
worker = "builtin:upper"

[[program]]
name = "gone"
command = ["/bin/gone"]

[[program]]
name = "api"
command = ["/bin/api"]
"#;
        let mut new = config(reordered);
        new.path = "/elsewhere/forkd.toml".into();
        assert!(diff(&config(OLD), &new).is_empty());
    }
}
