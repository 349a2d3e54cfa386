//! Inter-process channels between the supervisor and a pool's workers.
//!
//! Everything that crosses a channel is a [`frame`]: a 4-byte big-endian
//! length and that many bytes, at most `max_frame`. The transports (a pipe
//! pair, POSIX message queues, a shared-memory ring with process-shared
//! semaphores) carry frames behind one small API; each is created by the
//! supervisor before fork and inherited by the worker, or opened by name by
//! an exec'd worker. This module never forks, never logs and never blocks
//! the supervisor: its supervisor-side ends are non-blocking.

pub mod frame;

pub use frame::{Decoder, FrameError};
