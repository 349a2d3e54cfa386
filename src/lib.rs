//! forkd: a Unix process and IPC toolkit daemon.
//!
//! The library holds every mechanism; the `forkd` and `forkctl` binaries only
//! parse arguments and call into it. One module per mechanism:
//!
//! - [`config`]: the `forkd.toml` schema, defaults and validation;
//! - [`process`]: fork/exec, the child-side setup between fork and exec,
//!   the double fork, restart back-off;
//! - [`supervisor`]: the one single-threaded event loop that owns all state;
//! - [`lifecycle`]: the life of one worker slot (wanted, forked, replaced
//!   with back-off, retired), a pure state machine every worker pool uses;
//! - [`ipc`]: the frame codec (and, as pools land, the transports that
//!   carry frames to workers);
//! - [`control`]: the control socket protocol, its server side and the
//!   `forkctl` client;
//! - [`id_hash`]: a cheap hasher for the numbers forkd hands out itself
//!   (job ids, loop tokens);
//! - [`open_addressing`]: deletion without tombstones in the linear-probing
//!   tables the supervisor keeps outside the heap;
//! - [`logging`]: forkd's own log records (journald-aware);
//! - [`preflight`]: the warnings of `forkd --check` (commands that cannot
//!   be exec'd, tables not built yet);
//! - [`systemd`]: sd_notify, the watchdog and socket activation;
//! - [`socket_file`]: unix socket files on disk (stale or live), shared by
//!   the control socket and `unix:` listeners.
//!
//! The supervisor process never starts a thread: every forked child may run
//! Rust code safely because no other thread can hold a lock at fork time.

pub mod config;
pub mod control;
pub mod exit;
pub mod handlers;
pub mod id_hash;
pub mod ipc;
pub mod lifecycle;
pub mod logging;
pub mod open_addressing;
pub mod pool;
pub mod preflight;
pub mod process;
pub mod server;
pub mod socket_file;
pub mod supervisor;
pub mod systemd;
pub mod worker;
