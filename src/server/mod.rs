//! The front end: listeners and the modes that serve their connections.
//!
//! A [`Service`] is one `[[service]]` at run time: its open [`Listener`]s
//! (owned here, in the supervisor, outliving every worker), its handler, its
//! counters and limits, and either the per-connection children of `fork`
//! mode or a pool of pre-forked workers (`prefork`, `event`, and the
//! datagram workers of `udp://` listeners) reporting through a shared-memory
//! [`Scoreboard`].
//!
//! Files: `listener.rs` opens and accepts; `fork.rs` is fork mode's accept
//! loop; `workers.rs` keeps the pool at strength; `worker.rs` is a pool
//! worker's body, with `event.rs` for multiplexed connections; `child.rs`
//! the first steps of every forked child; `scoreboard.rs` the shared slots;
//! `per_ip.rs` per-IP counts shared by every process of a service, with
//! `sockdiag.rs` asking the kernel when they look full; `shm.rs` the shared
//! mappings; `limits.rs` rate-limited log lines; `service.rs` ties
//! them together and reports status.
//!
//! Every method here is called from the supervisor's single-threaded loop
//! and returns promptly: nothing blocks, nothing sleeps. Children are
//! created with `process::fork_worker` (never returning into the loop) or
//! `process::ExecPlan`; new pids are handed to the caller, which records
//! them in its pid → owner table and later reports their exits back. This
//! module never reaps (`waitpid` is the supervisor's) and never starts a
//! thread.

mod child;
mod event;
mod fork;
pub mod limits;
pub mod listener;
mod per_ip;
pub mod scoreboard;
mod service;
mod shm;
mod sockdiag;
mod worker;
mod workers;

pub use child::setup as child_setup;
pub use listener::{display_addr, InheritedLookup, Listener, Listeners};
pub use scoreboard::Scoreboard;
pub use service::{OperatorError, Service, ServiceState};

/// What a service child is, for the supervisor's pid → owner table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A fork-mode child serving one connection (or its exec'd program).
    Connection,
    /// The pool worker in scoreboard slot `n`.
    Worker(usize),
}
