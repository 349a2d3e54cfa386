//! forkd's own log records.
