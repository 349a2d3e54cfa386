//! On-demand benchmark of forkd's IPC transports, not run in CI: driven
//! by `bench/ipc.py`, which sets it beside the raw C programs of
//! `bench/c/ipc_raw.c` and prints the ratios.
//!
//! One run is a parent and one forked child. The parent holds the
//! channel's [`ipc::Parent`] end in a mio `Poll`, as the supervisor does
//! (send; on readiness flush, then recv until `None`); the child holds the
//! blocking [`ipc::Child`] end and echoes every frame, set up as a
//! built-in pool worker is (`server::child_setup`: PDEATHSIG, every other
//! fd closed). Three tests, each bounded in time:
//!
//! - `rate`: 64-byte frames, `--window` (64) in flight, frames/s;
//! - `latency`: 64-byte frames, one in flight, round-trip p50 and p99;
//! - `bulk`: 1 MiB frames, `--bulk-window` (4) in flight, GB/s of payload
//!   (each frame crosses both ways; one way is counted).
//!
//! `--transport ipc-channel` runs the same tests over the ipc-channel
//! crate's byte channels (a dev-dependency, never forkd's: its ends block,
//! so the parent sends from a second thread to keep a window in flight;
//! the child is forked before that thread starts).
//!
//! Output: one `key=value` line per test, e.g.
//! `test=rate transport=pipe size=64 window=64 frames=... seconds=... per_sec=...`.
//!
//! `--pin split` runs the parent on CPU 0 and the child on CPU 1, `--pin
//! same` both on CPU 0: without pinning, round trips are bimodal (about
//! 3 or 12 µs on forkd's reference VM) by where the scheduler puts them.
//!
//! ```text
//! cargo build --release --example ipc_bench
//! target/release/examples/ipc_bench --transport shm --seconds 1
//! ```

use std::io;
use std::rc::Rc;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use forkd::ipc::{self, ChannelId, Transport};
use mio::{Events, Poll, Token};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

/// The largest frame the channels are made for (the pool default).
const MAX_FRAME: usize = 16 << 20;
const SMALL: usize = 64;
const BULK: usize = 1 << 20;
/// A step that makes no progress for this long is a failure, not a hang.
const STALL: Duration = Duration::from_secs(5);
/// Round trips kept for the latency percentiles.
const MAX_SAMPLES: usize = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Kind {
    Pipe,
    Mqueue,
    Shm,
    IpcChannel,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Test {
    Rate,
    Latency,
    Bulk,
}

/// Echo benchmark of one IPC transport between a parent and a forked child.
#[derive(Debug, Parser)]
struct Args {
    #[arg(long, value_enum)]
    transport: Kind,
    /// Measured seconds per test (after a warm-up of a fifth of it).
    #[arg(long, default_value_t = 1.0)]
    seconds: f64,
    /// 64-byte frames in flight in the rate test.
    #[arg(long, default_value_t = 64)]
    window: usize,
    /// 1 MiB frames in flight in the bulk test.
    #[arg(long, default_value_t = 4)]
    bulk_window: usize,
    /// Tests to run, in this order.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "rate,latency,bulk"
    )]
    tests: Vec<Test>,
    /// Where parent and child run: `split` (parent on CPU 0, child on
    /// CPU 1), `same` (both on CPU 0) or `none` (the scheduler's choice,
    /// which makes round trips bimodal: a wake-up across CPUs costs more).
    #[arg(long, value_enum, default_value = "none")]
    pin: Pin,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Pin {
    None,
    Same,
    Split,
}

impl Pin {
    /// The CPUs of the parent and of the child.
    fn cpus(self) -> Option<(usize, usize)> {
        match self {
            Pin::None => None,
            Pin::Same => Some((0, 0)),
            Pin::Split => Some((0, 1)),
        }
    }
}

