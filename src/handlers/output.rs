//! What a session has queued for its client, written as the socket takes
//! it: runs of bytes, and ranges of open files sent with sendfile(2), so a
//! large file goes from the page cache to the socket and is never read
//! into forkd's memory whole (pread(2) into a small buffer where sendfile
//! does not fit, e.g. a file system without it).
//!
//! An [`Output`] belongs to one connection. Sessions append to it; the
//! driver (`server`'s event loop, or the blocking driver of one
//! connection) calls [`Output::write_to`] when the socket is writable and
//! tells the session when everything is out (`Session::drained`), which is
//! where a session that streams queues its next part. Bytes appended back
//! to back join one run, so many small replies are one write(2); the last
//! run's buffer is kept when it drains, so a connection that answers read
//! after read allocates once. Never blocks: a non-blocking socket that is
//! full ends the call.

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::fs::FileExt;

/// Bytes handed to one sendfile(2) call at most (the socket takes what it
/// has room for anyway; this bounds a call on a fast local peer).
const SENDFILE_CHUNK: usize = 1 << 20;
/// The fallback's read size.
const COPY_CHUNK: usize = 16 << 10;

/// One thing to send.
#[derive(Debug)]
enum Item {
    Bytes(Vec<u8>),
    File(FileRange),
}

/// `len` bytes of `file` from `offset`.
#[derive(Debug)]
struct FileRange {
    file: File,
    offset: u64,
    len: u64,
}

/// A connection's pending output, oldest first.
#[derive(Debug, Default)]
pub struct Output {
    items: VecDeque<Item>,
    /// Bytes of the front run already written.
    sent: usize,
    /// A drained run's buffer, for the next run: a reply of head and file
    /// range after another allocates nothing.
    spare: Vec<u8>,
}

/// What one [`Output::write_to`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    /// Bytes written (progress, for the driver's timeouts).
    pub bytes: u64,
    /// Nothing is left: the session may queue more.
    pub drained: bool,
}

impl Output {
    pub fn new() -> Output {
        Output::default()
    }

    pub fn is_empty(&self) -> bool {
        match self.items.front() {
            None => true,
            Some(Item::Bytes(run)) => self.items.len() == 1 && run.len() == self.sent,
            Some(Item::File(_)) => false,
        }
    }

    /// The byte run at the back, to append to (`frame::encode` and
    /// friends write into a `Vec`).
    pub fn bytes(&mut self) -> &mut Vec<u8> {
        if !matches!(self.items.back(), Some(Item::Bytes(_))) {
            self.items
                .push_back(Item::Bytes(std::mem::take(&mut self.spare)));
        }
        match self.items.back_mut() {
            Some(Item::Bytes(run)) => run,
            _ => unreachable!("a byte run was pushed just above"),
        }
    }

    /// Appends `data`.
    pub fn push(&mut self, data: &[u8]) {
        self.bytes().extend_from_slice(data);
    }

    /// Queues `len` bytes of `file` from `offset`, after what is queued.
    /// The file is closed once they are sent (or the connection ends); if
    /// it turns out shorter, the write fails with `UnexpectedEof` (the
    /// client was promised `len` bytes: its connection must end).
    pub fn send_file(&mut self, file: File, offset: u64, len: u64) {
        if len > 0 {
            self.items
                .push_back(Item::File(FileRange { file, offset, len }));
        }
    }

    /// Drops everything queued.
    pub fn clear(&mut self) {
        self.items.clear();
        self.sent = 0;
    }

