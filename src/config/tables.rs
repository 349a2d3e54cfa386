//! The `[daemon]`, `[[program]]` and `[[pool]]` tables: their keys, defaults
//! and the checks that involve several keys of one table.
//!
//! Each builder reads one table through a [`Section`], records every problem
//! in the shared [`Sink`] and still returns a value (defaults standing in
//! for refused keys), so the caller can go on to cross-table checks.

use std::time::Duration;

use toml::de::DeTable;

use super::section::{Section, Sink, Span};
use super::values;
use super::{DaemonConfig, PoolConfig, ProgramConfig, Rlimits, WorkerKind};

/// A built table and, when it had a valid `name`, where that name is.
pub(super) struct Named<T> {
    pub(super) config: T,
    pub(super) name_span: Option<Span>,
}

pub(super) const DAEMON_KEYS: &[&str] = &[
    "control_socket",
    "control_group",
    "control_read_group",
    "stop_timeout",
    "log_level",
    "log_file",
    "log_lines",
    "cgroup",
    "metrics_listen",
];

pub(super) const PROGRAM_KEYS: &[&str] = &[
    "name",
    "command",
    "restart",
    "backoff_initial",
    "backoff_max",
    "stable_after",
    "start_retries",
    "instances",
    "autostart",
    "user",
    "group",
    "cwd",
    "env",
    "umask",
    "rlimits",
    "stop_signal",
    "stop_timeout",
    "stdout",
    "stderr",
    "fatal_retry",
    "after",
    "ready",
    "ready_after",
    "pidfile",
    "start_timeout",
];

const RLIMIT_KEYS: &[&str] = &["nofile", "nproc", "core", "as"];

pub(super) const POOL_KEYS: &[&str] = &[
    "name",
    "workers",
    "transport",
    "worker",
    "command",
    "queue",
    "retries",
    "max_frame",
    "job_timeout",
    "after",
];

/// Largest frame a pool or service may be configured to accept.
pub(super) const MAX_FRAME_LIMIT: u64 = 1 << 30;
pub(super) const DEFAULT_MAX_FRAME: u64 = 16 << 20;

pub(super) fn daemon(sink: &mut Sink, table: &DeTable<'_>, header: Span) -> DaemonConfig {
    let mut s = Section::new(sink, table, header, "[daemon]");
    s.check_keys(DAEMON_KEYS);
    let defaults = DaemonConfig::default();
    let control_group = non_empty_string(&mut s, "control_group");
    let mut control_read_group = non_empty_string(&mut s, "control_read_group");
    if control_read_group.is_some() && control_read_group == control_group {
        let at = s.span_of("control_read_group");
        s.error(&at, "control_read_group names the same group as control_group, whose members may already do everything; name a group for read-only access, or leave it out");
        control_read_group = None;
    }
    DaemonConfig {
        control_socket: s.path("control_socket"),
        control_group,
        control_read_group,
        stop_timeout: s.duration("stop_timeout", defaults.stop_timeout),
        log_level: s.keyword("log_level", values::LOG_LEVEL, defaults.log_level),
        log_file: s.path("log_file"),
        log_lines: s.usize("log_lines", defaults.log_lines),
        cgroup: cgroup(&mut s),
        metrics_listen: metrics_listen(&mut s),
    }
}

/// `metrics_listen = "tcp://HOST:PORT" | "unix:/PATH"`.
fn metrics_listen(s: &mut Section<'_, '_>) -> Option<super::ListenAddr> {
    use super::ListenAddr;
    let (text, span) = s.string("metrics_listen")?;
    match values::listen(text) {
        Ok(addr @ (ListenAddr::Tcp(_) | ListenAddr::Unix(_))) => Some(addr),
        Ok(_) => {
            s.error(&span, format!("bad metrics_listen \"{text}\": metrics are served over HTTP on a stream socket: use tcp://HOST:PORT (like tcp://127.0.0.1:9464) or unix:/ABSOLUTE/PATH"));
            None
        }
        Err(why) => {
            s.error(&span, format!("bad metrics_listen \"{text}\": {why}"));
            None
        }
    }
}