/// Runs the calling thread (and what it forks or spawns later) on `cpu`.
fn pin_to(cpu: usize) -> io::Result<()> {
    // SAFETY: a zeroed cpu_set_t is the empty set; CPU_SET writes inside
    // it; sched_setaffinity(2) only reads it, for the calling thread (0).
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// When a test counts: after `warmup`, for `seconds`.
#[derive(Debug, Clone, Copy)]
struct Span {
    warmup: Duration,
    seconds: Duration,
}

/// Counts completions over the measured part of a pipelined test.
struct Meter {
    start_at: Instant,
    end_at: Instant,
    done: u64,
    /// (completions, time) when the measured part began and ended.
    first: Option<(u64, Instant)>,
    last: Option<(u64, Instant)>,
}

impl Meter {
    fn new(span: Span) -> Meter {
        let now = Instant::now();
        Meter {
            start_at: now + span.warmup,
            end_at: now + span.warmup + span.seconds,
            done: 0,
            first: None,
            last: None,
        }
    }

    /// `n` more completions at `now`; false once the test should stop
    /// sending.
    fn add(&mut self, n: u64, now: Instant) -> bool {
        if now >= self.start_at && self.first.is_none() {
            self.first = Some((self.done, now));
        }
        self.done += n;
        if now >= self.end_at && self.last.is_none() {
            self.last = Some((self.done, now));
        }
        self.last.is_none()
    }

    /// Completions per second over the measured part.
    fn result(&self) -> (u64, f64) {
        match (self.first, self.last) {
            (Some((a, ta)), Some((b, tb))) if tb > ta => {
                (b - a, (b - a) as f64 / (tb - ta).as_secs_f64())
            }
            _ => (0, 0.0),
        }
    }
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| b'a' + (i % 26) as u8).collect()
}

/// The echo is the request: same length, same first and last bytes (a
/// full compare of 1 MiB would measure memory bandwidth, not the channel).
fn check(got: &[u8], sent: &[u8]) -> io::Result<()> {
    let edge = sent.len().min(SMALL);
    if got.len() != sent.len()
        || got[..edge] != sent[..edge]
        || got[got.len() - edge..] != sent[sent.len() - edge..]
    {
        return Err(io::Error::other(format!(
            "a {}-byte echo came back as {} different bytes",
            sent.len(),
            got.len()
        )));
    }
    Ok(())
}

fn stalled(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        format!("{what}: no progress in {STALL:?}"),
    )
}

/// The supervisor's side of a forkd channel: the `Parent` end in a Poll.
struct ForkdParent {
    channel: ipc::Parent,
    poll: Poll,
    events: Events,
}

impl ForkdParent {
    fn send(&mut self, payload: &Rc<Vec<u8>>) -> io::Result<()> {
        self.channel
            .send(Rc::clone(payload))
            .map_err(io::Error::other)
    }

    /// One turn of the loop: wait for readiness, flush what is queued,
    /// take in every whole response (the supervisor's `channel_ready`).
    fn turn(&mut self, got: &mut Vec<Vec<u8>>) -> io::Result<()> {
        self.poll.poll(&mut self.events, Some(STALL))?;
        if self.events.is_empty() {
            return Err(stalled("waiting for the channel"));
        }
        self.channel.flush().map_err(io::Error::other)?;
        while let Some(frame) = self.channel.recv().map_err(io::Error::other)? {
            got.push(frame);
        }
        Ok(())
    }

    fn pipelined(&mut self, size: usize, window: usize, span: Span) -> io::Result<(u64, f64)> {
        let payload = Rc::new(pattern(size));
        let mut meter = Meter::new(span);
        let mut got = Vec::new();
        let mut in_flight = 0;
        let mut sending = true;
        loop {
            while sending && in_flight < window {
                self.send(&payload)?;
                in_flight += 1;
            }
            if in_flight == 0 {
                return Ok(meter.result());
            }
            self.turn(&mut got)?;
            let n = got.len();
            for frame in got.drain(..) {
                check(&frame, &payload)?;
            }
            in_flight -= n;
            sending = meter.add(n as u64, Instant::now()) && sending;
        }
    }
}

/// Round trips of one frame at a time, in microseconds, sorted.
fn percentiles(mut samples: Vec<f64>) -> (usize, f64, f64) {
    samples.sort_by(f64::total_cmp);
    let at = |p: f64| {
        samples
            .get(((samples.len() as f64 * p) as usize).min(samples.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0.0)
    };
    (samples.len(), at(0.50), at(0.99))
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    // As forkd's supervisor does at start.
    forkd::ipc::tune_allocator_for_frames();
    let seconds_ok = args.seconds > 0.0 && args.seconds <= 30.0;
    if !seconds_ok || !(1..=4096).contains(&args.window) || !(1..=64).contains(&args.bulk_window) {
        eprintln!("ipc_bench: --seconds in (0, 30], --window 1..4096, --bulk-window 1..64");
        return std::process::ExitCode::from(2);
    }
    match run(&args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ipc_bench: {}: {e}", name(args.transport));
            std::process::ExitCode::FAILURE
        }
    }
}

