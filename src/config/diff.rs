//! What a reload changes: programs, pools and services added, removed,
//! changed or unchanged, matched by name.
//!
//! Also which keys of one entry differ, in forkd.toml's words, for the
//! reload log. Pure comparison of two validated [`Config`]s; deciding what to start,
//! stop or restart is the supervisor's job. An entry is "changed" when any
//! of its settings differs (structural equality of its config struct).
//! Dependencies are not followed: a service whose pool changed is itself
//! "unchanged" unless its own table changed.

use super::{Config, PoolConfig, ProgramConfig, ServiceConfig};

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

/// The keys whose values differ, in the words of forkd.toml.
pub fn program_changes(a: &ProgramConfig, b: &ProgramConfig) -> Vec<&'static str> {
    named_differences(&program_fields(a, b))
}

/// Every `[[program]]` key but `name`, with whether it differs.
fn program_fields(a: &ProgramConfig, b: &ProgramConfig) -> Vec<(&'static str, bool)> {
    vec![
        ("command", a.command != b.command),
        ("restart", a.restart != b.restart),
        ("backoff_initial", a.backoff_initial != b.backoff_initial),
        ("backoff_max", a.backoff_max != b.backoff_max),
        ("stable_after", a.stable_after != b.stable_after),
        ("start_retries", a.start_retries != b.start_retries),
        ("instances", a.instances != b.instances),
        ("autostart", a.autostart != b.autostart),
        ("user", a.user != b.user),
        ("group", a.group != b.group),
        ("cwd", a.cwd != b.cwd),
        ("env", a.env != b.env),
        ("umask", a.umask != b.umask),
        ("rlimits", a.rlimits != b.rlimits),
        ("stop_signal", a.stop_signal != b.stop_signal),
        ("stop_timeout", a.stop_timeout != b.stop_timeout),
        ("stdout", a.stdout != b.stdout),
        ("stderr", a.stderr != b.stderr),
        ("pidfile", a.pidfile != b.pidfile),
        ("start_timeout", a.start_timeout != b.start_timeout),
    ]
}

/// The keys whose values differ, in the words of forkd.toml.
pub fn service_changes(a: &ServiceConfig, b: &ServiceConfig) -> Vec<&'static str> {
    named_differences(&service_fields(a, b))
}

/// Every `[[service]]` key but `name`, with whether it differs.
fn service_fields(a: &ServiceConfig, b: &ServiceConfig) -> Vec<(&'static str, bool)> {
    vec![
        ("listen", a.listen != b.listen),
        ("mode", a.mode != b.mode),
        ("handler", a.handler != b.handler),
        ("workers", a.workers != b.workers),
        ("min_spare", a.min_spare != b.min_spare),
        ("max_spare", a.max_spare != b.max_spare),
        ("max_workers", a.max_workers != b.max_workers),
        ("max_requests", a.max_requests != b.max_requests),
        ("max_connections", a.max_connections != b.max_connections),
        ("per_ip", a.per_ip != b.per_ip),
        ("idle_timeout", a.idle_timeout != b.idle_timeout),
        ("request_timeout", a.request_timeout != b.request_timeout),
        ("drain_timeout", a.drain_timeout != b.drain_timeout),
        ("backlog", a.backlog != b.backlog),
        ("max_line", a.max_line != b.max_line),
        ("max_frame", a.max_frame != b.max_frame),
        ("socket_mode", a.socket_mode != b.socket_mode),
        ("tcp_nodelay", a.tcp_nodelay != b.tcp_nodelay),
        ("pool", a.pool != b.pool),
        ("command", a.command != b.command),
        ("root", a.root != b.root),
        ("commands", a.commands != b.commands),
        ("timeout", a.timeout != b.timeout),
        ("max_file_size", a.max_file_size != b.max_file_size),
        ("overwrite", a.overwrite != b.overwrite),
        ("max_output", a.max_output != b.max_output),
        ("pause", a.pause != b.pause),
        ("upload_quiet", a.upload_quiet != b.upload_quiet),
        ("max_members", a.max_members != b.max_members),
        ("member_timeout", a.member_timeout != b.member_timeout),
        ("follow_symlinks", a.follow_symlinks != b.follow_symlinks),
        (
            "max_requests_per_connection",
            a.max_requests_per_connection != b.max_requests_per_connection,
        ),
        (
            "keepalive_timeout",
            a.keepalive_timeout != b.keepalive_timeout,
        ),
    ]
}

/// The names whose flag is set, or `["settings"]` when none is (a change
/// the list does not name).
fn named_differences(fields: &[(&'static str, bool)]) -> Vec<&'static str> {
    let changed: Vec<&'static str> = fields
        .iter()
        .filter(|(_, differs)| *differs)
        .map(|(name, _)| *name)
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
    use std::path::Path;

    fn config(text: &str) -> Config {
        Config::parse(text, Path::new("forkd.toml")).unwrap_or_else(|e| panic!("{e}"))
    }

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

    /// A key the lists miss would be reported as "settings" on reload.
    #[test]
    fn every_program_and_service_key_is_named() {
        let c = config(OLD);
        let keys = |fields: Vec<(&'static str, bool)>| {
            let mut names: Vec<&str> = fields.iter().map(|(n, _)| *n).collect();
            names.sort_unstable();
            names
        };
        let expected = |all: &[&'static str]| {
            let mut names: Vec<&str> = all.iter().copied().filter(|k| *k != "name").collect();
            names.sort_unstable();
            names
        };
        assert_eq!(
            keys(program_fields(&c.programs[0], &c.programs[0])),
            expected(crate::config::tables::PROGRAM_KEYS)
        );
        assert_eq!(
            keys(service_fields(&c.services[0], &c.services[0])),
            expected(crate::config::service::SERVICE_KEYS)
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