/// `cgroup = "auto" | "off" | "/sys/fs/cgroup/..."`.
fn cgroup(s: &mut Section<'_, '_>) -> super::CgroupSetting {
    use super::CgroupSetting;
    let Some((text, span)) = s.string("cgroup") else {
        return CgroupSetting::Auto;
    };
    match text {
        "auto" => CgroupSetting::Auto,
        "off" => CgroupSetting::Off,
        path if path.starts_with('/') => CgroupSetting::Path(path.into()),
        other => {
            s.error(
                &span,
                format!(
                    "bad cgroup \"{other}\": expected \"auto\", \"off\" or the absolute path \
                     of a cgroup v2 directory forkd may write (like \"/sys/fs/cgroup/forkd\")"
                ),
            );
            CgroupSetting::Auto
        }
    }
}

/// Reads and checks `name`, then names the section after it:
/// `[[program]] "api"`.
pub(super) fn read_name(s: &mut Section<'_, '_>, kind: &str) -> (String, Option<Span>) {
    s.label = format!("[[{kind}]]");
    if !s.has("name") {
        s.missing("name", "name = \"api\"");
        return (String::new(), None);
    }
    let Some((name, span)) = s.string("name") else {
        return (String::new(), None);
    };
    s.label = format!("[[{kind}]] \"{name}\"");
    match values::name(name) {
        Ok(()) => (name.to_string(), Some(span)),
        Err(reason) => {
            s.error(&span, format!("bad name \"{name}\": {reason}"));
            (name.to_string(), None)
        }
    }
}

pub(super) fn program(
    sink: &mut Sink,
    table: &DeTable<'_>,
    header: Span,
    daemon: &DaemonConfig,
) -> Named<ProgramConfig> {
    let mut s = Section::new(sink, table, header, "[[program]]");
    let (name, name_span) = read_name(&mut s, "program");
    s.check_keys(PROGRAM_KEYS);
    if !s.has("command") {
        s.missing(
            "command",
            "command = [\"/usr/bin/api\", \"--port\", \"8081\"]",
        );
    }
    let config = ProgramConfig {
        name,
        command: s.command("command").unwrap_or_default(),
        restart: s.keyword("restart", values::RESTART, super::RestartPolicy::OnFailure),
        backoff_initial: s.duration("backoff_initial", Duration::from_millis(100)),
        backoff_max: s.duration("backoff_max", Duration::from_secs(30)),
        stable_after: s.duration("stable_after", Duration::from_secs(10)),
        start_retries: s.u32("start_retries", 5, 0),
        instances: s.processes("instances", 1, 1),
        autostart: s.bool("autostart", true),
        user: non_empty_string(&mut s, "user"),
        group: non_empty_string(&mut s, "group"),
        cwd: s.path("cwd"),
        env: s.string_table("env"),
        umask: s.mode("umask"),
        rlimits: rlimits(&mut s),
        stop_signal: s.signal("stop_signal", libc::SIGTERM),
        stop_timeout: s.duration("stop_timeout", daemon.stop_timeout),
        stdout: s.output("stdout"),
        stderr: s.output("stderr"),
        fatal_retry: optional_duration(&mut s, "fatal_retry"),
        after: super::order::after(&mut s),
        ready: super::order::ready(&mut s),
        ready_after: s.duration("ready_after", Duration::from_secs(1)),
        pidfile: s.path("pidfile"),
        start_timeout: s.duration("start_timeout", Duration::from_secs(10)),
    };
    if config.backoff_initial > config.backoff_max {
        let at = if s.has("backoff_initial") {
            s.span_of("backoff_initial")
        } else {
            s.span_of("backoff_max")
        };
        let message = format!(
            "backoff_initial ({:?}) is longer than backoff_max ({:?}): the restart delay starts at backoff_initial and doubles up to backoff_max",
            config.backoff_initial, config.backoff_max
        );
        s.error(&at, message);
    }
    Named { config, name_span }
}