fn name(kind: Kind) -> &'static str {
    match kind {
        Kind::Pipe => "pipe",
        Kind::Mqueue => "mqueue",
        Kind::Shm => "shm",
        Kind::IpcChannel => "ipc-channel",
    }
}

fn run(args: &Args) -> io::Result<()> {
    let seconds = Duration::from_secs_f64(args.seconds);
    let span = Span {
        warmup: seconds / 5,
        seconds,
    };
    let transport = match args.transport {
        Kind::Pipe => Transport::Pipe,
        Kind::Mqueue => Transport::Mqueue,
        Kind::Shm => Transport::Shm,
        Kind::IpcChannel => return ipc_channel_side::run(args, span),
    };
    let id = ChannelId {
        pid: std::process::id(),
        pool: "ipcbench",
        worker: 0,
    };
    let (channel, child) = ipc::channel(transport, id, MAX_FRAME)?;
    let pid = fork_echo(child, args.pin)?;
    if let Some((cpu, _)) = args.pin.cpus() {
        pin_to(cpu)?;
    }
    let result = (|| {
        let poll = Poll::new()?;
        let mut parent = ForkdParent {
            channel,
            poll,
            events: Events::with_capacity(16),
        };
        parent.channel.register(parent.poll.registry(), Token(0))?;
        for &test in &args.tests {
            forkd_test(&mut parent, name(args.transport), test, args, span)?;
        }
        Ok(())
        // `parent` drops here: the channel closes and the child sees its end.
    })();
    reap(pid);
    result
}

fn forkd_test(
    parent: &mut ForkdParent,
    transport: &str,
    test: Test,
    args: &Args,
    span: Span,
) -> io::Result<()> {
    match test {
        Test::Rate | Test::Bulk => {
            let (size, window) = if test == Test::Rate {
                (SMALL, args.window)
            } else {
                (BULK, args.bulk_window)
            };
            let (frames, per_sec) = parent.pipelined(size, window, span)?;
            print_pipelined(test, transport, size, window, frames, per_sec);
        }
        Test::Latency => {
            let payload = Rc::new(pattern(SMALL));
            let mut samples = Vec::new();
            let mut got = Vec::new();
            let begin = Instant::now();
            while begin.elapsed() < span.warmup + span.seconds && samples.len() < MAX_SAMPLES {
                let sent = Instant::now();
                parent.send(&payload)?;
                while got.is_empty() {
                    parent.turn(&mut got)?;
                }
                let micros = sent.elapsed().as_secs_f64() * 1e6;
                for frame in got.drain(..) {
                    check(&frame, &payload)?;
                }
                if begin.elapsed() >= span.warmup {
                    samples.push(micros);
                }
            }
            print_latency(transport, samples);
        }
    }
    Ok(())
}

fn print_pipelined(test: Test, transport: &str, size: usize, window: usize, n: u64, rate: f64) {
    let seconds = if rate > 0.0 { n as f64 / rate } else { 0.0 };
    let test = if test == Test::Rate { "rate" } else { "bulk" };
    println!(
        "test={test} transport={transport} size={size} window={window} frames={n} seconds={seconds:.3} per_sec={rate:.0} gb_per_sec={:.3}",
        rate * size as f64 / 1e9
    );
}

fn print_latency(transport: &str, samples: Vec<f64>) {
    let (n, p50, p99) = percentiles(samples);
    println!("test=latency transport={transport} size={SMALL} samples={n} p50_us={p50:.2} p99_us={p99:.2}");
}

/// Forks the echoing child, set up as a built-in pool worker is.
fn fork_echo(mut child: ipc::Child, pin: Pin) -> io::Result<Pid> {
    let parent = nix::unistd::getpid();
    forkd::process::fork_worker(move || {
        if let Some((_, cpu)) = pin.cpus() {
            if pin_to(cpu).is_err() {
                return 1;
            }
        }
        let mut keep = child.fds();
        if !forkd::server::child_setup(parent, &mut keep, false) {
            return 1;
        }
        // The echo sends the request itself back, so it takes it owned
        // (a lent one would be gone once the channel is used): as raw's
        // echo, a large frame is not copied again.
        loop {
            match child.recv_owned() {
                Ok(Some(frame)) => {
                    if child.send(&frame).is_err() {
                        return 1;
                    }
                }
                Ok(None) => return 0,
                Err(_) => return 1,
            }
        }
    })
}

