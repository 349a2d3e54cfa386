//! Program output captured through pipes: split into lines, logged with the
//! instance's name, and kept in a bounded per-instance ring for `forkctl log`.
//!
//! The read end is non-blocking and edge-triggered in the loop, so each
//! readiness event is drained until `EAGAIN`. A pipe nobody drains would
//! block the program, so output is always read, and a line longer than
//! [`MAX_LINE`] is cut into records rather than buffered without bound.

use std::io::Read;

use mio::unix::pipe::Receiver;

use super::Program;

/// Longest record kept before a forced line break.
pub const MAX_LINE: usize = 4096;

#[derive(Debug)]
pub struct OutputPipe {
    receiver: Receiver,
    program: String,
    index: usize,
    stderr: bool,
    partial: Vec<u8>,
}

impl OutputPipe {
    pub fn new(receiver: Receiver, program: &str, index: usize, stderr: bool) -> OutputPipe {
        OutputPipe {
            receiver,
            program: program.to_string(),
            index,
            stderr,
            partial: Vec::new(),
        }
    }

    pub fn receiver(&mut self) -> &mut Receiver {
        &mut self.receiver
    }

    /// Reads until the pipe is empty. Returns false at EOF or on error (the
    /// caller then closes the pipe).
    pub fn read_available(&mut self, programs: &mut [Program], keep: usize) -> bool {
        let mut buf = [0u8; 8192];
        loop {
            match self.receiver.read(&mut buf) {
                Ok(0) => return false,
                Ok(n) => self.take(&buf[..n], programs, keep),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => return false,
            }
        }
    }

    fn take(&mut self, bytes: &[u8], programs: &mut [Program], keep: usize) {
        for &b in bytes {
            if b == b'\n' {
                self.emit(programs, keep);
            } else {
                self.partial.push(b);
                if self.partial.len() >= MAX_LINE {
                    self.emit(programs, keep);
                }
            }
        }
    }

    /// Emits an unterminated last line (at EOF).
    pub fn flush_partial(&mut self, programs: &mut [Program], keep: usize) {
        if !self.partial.is_empty() {
            self.emit(programs, keep);
        }
    }

    fn emit(&mut self, programs: &mut [Program], keep: usize) {
        let line = String::from_utf8_lossy(&self.partial).into_owned();
        self.partial.clear();
        let stream = if self.stderr { " [stderr]" } else { "" };
        log::info!("{}#{}{stream}: {line}", self.program, self.index);
        let instance = programs
            .iter_mut()
            .find(|p| p.config.name == self.program)
            .and_then(|p| p.instances.get_mut(self.index));
        if let Some(instance) = instance {
            instance.remember(line, keep);
        }
    }
}