/// A duration that is off when absent (or zero).
fn optional_duration(s: &mut Section<'_, '_>, key: &str) -> Option<Duration> {
    Some(s.duration(key, Duration::ZERO)).filter(|d| s.has(key) && !d.is_zero())
}

/// `rlimits = { nofile = 1024, nproc = 64, core = 0, as = "1GiB" }`.
fn rlimits(s: &mut Section<'_, '_>) -> Rlimits {
    let Some((table, span)) = s.table_value("rlimits") else {
        return Rlimits::default();
    };
    let label = format!("rlimits of {}", s.label);
    let mut r = Section::new(s.sink, table, span, &label);
    r.check_keys(RLIMIT_KEYS);
    Rlimits {
        nofile: r.limit("nofile"),
        nproc: r.limit("nproc"),
        core: r.limit("core"),
        address_space: r.limit("as"),
    }
}

pub(super) fn pool(sink: &mut Sink, table: &DeTable<'_>, header: Span) -> Named<PoolConfig> {
    let mut s = Section::new(sink, table, header, "[[pool]]");
    let (name, name_span) = read_name(&mut s, "pool");
    s.check_keys(POOL_KEYS);
    let config = PoolConfig {
        name,
        workers: s.processes("workers", 4, 1),
        transport: s.keyword("transport", values::TRANSPORT, super::Transport::Pipe),
        worker: pool_worker(&mut s),
        queue: s.usize("queue", 1024),
        retries: s.u32("retries", 1, 0),
        max_frame: s.size("max_frame", DEFAULT_MAX_FRAME, MAX_FRAME_LIMIT),
        job_timeout: s.duration("job_timeout", Duration::from_secs(60)),
        after: super::order::after(&mut s),
    };
    Named { config, name_span }
}

/// Exactly one of `worker = "builtin:NAME"` and `command = [...]`.
fn pool_worker(s: &mut Section<'_, '_>) -> WorkerKind {
    let placeholder = WorkerKind::Builtin(String::new());
    match (s.has("worker"), s.has("command")) {
        (true, true) => {
            let later = later(s.span_of("worker"), s.span_of("command"));
            let message = format!(
                "{} sets both worker and command; keep one: worker = \"builtin:NAME\" or command = [...]",
                s.label
            );
            s.error(&later, message);
            placeholder
        }
        (false, false) => {
            let message = format!(
                "{} needs a worker: set worker = \"builtin:NAME\" or command = [...] (a program speaking the frame protocol)",
                s.label
            );
            let at = s.header.clone();
            s.error(&at, message);
            placeholder
        }
        (false, true) => s
            .command("command")
            .map_or(placeholder, WorkerKind::Command),
        (true, false) => {
            let Some((text, span)) = s.string("worker") else {
                return placeholder;
            };
            match text.strip_prefix("builtin:") {
                Some(builtin) if crate::pool::builtin::lookup(builtin).is_some() => {
                    WorkerKind::Builtin(builtin.to_string())
                }
                Some(builtin) => {
                    let hint =
                        match super::suggest::closest(builtin, &crate::pool::builtin::names()) {
                            Some(near) => format!("did you mean \"builtin:{near}\"? "),
                            None => String::new(),
                        };
                    let message = format!(
                        "no built-in worker \"{builtin}\"; {hint}built-ins: {}",
                        crate::pool::builtin::names().join(", ")
                    );
                    s.error(&span, message);
                    placeholder
                }
                _ => {
                    let message = format!(
                        "bad worker \"{text}\": use \"builtin:NAME\", or command = [...] for a program"
                    );
                    s.error(&span, message);
                    placeholder
                }
            }
        }
    }
}

fn non_empty_string(s: &mut Section<'_, '_>, key: &str) -> Option<String> {
    let (text, span) = s.string(key)?;
    if text.is_empty() {
        s.error(
            &span,
            format!("{key} must not be empty; leave it out instead"),
        );
        return None;
    }
    Some(text.to_string())
}

/// Whichever of two spans starts later in the file: the one to blame.
fn later(a: Span, b: Span) -> Span {
    if b.start > a.start {
        b
    } else {
        a
    }
}
