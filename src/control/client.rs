//! `forkctl`'s end of the control socket: a blocking client that sends one
//! request line and reads one reply line, with a read timeout. It runs only
//! in the forkctl process (never in forkd) and starts no thread.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use super::{Request, MAX_REPLY};

/// How long a reply may take before the daemon counts as unreachable.
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a request got no usable reply.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing (usable) answers at the path: forkctl exits 3.
    #[error("cannot reach forkd at {}: {why}", path.display())]
    Unreachable { path: PathBuf, why: String },
    /// The daemon answered, and said no: forkctl exits 1.
    #[error("{message}")]
    Refused {
        kind: String,
        message: String,
        reply: Value,
    },
}

/// One connection to forkd's control socket.
pub struct Client {
    path: PathBuf,
    reader: BufReader<UnixStream>,
}

impl Client {
    pub fn connect(path: &Path) -> Result<Client, ClientError> {
        let unreachable = |why: String| ClientError::Unreachable {
            path: path.to_path_buf(),
            why,
        };
        let stream = UnixStream::connect(path).map_err(|e| unreachable(explain_connect(&e)))?;
        stream
            .set_read_timeout(Some(REPLY_TIMEOUT))
            .map_err(|e| unreachable(e.to_string()))?;
        Ok(Client {
            path: path.to_path_buf(),
            reader: BufReader::new(stream),
        })
    }

    /// Sends `request`; returns the reply and its raw line, or why not.
    pub fn request(&mut self, request: &Request) -> Result<(Value, String), ClientError> {
        let mut line = serde_json::to_vec(request).expect("requests serialize");
        line.push(b'\n');
        // A refused peer is answered and closed before its request is read,
        // so a failed write still leaves a reply to read.
        let write_error = self.reader.get_mut().write_all(&line).err();
        let mut reply = String::new();
        let read = (&mut self.reader)
            .take(MAX_REPLY as u64 + 1)
            .read_line(&mut reply);
        let unreachable = |why: String| ClientError::Unreachable {
            path: self.path.clone(),
            why,
        };
        match read {
            Ok(0) => {
                let why = match write_error {
                    Some(e) => format!("sending the request failed: {e}"),
                    None => "forkd closed the connection without replying".into(),
                };
                return Err(unreachable(why));
            }
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(unreachable(format!(
                    "no reply within {}s",
                    REPLY_TIMEOUT.as_secs()
                )))
            }
            Err(e) => return Err(unreachable(format!("reading the reply failed: {e}"))),
        }
        let value: Value = serde_json::from_str(&reply).map_err(|e| {
            unreachable(format!(
                "the reply is not JSON ({e}); is this forkd's control socket?"
            ))
        })?;
        if value["ok"] == Value::Bool(true) {
            return Ok((value, reply.trim_end().to_string()));
        }
        Err(ClientError::Refused {
            kind: value["kind"].as_str().unwrap_or("failed").to_string(),
            message: value["error"]
                .as_str()
                .unwrap_or("forkd refused the request")
                .to_string(),
            reply: value,
        })
    }
}

impl Client {
    /// Runs one job after a `call` request was accepted: sends `payload`
    /// as a frame and waits up to `timeout` for the result frame.
    pub fn job(&mut self, payload: &[u8], timeout: std::time::Duration) -> Result<Vec<u8>, String> {
        let stream = self.reader.get_mut();
        // forkd may refuse a job (over max_frame) before all of it is
        // sent: its answer is still there to read after a failed write.
        let sent = crate::ipc::frame::write_frame(stream, payload);
        stream
            .set_read_timeout(Some(timeout))
            .map_err(|e| e.to_string())?;
        match crate::ipc::frame::read_frame(&mut self.reader, u32::MAX as usize) {
            Ok(Some(result)) => Ok(result),
            Ok(None) => Err(match sent {
                Err(e) => format!("sending the job failed: {e}"),
                Ok(()) => "forkd closed the connection before the result".into(),
            }),
            Err(crate::ipc::FrameError::Io(e))
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                Err(format!(
                    "no result within {}s (--timeout)",
                    timeout.as_secs()
                ))
            }
            Err(e) => Err(format!("reading the result failed: {e}")),
        }
    }
}

/// connect(2)'s errno in the operator's words, with what to do.
fn explain_connect(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::ENOENT) => "no such socket: is forkd running? (use --socket PATH or FORKD_SOCKET if it listens elsewhere; see [daemon] control_socket)".into(),
        Some(libc::ECONNREFUSED) => "connection refused: nothing listens there (forkd is not running; the socket file is left from an earlier run)".into(),
        Some(libc::EACCES) | Some(libc::EPERM) => "permission denied: run as root or forkd's user, or join its control_group (or control_read_group, for status, log and version)".into(),
        Some(libc::ENOTDIR) | Some(libc::ENOTSOCK) => format!("not a socket ({e})"),
        _ => e.to_string(),
    }
}

/// Starts a connection only to learn whether forkd still listens.
pub fn answers(path: &Path) -> bool {
    UnixStream::connect(path).is_ok()
}
