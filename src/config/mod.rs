//! The `forkd.toml` schema: what the user can write, its defaults, and its
//! validation.
//!
//! This module owns the typed view of the configuration (`Config` and the
//! per-table structs), parsing from TOML with `file:line:col` errors, and
//! structural equality used by reload to tell what changed. It never touches
//! the operating system beyond reading the file: resolving users, binding
//! sockets and spawning are the jobs of `process`, `server` and `supervisor`.
//!
//! Files: `parse.rs` walks the document and owns the error types;
//! `tables.rs` and `service.rs` read one table each (`commands.rs` the
//! `command` handler's allow-list); `section.rs` holds the
//! typed, position-keeping getters; `values.rs` the value formats
//! (durations, sizes, signals, listen addresses, …); `suggest.rs` the
//! "did you mean"; `diff.rs` what a reload changes, key by key, and how
//! each key's change is applied; `plan.rs` the reload plan built from it;
//! `spell.rs` values written back as forkd.toml spells them; `handler_support.rs`
//! the one table of which handler runs in which mode and on which sockets
//! (read here, by start-up and by `handlers::build`).
//!
//! ```
//! use std::path::Path;
//! use forkd::config::Config;
//!
//! let errors = Config::parse(
//!     "[[program]]\nname = \"api\"\ncommand = [\"/bin/api\"]\nrestrat = \"always\"\n",
//!     Path::new("forkd.toml"),
//! )
//! .unwrap_err();
//! assert_eq!(
//!     errors.to_string(),
//!     "forkd.toml:4:1: unknown key \"restrat\" in [[program]] \"api\" (did you mean \"restart\"?)"
//! );
//! ```

mod commands;
mod diff;
mod handler_support;
mod order;
mod parse;
mod plan;
mod section;
mod service;
mod spell;
mod suggest;
mod tables;
#[cfg(test)]
mod tests;
mod values;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use diff::{diff, program_changes, service_changes, Apply, Change, ConfigDiff, KindDiff};
pub use handler_support::{rows as handler_rows, support, Carrier, Support, Unsupported};
pub use parse::{ConfigError, ConfigErrors};
pub use plan::{plan, Action, Entry, Plan, Status};
pub use spell::address as listen_text;

/// Where forkd reads its configuration when `--config` is not given.
pub fn default_path() -> PathBuf {
    PathBuf::from("/etc/forkd/forkd.toml")
}

/// The most processes one program, pool or service may ask for
/// (`instances`, `workers`, `max_workers`; also `forkctl scale`).
pub const MAX_PROCESSES: u32 = 1024;

/// The whole configuration file.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The file this configuration was read from (reload reads it again).
    pub path: PathBuf,
    pub daemon: DaemonConfig,
    pub programs: Vec<ProgramConfig>,
    pub pools: Vec<PoolConfig>,
    pub services: Vec<ServiceConfig>,
}

impl Config {
    /// Reads and validates `path`. Every problem found is returned, each with
    /// its `file:line:col`.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        parse::load(path)
    }

    /// Validates `text` as if it had been read from `path`.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigErrors> {
        parse::parse(text, path)
    }
}

/// Log severities, in the order syslog uses them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
}

/// `[daemon]`: settings of the forkd process itself.
#[derive(Debug, Clone, PartialEq)]
pub struct DaemonConfig {
    /// `control_socket`; `None` means the default location chosen at start.
    pub control_socket: Option<PathBuf>,
    /// `control_group`: members may use forkctl besides root and forkd's user.
    pub control_group: Option<String>,
    /// `control_read_group`: members may use forkctl's read-only commands
    /// (status, log, version); see `crate::control::access`.
    pub control_read_group: Option<String>,
    /// `stop_timeout`: default grace period for programs (default 10s).
    pub stop_timeout: Duration,
    /// `log_level` (default info).
    pub log_level: LogLevel,
    /// `log_file`: where a daemonized forkd writes its log (default: /dev/null).
    pub log_file: Option<PathBuf>,
    /// `log_lines`: output lines kept per program instance for `forkctl log` (default 200).
    pub log_lines: usize,
    /// `cgroup`: where instance cgroups are made (default auto; read at start).
    pub cgroup: CgroupSetting,
    /// `metrics_listen`: where `GET /metrics` and `GET /healthz` are
    /// served (a TCP or Unix stream address; default none; read at start).
    pub metrics_listen: Option<ListenAddr>,
}

