//! Exec'd pool workers (`command = [...]`) end to end, through the real
//! binaries: the Python example (examples/upper_worker.py, frames on
//! stdin and stdout) over the pipe transport and the Rust example
//! (examples/worker.rs, `forkd::worker`) over every transport answer
//! payloads from 0 B to 8 MiB, 2,000 pipelined jobs through two workers
//! once each and in order, and lose no job when one is SIGKILLed under
//! load; a command that does not exist is logged by name and retried
//! with a growing back-off; channel variables left in forkd's own
//! environment never reach a worker, and a worker whose channel is not
//! on stdin reads /dev/null there.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use common::pool::{
    forkctl_call, jobs_per_worker, pattern, pool_status, running_workers, start_pool, turn, Caller,
};
use common::*;

const T: Duration = Duration::from_secs(20);

/// An example worker program.
#[derive(Debug, Clone, Copy)]
enum Example {
    /// examples/upper_worker.py: speaks frames on stdin and stdout only.
    Python,
    /// examples/worker.rs: finds any transport from its environment.
    Rust,
}

/// Every transport under test, with the example workers that speak it.
const CASES: &[(&str, &[Example])] = &[
    ("pipe", &[Example::Python, Example::Rust]),
    ("mqueue", &[Example::Rust]),
    ("shm", &[Example::Rust]),
];

impl Example {
    /// The pool's `command = [...]`.
    fn command(self) -> String {
        match self {
            Example::Python => {
                let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                    .join("examples")
                    .join("upper_worker.py");
                format!("[\"python3\", \"{}\"]", script.display())
            }
            Example::Rust => format!("[\"{}\"]", rust_example().display()),
        }
    }

    /// Whether this machine can run it; says why the test skips it if not.
    fn available(self, test: &str) -> bool {
        match self {
            Example::Python => have_tool("python3", test),
            Example::Rust => true,
        }
    }
}

/// The Rust example's binary, brought up to date once per run. Cargo
/// puts examples beside the binaries, in `examples/`
/// (`target/debug/examples/worker`, whatever the target directory);
/// `cargo test --all-targets` builds it but a lone `--test pool_exec`
/// does not, so this asks cargo for it (a no-op when it is fresh).
fn rust_example() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let bin_dir = Path::new(FORKD)
            .parent()
            .expect("forkd's binary has a directory");
        let path = bin_dir.join("examples").join("worker");
        let profile = match bin_dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") | None => "dev",
            Some(other) => other,
        };
        let built = Command::new(env!("CARGO"))
            .args([
                "build",
                "--quiet",
                "--example",
                "worker",
                "--profile",
                profile,
            ])
            .arg("--target-dir")
            .arg(bin_dir.parent().expect("a target directory"))
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output();
        match built {
            Ok(out) => assert!(
                out.status.success(),
                "cargo build --example worker failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            ),
            // No cargo here (tests run from an archive): the one built with them.
            Err(e) => assert!(
                path.is_file(),
                "{} is missing and cargo cannot build it: {e}",
                path.display()
            ),
        }
        path
    })
}

/// Each (transport, example) pair this machine can run, with its name.
fn cases(test: &str) -> Vec<(&'static str, Example, String)> {
    CASES
        .iter()
        .flat_map(|(transport, examples)| examples.iter().map(move |e| (*transport, *e)))
        .filter(|(_, example)| example.available(test))
        .map(|(transport, example)| (transport, example, format!("{example:?} over {transport}")))
        .collect()
}

/// A `[[pool]]` named "upper" of `workers` exec'd `example`s.
fn upper_pool(transport: &str, example: Example, workers: usize, extra: &str) -> String {
    format!(
        "[[pool]]\nname = \"upper\"\ntransport = \"{transport}\"\nworkers = {workers}\ncommand = {}\n{extra}\n",
        example.command()
    )
}

/// The status entry of the worker whose pid is `pid`.
fn worker_status(socket: &Path, pid: i64) -> Option<serde_json::Value> {
    pool_status(socket, "upper")["workers"]
        .as_array()?
        .iter()
        .find(|w| w["pid"] == pid)
        .cloned()
}

