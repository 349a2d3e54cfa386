//! A running `forkctl ... -f` (log, events) for tests: its stdout lines
//! arrive on a channel, read with a deadline; killed by PID and reaped
//! when dropped.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(10);

/// A running `forkctl ARGS` that follows, its stdout lines arriving on a
/// channel; killed by PID and reaped when dropped.
pub struct Follower {
    pub child: Child,
    lines: mpsc::Receiver<String>,
}

impl Follower {
    pub fn start(socket: &Path, args: &[&str]) -> Follower {
        let mut child = Command::new(super::FORKCTL)
            .arg("--socket")
            .arg(socket)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run forkctl");
        let stdout = child.stdout.take().unwrap();
        let (send, lines) = mpsc::channel();
        // Ends at EOF, when forkctl exits.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        Follower { child, lines }
    }

    /// The next line forkctl prints, within `T`.
    pub fn next_line(&self, what: &str) -> String {
        self.lines
            .recv_timeout(T)
            .unwrap_or_else(|e| panic!("no line from forkctl ({what}) within {T:?}: {e}"))
    }

    /// Waits (up to `timeout`) for forkctl to exit by itself: its status
    /// and stderr.
    pub fn wait_exit(&mut self, timeout: Duration) -> (std::process::ExitStatus, String) {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "forkctl still runs {timeout:?} after it should have exited"
            );
            super::pause();
        };
        let mut stderr = String::new();
        self.child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
        (status, stderr)
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        // Unreaped until here, so the pid is still this child's.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