/// `[daemon] cgroup`: whether each program instance runs in a cgroup v2
/// of its own, below which directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CgroupSetting {
    /// forkd's own cgroup, when it is delegated (writable, and forkd is
    /// the only process in it, as under systemd's `Delegate=yes`).
    Auto,
    Off,
    /// This directory, which must be a writable cgroup v2 directory.
    Path(PathBuf),
}

impl Default for DaemonConfig {
    /// The settings used when the file has no `[daemon]` table.
    fn default() -> Self {
        DaemonConfig {
            control_socket: None,
            control_group: None,
            control_read_group: None,
            stop_timeout: Duration::from_secs(10),
            log_level: LogLevel::Info,
            log_file: None,
            log_lines: 200,
            cgroup: CgroupSetting::Auto,
            metrics_listen: None,
        }
    }
}

/// When a program that exited is started again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartPolicy {
    Always,
    OnFailure,
    Never,
}

/// Where a program's stdout or stderr goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Captured through a pipe into forkd's log, one record per line.
    Log,
    /// `/dev/null`.
    Null,
    /// forkd's own stdout/stderr.
    Inherit,
    /// Appended to a file.
    File(PathBuf),
}

/// Resource limits applied to a child before exec (`[program.rlimits]`).
/// Each value sets both the soft and the hard limit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rlimits {
    pub nofile: Option<u64>,
    pub nproc: Option<u64>,
    pub core: Option<u64>,
    /// Address space (`RLIMIT_AS`), in bytes.
    pub address_space: Option<u64>,
}

/// `[[program]]`: a supervised long-running process.
#[derive(Debug, Clone, PartialEq)]
pub struct ProgramConfig {
    pub name: String,
    /// argv; `command[0]` is looked up in `PATH` when it has no slash.
    pub command: Vec<String>,
    pub restart: RestartPolicy,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    pub stable_after: Duration,
    pub start_retries: u32,
    pub instances: u32,
    /// Start with forkd (default true); false waits for `forkctl start`.
    pub autostart: bool,
    pub user: Option<String>,
    pub group: Option<String>,
    pub cwd: Option<PathBuf>,
    pub env: BTreeMap<String, String>,
    pub umask: Option<u32>,
    pub rlimits: Rlimits,
    /// Signal number sent to the process group to stop it.
    pub stop_signal: i32,
    pub stop_timeout: Duration,
    pub stdout: Output,
    pub stderr: Output,
    /// Retry a FATAL program after this long (`fatal_retry`; default off).
    pub fatal_retry: Option<Duration>,
    /// Programs or pools that must be ready before this one starts (`after`).
    pub after: Vec<String>,
    /// When this program counts as ready (`ready`).
    pub ready: Ready,
    /// With `ready = "started"`: how long it must have been up.
    pub ready_after: Duration,
    /// `pidfile`: the program daemonizes itself; its daemon's pid is read
    /// from here and supervised as the main process.
    pub pidfile: Option<PathBuf>,
    /// `start_timeout`: how long to wait for the pidfile (default 10s).
    pub start_timeout: Duration,
}

/// When a program counts as ready, for the programs that list it in `after`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ready {
    /// Up for `ready_after`.
    Started,
    /// The port accepts a connection.
    Tcp(std::net::SocketAddr),
    /// The Unix stream socket accepts a connection.
    Unix(PathBuf),
    /// `READY=1` arrived on the `NOTIFY_SOCKET` forkd gave it (sd_notify(3)).
    Notify,
}

/// How a pool talks to its workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Pipe,
    Mqueue,
    Shm,
}

impl Transport {
    /// The `transport = "..."` keyword (also what an exec'd worker finds
    /// in `FORKD_TRANSPORT`).
    pub fn keyword(self) -> &'static str {
        values::TRANSPORT
            .iter()
            .find(|(_, t)| *t == self)
            .map(|(k, _)| *k)
            .expect("every transport has a keyword")
    }

    /// The transport a keyword names.
    pub fn from_keyword(text: &str) -> Option<Transport> {
        values::TRANSPORT
            .iter()
            .find(|(k, _)| *k == text)
            .map(|(_, t)| *t)
    }
}

/// What a pool worker runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkerKind {
    /// `worker = "builtin:NAME"`.
    Builtin(String),
    /// `command = [...]`: an exec'd program speaking the frame protocol.
    Command(Vec<String>),
}

/// `[[pool]]`: workers fed over IPC.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolConfig {
    pub name: String,
    pub workers: u32,
    pub transport: Transport,
    pub worker: WorkerKind,
    /// Pending jobs beyond this are answered "busy".
    pub queue: usize,
    /// Re-dispatches of a job whose worker died.
    pub retries: u32,
    /// Largest frame payload accepted, in bytes (default 16 MiB).
    pub max_frame: u64,
    /// A job running longer has its worker killed and replaced, and fails
    /// with "timeout" (default 60s; 0 means no limit).
    pub job_timeout: Duration,
    /// Programs (or pools) that must be ready before its workers are
    /// spawned (`after`).
    pub after: Vec<String>,
}

