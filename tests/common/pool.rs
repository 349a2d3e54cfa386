//! Pools in tests: forkd started with a pool and its workers running,
//! the pool's `status --json` entry, turns at this user's message queues,
//! and the callers: `forkctl call` with a payload on stdin, and a
//! connection upgraded with the control socket's `call` request that
//! sends many frames and reads their results.

use std::io::{BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use super::{start_with_control, status_json, wait_until, Forkd, Scratch};

/// mqueue workers share this user's RLIMIT_MSGQUEUE (twelve workers; see
/// src/ipc/mqueue.rs): the tests of one binary take turns with their queues.
static MQUEUES: Mutex<()> = Mutex::new(());

/// Held while a test's forkd has queues of `transport`.
pub fn turn(transport: &str) -> Option<MutexGuard<'static, ()>> {
    (transport == "mqueue").then(|| MQUEUES.lock().unwrap_or_else(|e| e.into_inner()))
}

/// forkd with the pool(s) of `body`, once `workers` workers of `pool` run.
pub fn start_pool(dir: &Scratch, body: &str, pool: &str, workers: usize) -> (Forkd, PathBuf) {
    let (forkd, socket) = start_with_control(dir, body);
    wait_until("the pool's workers run", Duration::from_secs(20), || {
        running_workers(&socket, pool).len() == workers
    });
    (forkd, socket)
}

/// `pool`'s entry in `forkctl status --json`.
pub fn pool_status(socket: &Path, pool: &str) -> serde_json::Value {
    let status = status_json(socket);
    status["pools"]
        .as_array()
        .and_then(|pools| pools.iter().find(|p| p["name"] == pool).cloned())
        .unwrap_or_else(|| panic!("no pool {pool} in {status}"))
}

/// The pids of `pool`'s running workers.
pub fn running_workers(socket: &Path, pool: &str) -> Vec<i64> {
    pool_status(socket, pool)["workers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|w| w["state"] == "running")
        .filter_map(|w| w["pid"].as_i64())
        .collect()
}

/// How many jobs each worker in a pool's status entry has answered.
pub fn jobs_per_worker(status: &serde_json::Value) -> Vec<u64> {
    status["workers"]
        .as_array()
        .expect("a workers array")
        .iter()
        .map(|w| w["jobs"].as_u64().expect("a jobs count"))
        .collect()
}

/// `len` lower-case letters: a job whose upper-cased result is easy to check.
pub fn pattern(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| b"abcdefghijklmnopqrstuvwxyz"[i % 26])
        .collect()
}

/// `forkctl --socket S call POOL` with `payload` on stdin: (exit code,
/// stdout bytes, stderr text).
pub fn forkctl_call(socket: &Path, pool: &str, payload: &[u8]) -> (i32, Vec<u8>, String) {
    let mut child = Command::new(super::FORKCTL)
        .arg("--socket")
        .arg(socket)
        .args(["--timeout", "60", "call", pool])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run forkctl call");
    let mut stdin = child.stdin.take().unwrap();
    let payload = payload.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&payload);
    });
    let out = child.wait_with_output().expect("forkctl call ends");
    writer.join().unwrap();
    (
        out.status.code().unwrap_or(-1),
        out.stdout,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// One frame: 4-byte big-endian length, then the payload.
pub fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = (payload.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(payload);
    out
}

/// Reads one frame; `None` at a clean end of stream.
pub fn read_frame(r: &mut impl Read) -> Option<Vec<u8>> {
    let mut head = [0u8; 4];
    match r.read_exact(&mut head) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return None,
        Err(e) => panic!("reading a result frame: {e}"),
    }
    let mut payload = vec![0u8; u32::from_be_bytes(head) as usize];
    r.read_exact(&mut payload).expect("a whole result frame");
    Some(payload)
}

/// A connection to a pool through the control socket's `call` request.
pub struct Caller {
    pub stream: UnixStream,
}

impl Caller {
    pub fn connect(socket: &Path, pool: &str) -> Caller {
        let stream = UnixStream::connect(socket).expect("connect to the control socket");
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        let mut line = String::new();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        (&stream)
            .write_all(format!("{{\"command\":\"call\",\"pool\":\"{pool}\"}}\n").as_bytes())
            .unwrap();
        // One byte at a time up to the newline: nothing past the reply
        // may be buffered here, the frames that follow are the caller's.
        let mut byte = [0u8; 1];
        while !line.ends_with('\n') {
            reader
                .get_mut()
                .read_exact(&mut byte)
                .expect("the call reply");
            line.push(byte[0] as char);
        }
        let reply: serde_json::Value = serde_json::from_str(&line).expect("JSON reply");
        assert_eq!(reply["ok"], true, "call refused: {line}");
        Caller { stream }
    }

    /// Sends every payload (from a thread, so results are read meanwhile)
    /// and returns the results in the order they came.
    pub fn run_all(&mut self, payloads: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
        let n = payloads.len();
        let mut writer = self.stream.try_clone().unwrap();
        let sender = std::thread::spawn(move || {
            for p in payloads {
                if writer.write_all(&frame(&p)).is_err() {
                    return;
                }
            }
        });
        let mut reader = BufReader::with_capacity(1 << 16, self.stream.try_clone().unwrap());
        let mut results = Vec::with_capacity(n);
        while results.len() < n {
            match read_frame(&mut reader) {
                Some(r) => results.push(r),
                None => break,
            }
        }
        sender.join().unwrap();
        results
    }

    /// Sends `job(0)`, `job(1)`, ... with at most `window` unanswered,
    /// from a thread, until `stop` is set or `max` jobs are sent; then
    /// closes its sending side and reads results until forkd closes the
    /// connection. Returns the jobs sent and the results, in order.
    pub fn stream(
        &mut self,
        window: usize,
        max: usize,
        stop: &AtomicBool,
        job: impl Fn(usize) -> Vec<u8> + Send,
    ) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
        // One credit per unanswered job: the sender blocks at `window`.
        let (credit, credits) = std::sync::mpsc::sync_channel::<()>(window);
        let writer = self.stream.try_clone().unwrap();
        let mut reader = BufReader::with_capacity(1 << 16, self.stream.try_clone().unwrap());
        std::thread::scope(|scope| {
            let sender = scope.spawn(move || {
                let mut writer = writer;
                let mut sent = Vec::new();
                for i in 0..max {
                    if stop.load(Ordering::Relaxed) || credit.send(()).is_err() {
                        break;
                    }
                    let payload = job(i);
                    if writer.write_all(&frame(&payload)).is_err() {
                        break;
                    }
                    sent.push(payload);
                }
                let _ = writer.shutdown(std::net::Shutdown::Write);
                sent
            });
            let mut results = Vec::new();
            while let Some(result) = read_frame(&mut reader) {
                results.push(result);
                let _ = credits.try_recv();
            }
            drop(credits);
            (sender.join().expect("the sending thread"), results)
        })
    }

    /// One job, one result.
    pub fn call(&mut self, payload: &[u8]) -> Option<Vec<u8>> {
        self.stream.write_all(&frame(payload)).ok()?;
        read_frame(&mut self.stream)
    }
}
