//! Exit codes shared by `forkd` and `forkctl`, one documented contract.

/// Success.
pub const OK: i32 = 0;
/// forkd: the configuration is invalid or start-up failed.
/// forkctl: the daemon refused the request (unknown name, bad state).
pub const FAILURE: i32 = 1;
/// Bad command-line usage (clap's own code).
pub const USAGE: i32 = 2;
/// forkctl: the daemon cannot be reached.
pub const UNREACHABLE: i32 = 3;