#[test]
fn an_execd_worker_answers_payloads_from_empty_to_8_mib() {
    for (transport, example, case) in cases("an_execd_worker_answers_payloads_from_empty_to_8_mib")
    {
        let _turn = turn(transport);
        let dir = Scratch::new(&format!("pool-exec-sizes-{transport}"));
        let (_forkd, socket) = start_pool(&dir, &upper_pool(transport, example, 1, ""), "upper", 1);
        let mut caller = Caller::connect(&socket, "upper");
        for len in [0usize, 1, 64, 64 << 10, 1 << 20, 8 << 20] {
            let payload = pattern(len);
            let result = caller.call(&payload).expect("a result");
            assert_eq!(result.len(), len, "{case}: {len}-byte job");
            assert!(
                result == payload.to_ascii_uppercase(),
                "{case}: {len}-byte job's bytes"
            );
        }
        // Frames are counted, not lines: NUL, CR and LF are payload.
        let text = "a\0b\nc\r\nd\u{e9}";
        let result = caller.call(text.as_bytes()).expect("a result");
        assert_eq!(result, text.to_uppercase().as_bytes(), "{case}");
        // A job the worker cannot do fails with its reason; the next is served.
        let refused = caller.call(b"\xff\xfe").expect("a result");
        let refused = String::from_utf8_lossy(&refused);
        assert!(
            refused.starts_with("ERR not UTF-8 text: byte 0xff at offset 0"),
            "{case}: {refused}"
        );
        assert_eq!(
            caller.call(b"next").as_deref(),
            Some(&b"NEXT"[..]),
            "{case}"
        );
        let status = pool_status(&socket, "upper");
        assert_eq!(status["failed"], 1, "{case}: {status}");
    }
}

#[test]
fn two_thousand_pipelined_jobs_through_two_execd_workers_are_answered_once_each_in_order() {
    let test =
        "two_thousand_pipelined_jobs_through_two_execd_workers_are_answered_once_each_in_order";
    for (transport, example, case) in cases(test) {
        let _turn = turn(transport);
        let dir = Scratch::new(&format!("pool-exec-2k-{transport}"));
        let (_forkd, socket) = start_pool(&dir, &upper_pool(transport, example, 2, ""), "upper", 2);
        let jobs: Vec<Vec<u8>> = (0..2000)
            .map(|i| format!("job {i}: {}", "x".repeat(i % 300)).into_bytes())
            .collect();
        let mut caller = Caller::connect(&socket, "upper");
        let results = caller.run_all(jobs.clone());
        assert_eq!(results.len(), jobs.len(), "{case}");
        for (i, (job, result)) in jobs.iter().zip(&results).enumerate() {
            assert!(
                result == &job.to_ascii_uppercase(),
                "{case}: result {i} is its job's: {:?}",
                String::from_utf8_lossy(result)
            );
        }
        // Once each: the next result on the connection is the next job's.
        assert_eq!(
            caller.call(b"last").as_deref(),
            Some(&b"LAST"[..]),
            "{case}"
        );
        let status = pool_status(&socket, "upper");
        assert_eq!(status["done"], 2001, "{case}: {status}");
        assert_eq!(status["failed"], 0, "{case}: {status}");
        let per_worker = jobs_per_worker(&status);
        assert!(
            per_worker.len() == 2 && per_worker.iter().all(|&n| n > 0),
            "{case}: both workers took jobs: {per_worker:?}"
        );
    }
}

/// Sets the flag when dropped: a load thread stops when the test does.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

fn signal(pid: i64, signal: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal)
        .expect("signal a worker");
}

