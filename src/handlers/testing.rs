//! A handler for tests only, shaped like the classic services: it opens a
//! file when built (the service's `root`) and keeps it open in its
//! children, greets each client before reading, answers `GET` with `OK`,
//! a pause, the file (sent from the open descriptor, never read into
//! memory) and `##`, `BYE` by closing, and `NO` by `NO` and a close with
//! input left unread (a lingering close). It proves the handler boundary
//! (context, kept fds, speaking first, pulled output, timers) without a
//! user-facing handler.

use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd};
use std::time::{Duration, Instant};

use super::{Context, Flow, Handler, Output, Session};
use crate::config::{Config, ServiceConfig};

pub const GREETING: &[u8] = b"HELLO\n";

/// The handler: the file it serves, opened once.
pub struct Greeter {
    file: File,
    pause: Duration,
}

impl Greeter {
    /// `pause`: the quiet time between `OK` and the file.
    pub fn new(context: &Context<'_>, pause: Duration) -> Greeter {
        let root = context.service.root.as_ref().expect("a root");
        Greeter {
            file: File::open(root).unwrap(),
            pause,
        }
    }
}

impl Handler for Greeter {
    fn name(&self) -> &'static str {
        "greeter"
    }

    fn keep_open(&self, keep: &mut dyn FnMut(BorrowedFd<'_>)) {
        keep(self.file.as_fd());
    }

    fn session(&self) -> Option<Box<dyn Session>> {
        let file = self.file.try_clone().unwrap();
        Some(Box::new(Greeting {
            file,
            pause: self.pause,
            state: State::Idle,
            refused: false,
        }))
    }
}

/// Where a `GET` is.
enum State {
    Idle,
    /// `OK` is queued; when it is out, wait.
    Told,
    /// Quiet until then, so `OK` arrives alone.
    Pausing(Instant),
}

pub struct Greeting {
    file: File,
    pause: Duration,
    state: State,
    refused: bool,
}

impl Session for Greeting {
    fn start(&mut self, out: &mut Output) -> Flow {
        out.push(GREETING);
        Flow::Continue
    }

    fn input(&mut self, data: &[u8], out: &mut Output) -> Flow {
        match data {
            b"GET" => {
                out.push(b"OK");
                self.state = State::Told;
                Flow::Continue
            }
            b"BYE" => Flow::Close,
            b"NO" => {
                out.push(b"NO");
                self.refused = true;
                Flow::Close
            }
            _ => {
                out.push(b"FAIL");
                Flow::Continue
            }
        }
    }

    fn wants_input(&self) -> bool {
        matches!(self.state, State::Idle)
    }

    fn unread_input(&self) -> bool {
        self.refused
    }

    /// Pulled: the pause starts once `OK` has left on its own.
    fn drained(&mut self, _out: &mut Output) -> Flow {
        if let State::Told = self.state {
            self.state = State::Pausing(Instant::now() + self.pause);
        }
        Flow::Continue
    }

    fn deadline(&self) -> Option<Instant> {
        match self.state {
            State::Pausing(at) => Some(at),
            _ => None,
        }
    }

    fn wake(&mut self, now: Instant, out: &mut Output) -> Flow {
        if let State::Pausing(at) = self.state {
            if now >= at {
                let len = self.file.metadata().unwrap().len();
                out.send_file(self.file.try_clone().unwrap(), 0, len);
                out.push(b"##");
                self.state = State::Idle;
            }
        }
        Flow::Continue
    }
}

/// A service config whose `root` is `file`.
pub fn service_for(file: &std::path::Path) -> ServiceConfig {
    let text = format!(
        "[[service]]\nname = \"t\"\nlisten = [\"tcp://127.0.0.1:1\"]\nhandler = \"files\"\nroot = \"{}\"\n",
        file.display()
    );
    let config = Config::parse(&text, std::path::Path::new("t.toml")).unwrap();
    config.services.into_iter().next().unwrap()
}

/// A file of `size` patterned bytes, removed on drop.
pub struct TempFile {
    pub path: std::path::PathBuf,
    pub content: Vec<u8>,
}

impl TempFile {
    pub fn new(name: &str, size: usize) -> TempFile {
        let path =
            std::env::temp_dir().join(format!("forkd-greeter-{}-{name}", std::process::id()));
        let content: Vec<u8> = (0..size).map(|i| (i % 253) as u8).collect();
        std::fs::write(&path, &content).unwrap();
        TempFile { path, content }
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    use super::*;
    use crate::handlers::{Connection, Limits, Outcome, Peer, Stream};

    /// Reads until `want` bytes arrived (or the stream ends).
    pub fn read_exactly(client: &mut UnixStream, want: usize) -> Vec<u8> {
        let mut got = vec![0u8; want];
        client.read_exact(&mut got).unwrap();
        got
    }

    #[test]
    fn a_blocking_session_greets_first_pauses_and_streams_a_file_it_keeps_open() {
        let file = TempFile::new("blocking", 3 << 20);
        let service = service_for(&file.path);
        let handler = Greeter::new(&Context::new(&service), Duration::from_millis(100));
        let mut kept = Vec::new();
        handler.keep_open(&mut |fd| kept.push(fd.as_raw_fd()));
        assert_eq!(kept, [handler.file.as_raw_fd()]);

        let (mut client, far) = UnixStream::pair().unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let limits = Limits::of(&service);
        // Test-only: a thread plays the peer; no forkd process starts one.
        let server = std::thread::spawn(move || {
            let conn = Connection {
                stream: Stream::Unix(far),
                peer: Peer::Unix,
            };
            handler.serve(conn, &limits)
        });
        // Nothing sent yet: the session speaks first.
        assert_eq!(read_exactly(&mut client, GREETING.len()), GREETING);
        client.write_all(b"GET").unwrap();
        let asked = Instant::now();
        assert_eq!(read_exactly(&mut client, 2), b"OK");
        let body = read_exactly(&mut client, file.content.len());
        assert!(
            asked.elapsed() >= Duration::from_millis(100),
            "the pause came between OK and the file"
        );
        assert!(body == file.content, "the file arrived whole and in order");
        assert_eq!(read_exactly(&mut client, 2), b"##");
        client.write_all(b"BYE").unwrap();
        assert_eq!(client.read(&mut [0u8; 8]).unwrap(), 0, "closed after BYE");
        assert_eq!(server.join().unwrap(), Outcome::Done);
    }
}