    /// Writes what `socket` (non-blocking) takes, in order. `Err`: the
    /// connection is broken or a file ended early.
    pub fn write_to(&mut self, socket: BorrowedFd<'_>) -> io::Result<Written> {
        let mut bytes = 0;
        loop {
            let only = self.items.len() == 1;
            let step = match self.items.front_mut() {
                None => Ok(Some(0)),
                Some(Item::Bytes(run)) if self.sent == run.len() => {
                    if only {
                        // Kept for the next reply: no allocation per read.
                        run.clear();
                        self.sent = 0;
                        return Ok(Written {
                            bytes,
                            drained: true,
                        });
                    }
                    if let Some(Item::Bytes(mut run)) = self.items.pop_front() {
                        if run.capacity() > self.spare.capacity() {
                            run.clear();
                            self.spare = run;
                        }
                    }
                    self.sent = 0;
                    continue;
                }
                // A run before a file range (a reply's head) is corked
                // with MSG_MORE, to leave in one segment with the range's
                // first bytes.
                Some(Item::Bytes(run)) => write(socket, &run[self.sent..], !only).map(|n| {
                    self.sent += n.unwrap_or(0);
                    n.map(|n| n as u64)
                }),
                Some(Item::File(range)) => range.send(socket),
            };
            match step {
                Ok(Some(0)) if self.items.is_empty() => {
                    return Ok(Written {
                        bytes,
                        drained: true,
                    })
                }
                Ok(Some(n)) => {
                    bytes += n;
                    if let Some(Item::File(range)) = self.items.front() {
                        if range.len == 0 {
                            self.items.pop_front();
                        }
                    }
                }
                Ok(None) => {
                    return Ok(Written {
                        bytes,
                        drained: false,
                    })
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// One write(2) (send(2) with MSG_MORE when `more` follows); `Ok(None)`
/// when the socket is full.
fn write(socket: BorrowedFd<'_>, data: &[u8], more: bool) -> io::Result<Option<usize>> {
    loop {
        let written = if more {
            match send_more(socket, data) {
                // Not a socket (a pipe in a test): a plain write.
                Err(nix::errno::Errno::ENOTSOCK) => nix::unistd::write(socket, data),
                other => other,
            }
        } else {
            nix::unistd::write(socket, data)
        };
        return match written {
            Ok(0) => Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => Ok(Some(n)),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(nix::errno::Errno::EAGAIN) => Ok(None),
            Err(e) => Err(e.into()),
        };
    }
}

/// send(2) with MSG_MORE (which nix's `MsgFlags` lacks).
fn send_more(socket: BorrowedFd<'_>, data: &[u8]) -> nix::Result<usize> {
    // SAFETY: `data` is readable for its length and the fd is open
    // (borrowed); send(2) only reads those bytes.
    let n = unsafe {
        libc::send(
            socket.as_raw_fd(),
            data.as_ptr().cast(),
            data.len(),
            libc::MSG_MORE,
        )
    };
    nix::errno::Errno::result(n).map(|n| n as usize)
}

impl FileRange {
    /// One sendfile(2) (or pread + write); `Ok(None)` when the socket is full.
    fn send(&mut self, socket: BorrowedFd<'_>) -> io::Result<Option<u64>> {
        let count = usize::try_from(self.len).map_or(SENDFILE_CHUNK, |n| n.min(SENDFILE_CHUNK));
        let mut offset =
            i64::try_from(self.offset).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let sent = loop {
            match nix::sys::sendfile::sendfile64(socket, &self.file, Some(&mut offset), count) {
                Ok(n) => break n,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(nix::errno::Errno::EAGAIN) => return Ok(None),
                // This file (or socket) has no sendfile: copy through a buffer.
                Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOSYS) => {
                    return self.copy(socket, count)
                }
                Err(e) => return Err(e.into()),
            }
        };
        self.advance(sent)
    }

    fn copy(&mut self, socket: BorrowedFd<'_>, count: usize) -> io::Result<Option<u64>> {
        let mut buf = [0u8; COPY_CHUNK];
        let want = count.min(buf.len());
        let read = self.file.read_at(&mut buf[..want], self.offset)?;
        if read == 0 {
            return self.advance(0);
        }
        match write(socket, &buf[..read], false)? {
            Some(n) => self.advance(n),
            None => Ok(None),
        }
    }

    fn advance(&mut self, n: usize) -> io::Result<Option<u64>> {
        if n == 0 {
            let fd = self.file.as_raw_fd();
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("file (fd {fd}) ended {} bytes early", self.len),
            ));
        }
        self.offset += n as u64;
        self.len -= n as u64;
        Ok(Some(n as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;

    fn temp_file(name: &str, content: &[u8]) -> (File, std::path::PathBuf) {
        let path = std::env::temp_dir().join(format!("forkd-output-{}-{name}", std::process::id()));
        std::fs::File::create(&path)
            .unwrap()
            .write_all(content)
            .unwrap();
        (File::open(&path).unwrap(), path)
    }

    /// Writes `out` into a small socket buffer while a reader drains it,
    /// as a driver would on EPOLLOUT.
    fn drain(out: &mut Output) -> Vec<u8> {
        let (near, mut far) = UnixStream::pair().unwrap();
        near.set_nonblocking(true).unwrap();
        far.set_nonblocking(true).unwrap();
        let mut got = Vec::new();
        let mut buf = vec![0u8; 64 << 10];
        let mut writes = 0;
        loop {
            let written = out.write_to(near.as_fd()).unwrap();
            writes += 1;
            loop {
                match far.read(&mut buf) {
                    Ok(n) if n > 0 => got.extend_from_slice(&buf[..n]),
                    _ => break,
                }
            }
            if written.drained {
                break;
            }
        }
        assert!(writes > 1, "the socket filled up at least once");
        got
    }

    #[test]
    fn bytes_and_file_ranges_leave_in_order_as_the_socket_drains() {
        let content: Vec<u8> = (0..3 << 20).map(|i| (i % 251) as u8).collect();
        let (file, path) = temp_file("ranges", &content);
        let mut out = Output::new();
        out.push(b"header ");
        out.send_file(file.try_clone().unwrap(), 10, content.len() as u64 - 10);
        out.push(b" and ");
        out.send_file(file, 0, 5);
        out.push(b"##");
        assert!(!out.is_empty());
        let got = drain(&mut out);
        let mut want = b"header ".to_vec();
        want.extend_from_slice(&content[10..]);
        want.extend_from_slice(b" and ");
        want.extend_from_slice(&content[..5]);
        want.extend_from_slice(b"##");
        assert!(got == want, "{} bytes, wanted {}", got.len(), want.len());
        assert!(out.is_empty());
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn a_file_shorter_than_promised_fails_the_write() {
        let (file, path) = temp_file("short", b"abc");
        let (near, _far) = UnixStream::pair().unwrap();
        let mut out = Output::new();
        out.send_file(file, 0, 10);
        let e = out.write_to(near.as_fd()).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn the_last_run_is_kept_for_the_next_reply() {
        let (near, _far) = UnixStream::pair().unwrap();
        near.set_nonblocking(true).unwrap();
        let mut out = Output::new();
        out.push(b"one");
        let capacity = out.bytes().capacity();
        assert!(out.write_to(near.as_fd()).unwrap().drained);
        assert!(out.is_empty());
        assert_eq!(out.bytes().capacity(), capacity, "the buffer is reused");
    }
}