#[test]
fn an_execd_worker_killed_under_load_loses_no_job_and_is_replaced() {
    use nix::sys::signal::Signal;
    for (transport, example, case) in
        cases("an_execd_worker_killed_under_load_loses_no_job_and_is_replaced")
    {
        let _turn = turn(transport);
        let dir = Scratch::new(&format!("pool-exec-kill-{transport}"));
        let body = upper_pool(transport, example, 2, "retries = 1");
        let (forkd, socket) = start_pool(&dir, &body, "upper", 2);
        let job = |i: usize| {
            let mut job = format!("job {i}: ").into_bytes();
            job.extend(pattern(16 << 10));
            job
        };
        let stop = AtomicBool::new(false);
        std::thread::scope(|scope| {
            let load = scope.spawn(|| {
                let mut caller = Caller::connect(&socket, "upper");
                caller.stream(16, 200_000, &stop, job)
            });
            let _stop = StopOnDrop(&stop);
            wait_until("jobs are done", T, || {
                pool_status(&socket, "upper")["done"].as_u64() >= Some(20)
            });
            // Stopped, the victim keeps the jobs it was sent unanswered:
            // the kill lands while it holds some.
            let victim = running_workers(&socket, "upper")[0];
            signal(victim, Signal::SIGSTOP);
            let mut last = None;
            wait_until("the stopped worker holds jobs", T, || {
                let w = worker_status(&socket, victim).expect("the victim's status");
                let now = (w["jobs"].as_u64(), w["in_flight"].as_u64().unwrap_or(0));
                let held = last == Some(now) && now.1 > 0;
                last = Some(now);
                held
            });
            signal(victim, Signal::SIGKILL);
            forkd
                .log
                .wait_line(&format!("(pid {victim}) killed by SIGKILL"), T);
            wait_until("the replacement worker takes jobs", T, || {
                let pids = running_workers(&socket, "upper");
                pids.len() == 2
                    && !pids.contains(&victim)
                    && pids.iter().all(|&p| {
                        worker_status(&socket, p).is_some_and(|w| w["jobs"].as_u64() > Some(0))
                    })
            });
            stop.store(true, Ordering::Relaxed);
            let (sent, results) = load.join().expect("the load thread");
            assert_eq!(results.len(), sent.len(), "{case}: every job answered once");
            for (i, (job, result)) in sent.iter().zip(&results).enumerate() {
                assert!(
                    result == &job.to_ascii_uppercase(),
                    "{case}: result {i}: {:?}",
                    String::from_utf8_lossy(&result[..result.len().min(80)])
                );
            }
            let status = pool_status(&socket, "upper");
            assert!(
                status["retried"].as_u64() >= Some(1),
                "{case}: the victim's running job was sent again: {status}"
            );
            assert_eq!(status["failed"], 0, "{case}: {status}");
            assert_eq!(status["done"].as_u64(), Some(sent.len() as u64), "{case}");
        });
    }
}

#[test]
fn a_worker_command_that_does_not_exist_is_logged_and_retried_with_a_growing_backoff() {
    for (transport, _) in CASES {
        let _turn = turn(transport);
        let dir = Scratch::new(&format!("pool-exec-missing-{transport}"));
        let body = format!(
            "[[pool]]\nname = \"ghost\"\ntransport = \"{transport}\"\nworkers = 1\ncommand = [\"/nonexistent/forkd-pool-worker\", \"--flag\"]\n"
        );
        let (forkd, socket) = start_with_control(&dir, &body);
        let needle = "pool \"ghost\": worker #0 did not start";
        forkd.log.wait_count(needle, 4, T);
        let lines: Vec<String> = forkd
            .log
            .snapshot()
            .into_iter()
            .filter(|l| l.contains(needle))
            .take(4)
            .collect();
        for line in &lines {
            assert!(
                line.contains("cannot run \"/nonexistent/forkd-pool-worker\": exec failed")
                    && line.contains("No such file or directory"),
                "{transport}: {line}"
            );
        }
        // The delays grow, and each retry waits for the delay it
        // announced: no busy loop. The delay runs from before the failed
        // spawn each line reports, which a loaded machine makes slow, so
        // the lines' own gap may be shorter by a spawn's time; half the
        // delay still tells a back-off from a loop.
        let delays: Vec<Duration> = lines
            .iter()
            .map(|l| {
                let ms = l.rsplit("retrying in ").next().unwrap();
                let ms = ms.trim().strip_suffix("ms").expect("a delay in ms");
                Duration::from_millis(ms.parse().unwrap())
            })
            .collect();
        for k in 0..3 {
            assert!(delays[k + 1] > delays[k], "{transport}: {delays:?}");
            let gap = log_time(&lines[k + 1]).saturating_sub(log_time(&lines[k]));
            assert!(
                gap >= delays[k] / 2,
                "{transport}: retry {} came {gap:?} after the line announcing {:?}",
                k + 1,
                delays[k]
            );
        }
        let workers = pool_status(&socket, "ghost")["workers"].clone();
        assert_eq!(workers[0]["state"], "backoff", "{transport}: {workers}");
        assert_eq!(forkd.log.count("exited with code 127"), 0);
    }
}

