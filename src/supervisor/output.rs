//! Program output captured through pipes: split into lines, logged with the
//! instance's name, and kept in a bounded per-instance ring for `forkctl log`.
//!
//! The read end is non-blocking and edge-triggered in the loop, so each
//! readiness event is drained until `EAGAIN`. A pipe nobody drains would
//! block the program, so output is always read, and a line longer than
//! [`MAX_LINE`] is cut into records rather than buffered without bound.
//!
//! A pipe belongs to one instance of one program value: when a reload
//! retires the program, its pipes are marked (`retire`) and what the old
//! instance writes while it drains goes to the old instance's ring and is
//! logged as `api#0 (replaced): ...`, never into its successor's ring.

use std::io::Read;

use mio::unix::pipe::Receiver;

use super::retiring::Retiring;
use super::{Instance, Program};

/// Where captured lines are kept: the programs in the table, and those
/// retiring after a reload.
pub(super) struct Rings<'a> {
    pub(super) programs: &'a mut [Program],
    pub(super) retiring: &'a mut [Retiring],
}

/// Longest record kept before a forced line break.
pub const MAX_LINE: usize = 4096;

#[derive(Debug)]
pub struct OutputPipe {
    receiver: Receiver,
    program: String,
    index: usize,
    stderr: bool,
    partial: Vec<u8>,
    /// Set once the program retired: its key and why ("replaced").
    retiring: Option<(u64, &'static str)>,
}

impl OutputPipe {
    pub fn new(receiver: Receiver, program: &str, index: usize, stderr: bool) -> OutputPipe {
        OutputPipe {
            receiver,
            program: program.to_string(),
            index,
            stderr,
            partial: Vec::new(),
            retiring: None,
        }
    }

    /// Whether this pipe is one of the table's program `name`'s (not yet
    /// retired).
    pub(super) fn belongs_to(&self, name: &str) -> bool {
        self.retiring.is_none() && self.program == name
    }

    /// From now on lines go to the retiring program with this key.
    pub(super) fn retire(&mut self, key: u64, why: &'static str) {
        self.retiring = Some((key, why));
    }

    pub fn receiver(&mut self) -> &mut Receiver {
        &mut self.receiver
    }

    /// Reads until the pipe is empty. Returns false at EOF or on error (the
    /// caller then closes the pipe).
    pub(super) fn read_available(&mut self, rings: &mut Rings<'_>, keep: usize) -> bool {
        let mut buf = [0u8; 8192];
        loop {
            match self.receiver.read(&mut buf) {
                Ok(0) => return false,
                Ok(n) => self.take(&buf[..n], rings, keep),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => return false,
            }
        }
    }

    fn take(&mut self, bytes: &[u8], rings: &mut Rings<'_>, keep: usize) {
        for &b in bytes {
            if b == b'\n' {
                self.emit(rings, keep);
            } else {
                self.partial.push(b);
                if self.partial.len() >= MAX_LINE {
                    self.emit(rings, keep);
                }
            }
        }
    }

    /// Emits an unterminated last line (at EOF).
    pub(super) fn flush_partial(&mut self, rings: &mut Rings<'_>, keep: usize) {
        if !self.partial.is_empty() {
            self.emit(rings, keep);
        }
    }

    fn emit(&mut self, rings: &mut Rings<'_>, keep: usize) {
        let line = String::from_utf8_lossy(&self.partial).into_owned();
        self.partial.clear();
        let stream = if self.stderr { " [stderr]" } else { "" };
        let why = self
            .retiring
            .map_or(String::new(), |(_, why)| format!(" ({why})"));
        log::info!("{}#{}{why}{stream}: {line}", self.program, self.index);
        if let Some(instance) = self.instance(rings) {
            instance.remember(line, keep);
        }
    }
}

impl OutputPipe {
    /// The instance whose ring this pipe's lines belong in, if it is still
    /// known.
    fn instance<'a>(&self, rings: &'a mut Rings<'_>) -> Option<&'a mut Instance> {
        let program = match self.retiring {
            None => rings
                .programs
                .iter_mut()
                .find(|p| p.config.name == self.program)?,
            Some((key, _)) => rings
                .retiring
                .iter_mut()
                .find(|r| r.key() == key)?
                .program_mut(),
        };
        program.instances.get_mut(self.index)
    }
}