/// One `listen` entry of a service.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ListenAddr {
    Tcp(SocketAddr),
    Udp(SocketAddr),
    Unix(PathBuf),
    /// A socket handed over by systemd, by its `FileDescriptorName=`.
    Systemd(String),
}

/// How a service's connections are served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// One forked child per connection.
    Fork,
    /// Pre-forked workers, one connection at a time each.
    Prefork,
    /// Pre-forked workers multiplexing connections with epoll.
    Event,
}

/// The built-in service a connection is handed to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandlerKind {
    Echo,
    Files,
    Ftp,
    Command,
    Chat,
    Http,
    Exec,
    Pool,
}

impl Mode {
    /// The `mode = "..."` keyword.
    pub fn keyword(self) -> &'static str {
        values::keyword_of(values::MODE, self)
    }
}

impl HandlerKind {
    /// Every kind, in the order of their keywords.
    pub const ALL: &'static [HandlerKind] = &[
        HandlerKind::Echo,
        HandlerKind::Files,
        HandlerKind::Ftp,
        HandlerKind::Command,
        HandlerKind::Chat,
        HandlerKind::Http,
        HandlerKind::Exec,
        HandlerKind::Pool,
    ];

    /// The `handler = "..."` keyword.
    pub fn keyword(self) -> &'static str {
        values::keyword_of(values::HANDLER, self)
    }
}

/// `[[service]]`: a listener and how its connections are served.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceConfig {
    pub name: String,
    pub listen: Vec<ListenAddr>,
    pub mode: Mode,
    pub handler: HandlerKind,
    /// prefork/event worker processes (default: CPU count for event, 4 for prefork).
    pub workers: u32,
    pub min_spare: Option<u32>,
    pub max_spare: Option<u32>,
    pub max_workers: Option<u32>,
    /// Connections a prefork worker serves before it is recycled (0 = never).
    pub max_requests: u64,
    pub max_connections: u32,
    pub per_ip: u32,
    pub idle_timeout: Duration,
    pub request_timeout: Duration,
    pub drain_timeout: Duration,
    pub backlog: u32,
    /// Longest line or request a handler accepts, in bytes.
    pub max_line: u64,
    pub max_frame: u64,
    /// Permission bits of a `unix:` socket file (default 0o660).
    pub socket_mode: u32,
    pub tcp_nodelay: bool,
    /// `pool` handler: the pool frames are forwarded to.
    pub pool: Option<String>,
    /// `exec` handler: the program run per connection.
    pub command: Option<Vec<String>>,
    /// `files`/`ftp`/`http` handlers: the directory served.
    pub root: Option<PathBuf>,
    /// `files` handler: the largest upload stored, in bytes.
    pub max_file_size: u64,
    /// `files` handler: whether a put replaces an existing file.
    pub overwrite: bool,
    /// `command` handler: the allow-list, by the name a client sends.
    pub commands: BTreeMap<String, AllowedCommand>,
    /// `command` handler: how long one command may run before its
    /// process group is killed.
    pub timeout: Duration,
    /// `command` handler: stdout and stderr bytes kept per command.
    pub max_output: u64,
    /// `ftp` handler: the quiet time before what follows an `OK` and
    /// before the `##` that ends a download.
    pub pause: Duration,
    /// `ftp` handler: the silence after an upload's read that ends in
    /// `##` that makes it the end of the upload.
    pub upload_quiet: Duration,
    /// `chat` handler: members one room holds at most.
    pub max_members: u32,
    /// `chat` handler: a member silent this long is dropped (zero: never).
    pub member_timeout: Duration,
    /// `http` handler: whether symlinks under the root are followed
    /// (never out of it).
    pub follow_symlinks: bool,
    /// `http` handler: replies on one connection before it closes.
    pub max_requests_per_connection: u64,
    /// `http` handler: how long a connection is kept idle between
    /// requests (0: one request per connection).
    pub keepalive_timeout: Duration,
}

/// One entry of a `command` service's `commands`: what runs for its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedCommand {
    /// The program and its fixed arguments.
    pub argv: Vec<String>,
    /// Whether the words after the name are appended to `argv`
    /// (`{ argv = [...], args = true }`); otherwise a line with more
    /// than the name is refused.
    pub args: bool,
}