/// A worker that closes its stdin breaks its channel at forkd's first
/// write, with a small job and with one larger than the pipe (frames left
/// queued to it): each caller gets an error, forkd kills and replaces the
/// worker once per break (no loop writing to the broken pipe again) and
/// keeps answering. Its log says forkd killed the worker, with no
/// out-of-memory guess.
#[test]
fn a_worker_that_stops_reading_fails_its_jobs_and_forkd_stays_responsive() {
    let _turn = turn("pipe");
    let dir = Scratch::new("pool-exec-deaf");
    let body = "[[pool]]\nname = \"deaf\"\nworkers = 1\njob_timeout = \"2s\"\ncommand = [\"/bin/sh\", \"-c\", \"exec 0<&-; exec sleep 30\"]\n";
    let (forkd, socket) = start_pool(&dir, body, "deaf", 1);
    for len in [5usize, 8 << 20] {
        let (code, out, err) = forkctl_call(&socket, "deaf", &pattern(len));
        assert_eq!(code, 1, "{len} B: {err}");
        assert!(out.is_empty(), "{len} B: no result");
        assert!(
            err.contains("channel broke") || err.contains("timeout"),
            "{len} B: {err}"
        );
        assert_eq!(forkctl(&socket, &["version"]).code, 0, "forkd answers");
    }
    let broke = forkd.log.count("its channel broke");
    assert!(
        (1..=20).contains(&broke),
        "one warning per break, not a loop: {broke}"
    );
    assert_eq!(forkd.log.count("perhaps out of memory"), 0);
}

/// The transports the Rust example is tested over.
fn rust_transports() -> impl Iterator<Item = &'static str> {
    CASES
        .iter()
        .filter(|(_, examples)| examples.iter().any(|e| matches!(e, Example::Rust)))
        .map(|(transport, _)| *transport)
}

#[test]
fn stale_channel_variables_in_forkds_environment_do_not_reach_its_workers() {
    // As if forkd were started from a shell that tried a worker by hand.
    let stale = [
        ("FORKD_TRANSPORT", "bogus"),
        ("FORKD_MAX_FRAME", "1"),
        ("FORKD_MQ_REQUESTS", "/forkd.stale.req"),
        ("FORKD_MQ_RESPONSES", "/forkd.stale.rsp"),
    ];
    for transport in rust_transports() {
        let _turn = turn(transport);
        let dir = Scratch::new(&format!("pool-exec-env-{transport}"));
        let body = upper_pool(transport, Example::Rust, 1, "");
        let (_forkd, socket) = start_with_control_env(&dir, &body, &stale);
        wait_until("the worker runs", T, || {
            running_workers(&socket, "upper").len() == 1
        });
        let mut caller = Caller::connect(&socket, "upper");
        assert_eq!(
            caller.call(b"fresh").as_deref(),
            Some(&b"FRESH"[..]),
            "{transport}"
        );
    }
}

#[test]
fn a_worker_whose_channel_is_not_on_stdin_reads_dev_null_not_forkds_stdin() {
    for transport in rust_transports().filter(|t| *t != "pipe") {
        let _turn = turn(transport);
        let dir = Scratch::new(&format!("pool-exec-stdin-{transport}"));
        let stdin = dir.write("forkd-stdin", "for forkd only\n");
        let (config, socket) = control_config(&dir, &upper_pool(transport, Example::Rust, 1, ""));
        let redirect = format!("exec \"$@\" < {}", stdin.display());
        let _forkd = start_forkd_under(&["sh", "-c", &redirect, "sh"], &config, &[]);
        wait_until("the worker runs", T, || {
            std::os::unix::net::UnixStream::connect(&socket).is_ok()
                && running_workers(&socket, "upper").len() == 1
        });
        let worker = running_workers(&socket, "upper")[0];
        let fd0 = std::fs::read_link(format!("/proc/{worker}/fd/0")).expect("the worker's stdin");
        assert_eq!(fd0, Path::new("/dev/null"), "{transport}");
    }
}
