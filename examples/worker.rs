//! A forkd pool worker in Rust: upper-cases UTF-8 text, over any
//! transport (pipe, mqueue or shm: `forkd::worker` finds its channel from
//! the environment forkd sets).
//!
//! Build it with `cargo build --release --example worker` and configure
//! it in forkd.toml:
//!
//! ```toml
//! [[pool]]
//! name      = "upper"
//! transport = "mqueue"          # or "pipe", "shm"
//! command   = ["/path/to/target/release/examples/worker"]
//! ```
//!
//! then try it with `echo -n hello | forkctl call upper`. A job that is
//! not UTF-8 fails: the caller gets `ERR not UTF-8 text: ...`. The worker
//! exits 0 when forkd closes its channel, 1 if the channel breaks. Over
//! the pipe transport stdout is the channel: write diagnostics to stderr.

use std::process::ExitCode;

fn main() -> ExitCode {
    forkd::worker::main(|job| match std::str::from_utf8(job) {
        Ok(text) => Ok(text.to_uppercase().into_bytes()),
        Err(e) => Err(format!(
            "not UTF-8 text: byte {:#04x} at offset {}",
            job[e.valid_up_to()],
            e.valid_up_to()
        )),
    })
}