/// Waits up to two seconds for the child to leave by itself, then kills it.
fn reap(pid: Pid) {
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => std::thread::sleep(Duration::from_millis(5)),
            _ => return,
        }
    }
    let _ = kill(pid, Signal::SIGKILL);
    let _ = waitpid(pid, None);
}

/// The same tests over ipc-channel's byte channels.
mod ipc_channel_side {
    use std::io;
    use std::sync::mpsc;
    use std::time::Instant;

    use ipc_channel::ipc::{bytes_channel, IpcBytesReceiver, IpcBytesSender};

    use super::*;

    fn err(e: impl std::fmt::Display) -> io::Error {
        io::Error::other(e.to_string())
    }

    pub fn run(args: &Args, span: Span) -> io::Result<()> {
        let (requests, child_requests) = bytes_channel()?;
        let (child_responses, responses) = bytes_channel()?;
        let pid = forkd::process::fork_worker(move || {
            // The parent's ends stay open here too (ipc-channel does not
            // expose their fds), so the end is a kill, not an EOF.
            let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
            if let Some((_, cpu)) = args.pin.cpus() {
                if pin_to(cpu).is_err() {
                    return 1;
                }
            }
            while let Ok(frame) = child_requests.recv() {
                if child_responses.send(&frame).is_err() {
                    return 1;
                }
            }
            0
        })?;
        if let Some((cpu, _)) = args.pin.cpus() {
            pin_to(cpu)?;
        }
        let result = (|| {
            for &test in &args.tests {
                match test {
                    Test::Rate => {
                        let (n, rate) = pipelined(&requests, &responses, SMALL, args.window, span)?;
                        print_pipelined(test, "ipc-channel", SMALL, args.window, n, rate);
                    }
                    Test::Bulk => {
                        let window = args.bulk_window;
                        let (n, rate) = pipelined(&requests, &responses, BULK, window, span)?;
                        print_pipelined(test, "ipc-channel", BULK, window, n, rate);
                    }
                    Test::Latency => {
                        let payload = pattern(SMALL);
                        let mut samples = Vec::new();
                        let begin = Instant::now();
                        while begin.elapsed() < span.warmup + span.seconds
                            && samples.len() < MAX_SAMPLES
                        {
                            let sent = Instant::now();
                            requests.send(&payload)?;
                            let frame = responses.recv().map_err(err)?;
                            let micros = sent.elapsed().as_secs_f64() * 1e6;
                            check(&frame, &payload)?;
                            if begin.elapsed() >= span.warmup {
                                samples.push(micros);
                            }
                        }
                        print_latency("ipc-channel", samples);
                    }
                }
            }
            Ok(())
        })();
        let _ = kill(pid, Signal::SIGKILL);
        reap(pid);
        result
    }

    /// A sender thread sends one frame per credit; this thread receives,
    /// checks and hands a credit back while the test runs.
    fn pipelined(
        requests: &IpcBytesSender,
        responses: &IpcBytesReceiver,
        size: usize,
        window: usize,
        span: Span,
    ) -> io::Result<(u64, f64)> {
        let payload = pattern(size);
        std::thread::scope(|scope| {
            let (credits, credit_rx) = mpsc::channel::<()>();
            let sender = scope.spawn(|| {
                for () in credit_rx {
                    requests.send(&payload)?;
                }
                io::Result::Ok(())
            });
            let mut meter = Meter::new(span);
            let mut in_flight = 0;
            let mut sending = true;
            let outcome = loop {
                while sending && in_flight < window {
                    if credits.send(()).is_err() {
                        break;
                    }
                    in_flight += 1;
                }
                if in_flight == 0 {
                    break Ok(meter.result());
                }
                let frame = match responses.recv() {
                    Ok(frame) => frame,
                    Err(e) => break Err(err(e)),
                };
                if let Err(e) = check(&frame, &payload) {
                    break Err(e);
                }
                in_flight -= 1;
                sending = meter.add(1, Instant::now()) && sending;
            };
            drop(credits);
            // A failed send ends the sender early; its error says more
            // than the stalled receive it causes here.
            sender
                .join()
                .map_err(|_| err("the sender thread panicked"))??;
            outcome
        })
    }
}
