//! The worker side of a pool, for programs that link forkd: an exec'd
//! worker (`command = [...]`) over any transport calls [`serve`], which
//! finds its channel from the environment forkd set and answers each
//! request with the function's result until forkd closes the channel.
//!
//! ```no_run
//! fn main() -> std::process::ExitCode {
//!     forkd::worker::main(|job| Ok(job.to_ascii_uppercase()))
//! }
//! ```
//!
//! A job that fails returns `Err(reason)`; the caller gets `ERR reason`.
//! Built-in workers run the same loop in a forked child ([`serve_on`]).

use std::process::ExitCode;

use crate::ipc::{ChannelError, Child};

/// Answers requests on `channel` until it closes.
pub fn serve_on(
    channel: &mut Child,
    mut job: impl FnMut(&[u8]) -> Result<Vec<u8>, String>,
) -> Result<(), ChannelError> {
    while let Some(request) = channel.recv()? {
        match job(request) {
            Ok(result) => channel.send(&result)?,
            Err(reason) => channel.send(format!("ERR {reason}").as_bytes())?,
        }
    }
    Ok(())
}

/// Opens the channel forkd described in the environment and serves it.
pub fn serve(job: impl FnMut(&[u8]) -> Result<Vec<u8>, String>) -> Result<(), ChannelError> {
    let mut channel = Child::from_env()?;
    serve_on(&mut channel, job)
}

/// [`serve`] as a program's `main`: exit status 0 when forkd closed the
/// channel, 1 (with the reason on stderr) when the channel broke.
pub fn main(job: impl FnMut(&[u8]) -> Result<Vec<u8>, String>) -> ExitCode {
    match serve(job) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("forkd worker: {e}");
            ExitCode::FAILURE
        }
    }
}
