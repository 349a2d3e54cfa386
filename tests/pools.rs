//! Worker pools end to end, through the real binaries, for each transport:
//! payload sizes from 0 B to 8 MiB, 10,000 jobs through 4 workers answered
//! once each and in order, a worker SIGKILLed under load losing no job,
//! a batch of jobs from one write surviving its worker's death in order,
//! "busy" from a full queue, a frame over max_frame refused while the next
//! caller is served, job_timeout, and `forkctl call`'s exit codes.

mod common;

use std::io::Write;
use std::time::Duration;

use common::pool::{
    forkctl_call, frame, jobs_per_worker, pattern, pool_status, read_frame, running_workers,
    start_pool, turn, Caller,
};
use common::*;

const T: Duration = Duration::from_secs(20);
const TRANSPORTS: &[&str] = &["pipe", "mqueue", "shm"];

fn pool(name: &str, transport: &str, extra: &str) -> String {
    format!("[[pool]]\nname = \"{name}\"\ntransport = \"{transport}\"\n{extra}\n")
}

#[test]
fn payloads_from_empty_to_8_mib_come_back_whole() {
    for transport in TRANSPORTS {
        let _turn = turn(transport);
        let dir = Scratch::new(&format!("pool-sizes-{transport}"));
        let body = pool(
            "upper",
            transport,
            "workers = 2\nworker = \"builtin:upper\"",
        );
        let (_forkd, socket) = start_pool(&dir, &body, "upper", 2);
        let mut caller = Caller::connect(&socket, "upper");
        for len in [0usize, 1, 64, 64 << 10, 1 << 20, 8 << 20] {
            let payload = pattern(len);
            let result = caller.call(&payload).expect("a result");
            assert_eq!(result.len(), len, "{transport}: {len}-byte job");
            assert!(
                result == payload.to_ascii_uppercase(),
                "{transport}: {len}-byte job's bytes"
            );
        }
        let (code, out, err) = forkctl_call(&socket, "upper", b"hello pool");
        assert_eq!(
            (code, out.as_slice()),
            (0, &b"HELLO POOL"[..]),
            "{transport}: {err}"
        );
        let (code, out, err) = forkctl_call(&socket, "upper", &pattern(3 << 20));
        assert_eq!(code, 0, "{transport}: {err}");
        assert!(
            out == pattern(3 << 20).to_ascii_uppercase(),
            "{transport}: 3 MiB through forkctl call"
        );
    }
}

#[test]
fn ten_thousand_jobs_through_four_workers_are_answered_once_each_in_order() {
    for transport in TRANSPORTS {
        let _turn = turn(transport);
        let dir = Scratch::new(&format!("pool-10k-{transport}"));
        let body = pool(
            "upper",
            transport,
            "workers = 4\nworker = \"builtin:upper\"",
        );
        let (_forkd, socket) = start_pool(&dir, &body, "upper", 4);
        let threads: Vec<_> = (0..4)
            .map(|c| {
                let socket = socket.clone();
                std::thread::spawn(move || {
                    let jobs: Vec<Vec<u8>> = (0..2500)
                        .map(|i| format!("job {c}-{i}").into_bytes())
                        .collect();
                    let results = Caller::connect(&socket, "upper").run_all(jobs.clone());
                    assert_eq!(results.len(), jobs.len());
                    for (job, result) in jobs.iter().zip(&results) {
                        assert_eq!(result, &job.to_ascii_uppercase(), "results in job order");
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("a caller thread");
        }
        let status = pool_status(&socket, "upper");
        assert_eq!(status["done"], 10_000, "{transport}: {status}");
        assert_eq!(status["failed"], 0, "{transport}: {status}");
        let per_worker = jobs_per_worker(&status);
        assert!(
            per_worker.iter().all(|&n| n > 0),
            "{transport}: every worker took jobs: {per_worker:?}"
        );
    }
}

#[test]
fn a_worker_killed_under_load_loses_no_job_and_is_replaced() {
    for transport in TRANSPORTS {
        let _turn = turn(transport);
        let dir = Scratch::new(&format!("pool-kill-{transport}"));
        // Each job sleeps 2 ms, so the kill lands while jobs are in flight.
        let body = pool(
            "slow",
            transport,
            "workers = 2\nworker = \"builtin:sleep\"\nretries = 1",
        );
        let (forkd, socket) = start_pool(&dir, &body, "slow", 2);
        let victim = running_workers(&socket, "slow")[0];
        let caller_socket = socket.clone();
        let load = std::thread::spawn(move || {
            let jobs: Vec<Vec<u8>> = (0..600).map(|_| b"2".to_vec()).collect();
            Caller::connect(&caller_socket, "slow").run_all(jobs)
        });
        wait_until("jobs are done", T, || {
            pool_status(&socket, "slow")["done"].as_u64() >= Some(50)
        });
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(victim as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        let results = load.join().unwrap();
        assert_eq!(results.len(), 600, "{transport}: every job answered");
        for r in &results {
            assert!(
                r == b"2" || r.starts_with(b"ERR worker died"),
                "{transport}: {:?}",
                String::from_utf8_lossy(r)
            );
        }
        wait_until("the killed worker is replaced", T, || {
            let pids = running_workers(&socket, "slow");
            pids.len() == 2 && !pids.contains(&victim)
        });
        let status = pool_status(&socket, "slow");
        assert!(
            status["retried"].as_u64() >= Some(1),
            "{transport}: the running job was sent again: {status}"
        );
        assert_eq!(
            status["done"].as_u64().unwrap() + status["failed"].as_u64().unwrap(),
            600
        );
        let restarts: Vec<u64> = status["workers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w["restarts"].as_u64().unwrap())
            .collect();
        assert_eq!(
            restarts.iter().sum::<u64>(),
            1,
            "{transport}: one replacement: {status}"
        );
        forkd.log.wait_line("killed by SIGKILL", T);
    }
}

#[test]
fn jobs_sent_in_one_write_come_back_in_order_when_their_worker_dies_midway() {
    for transport in TRANSPORTS {
        let _turn = turn(transport);
        let dir = Scratch::new(&format!("pool-batch-kill-{transport}"));
        let body = pool(
            "slow",
            transport,
            "workers = 2\nworker = \"builtin:sleep\"\nretries = 1",
        );
        let (_forkd, socket) = start_pool(&dir, &body, "slow", 2);
        let victim = running_workers(&socket, "slow")[0];
        // 64 jobs of 10..73 ms in one write: forkd reads them as one batch
        // and hands each worker its share together; the victim dies with
        // its share half done.
        let payloads: Vec<Vec<u8>> = (10..74)
            .map(|ms: u32| ms.to_string().into_bytes())
            .collect();
        let mut caller = Caller::connect(&socket, "slow");
        let batch: Vec<u8> = payloads.iter().flat_map(|p| frame(p)).collect();
        caller.stream.write_all(&batch).unwrap();
        wait_until("the first jobs are done", T, || {
            pool_status(&socket, "slow")["done"].as_u64() >= Some(2)
        });
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(victim as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        let results: Vec<Vec<u8>> = (0..payloads.len())
            .map(|k| {
                read_frame(&mut caller.stream).unwrap_or_else(|| panic!("{transport}: result {k}"))
            })
            .collect();
        assert_eq!(
            results, payloads,
            "{transport}: every job once, in order, none failed"
        );
        let status = pool_status(&socket, "slow");
        assert!(
            status["retried"].as_u64() >= Some(1),
            "{transport}: the victim's running job was sent again: {status}"
        );
        assert_eq!(status["done"].as_u64(), Some(64), "{transport}: {status}");
    }
}

#[test]
fn jobs_of_one_write_that_fit_the_workers_are_not_answered_busy() {
    let dir = Scratch::new("pool-batch-queue");
    // Room for 4 waiting jobs, and a few in flight per worker: 20 jobs in
    // one write fit, although they are more than the queue holds.
    let body = pool(
        "upper",
        "pipe",
        "workers = 2\nworker = \"builtin:sleep\"\nqueue = 4",
    );
    let (_forkd, socket) = start_pool(&dir, &body, "upper", 2);
    let mut caller = Caller::connect(&socket, "upper");
    let batch: Vec<u8> = (0..20).flat_map(|_| frame(b"1")).collect();
    caller.stream.write_all(&batch).unwrap();
    for k in 0..20 {
        let result = read_frame(&mut caller.stream).expect("a result");
        assert_eq!(
            result,
            b"1",
            "job {k}: {:?}",
            String::from_utf8_lossy(&result)
        );
    }
    assert_eq!(pool_status(&socket, "upper")["busy"].as_u64(), Some(0));
}

#[test]
fn a_full_queue_answers_busy_and_the_rest_are_served() {
    for transport in TRANSPORTS {
        let _turn = turn(transport);
        let dir = Scratch::new(&format!("pool-busy-{transport}"));
        let body = pool(
            "one",
            transport,
            "workers = 1\nworker = \"builtin:sleep\"\nqueue = 2",
        );
        let (_forkd, socket) = start_pool(&dir, &body, "one", 1);
        let results =
            Caller::connect(&socket, "one").run_all((0..40).map(|_| b"20".to_vec()).collect());
        assert_eq!(results.len(), 40);
        let busy = results
            .iter()
            .filter(|r| r.starts_with(b"ERR busy"))
            .count();
        let served = results.iter().filter(|r| r.as_slice() == b"20").count();
        assert!(
            busy > 0,
            "{transport}: a queue of 2 behind one worker refuses some of 40 jobs"
        );
        assert!(
            served >= 3,
            "{transport}: the worker's jobs and the queued ones are served ({served})"
        );
        assert_eq!(busy + served, 40);
        let text =
            String::from_utf8_lossy(results.iter().find(|r| r.starts_with(b"ERR busy")).unwrap());
        assert!(text.contains("queue = 2"), "{text}");
        assert_eq!(
            pool_status(&socket, "one")["busy"].as_u64(),
            Some(busy as u64)
        );
    }
}

#[test]
fn a_job_over_max_frame_is_refused_and_the_next_caller_is_served() {
    for transport in TRANSPORTS {
        let _turn = turn(transport);
        let dir = Scratch::new(&format!("pool-maxframe-{transport}"));
        let body = pool(
            "upper",
            transport,
            "worker = \"builtin:upper\"\nworkers = 1\nmax_frame = \"1KiB\"",
        );
        let (_forkd, socket) = start_pool(&dir, &body, "upper", 1);
        let mut big = Caller::connect(&socket, "upper");
        let refused = big.call(&[b'x'; 2048]).expect("an error frame");
        let text = String::from_utf8_lossy(&refused);
        assert!(
            text.starts_with("ERR a frame of 2048 bytes is over max_frame (1024 bytes)"),
            "{text}"
        );
        assert_eq!(
            common::pool::read_frame(&mut big.stream),
            None,
            "the connection is closed after the refusal"
        );
        let (code, out, err) = forkctl_call(&socket, "upper", b"next");
        assert_eq!((code, out.as_slice()), (0, &b"NEXT"[..]), "{err}");
        let (code, out, err) = forkctl_call(&socket, "upper", &[b'y'; 4096]);
        assert_eq!(code, 1, "an over-size job fails forkctl call");
        assert!(out.is_empty());
        assert!(err.contains("over max_frame"), "{err}");
    }
}

#[test]
fn a_job_over_job_timeout_fails_and_its_worker_is_replaced() {
    let dir = Scratch::new("pool-timeout");
    let body = pool(
        "slow",
        "pipe",
        "workers = 1\nworker = \"builtin:sleep\"\njob_timeout = \"300ms\"",
    );
    let (_forkd, socket) = start_pool(&dir, &body, "slow", 1);
    let before = running_workers(&socket, "slow");
    let (code, out, err) = forkctl_call(&socket, "slow", b"20000");
    assert_eq!(code, 1);
    assert!(out.is_empty());
    assert!(
        err.contains("timeout: the job ran over job_timeout (300ms)"),
        "{err}"
    );
    wait_until("a new worker runs", T, || {
        let now = running_workers(&socket, "slow");
        now.len() == 1 && now != before
    });
    let (code, out, _) = forkctl_call(&socket, "slow", b"1");
    assert_eq!((code, out.as_slice()), (0, &b"1"[..]));
}

#[test]
fn forkctl_call_names_an_unknown_pool_and_a_failed_job() {
    let dir = Scratch::new("pool-call-errors");
    let body = pool("slow", "pipe", "workers = 1\nworker = \"builtin:sleep\"");
    let (_forkd, socket) = start_pool(&dir, &body, "slow", 1);
    let (code, _, err) = forkctl_call(&socket, "nope", b"1");
    assert_eq!(code, 1);
    assert!(err.contains("no pool named \"nope\""), "{err}");
    let (code, out, err) = forkctl_call(&socket, "slow", b"later");
    assert_eq!(code, 1);
    assert!(out.is_empty());
    assert!(
        err.contains("sleep wants a number of milliseconds"),
        "{err}"
    );
}

#[test]
fn a_job_no_worker_can_take_fails_at_job_timeout_instead_of_waiting_for_good() {
    let dir = Scratch::new("pool-no-worker");
    let body = "[[pool]]\nname = \"none\"\nworkers = 1\ncommand = [\"/nonexistent/forkd-worker\"]\njob_timeout = \"300ms\"\n";
    let (forkd, socket) = start_with_control(&dir, body);
    forkd.log.wait_line("/nonexistent/forkd-worker", T);
    let (code, out, err) = forkctl_call(&socket, "none", b"job");
    assert_eq!(code, 1);
    assert!(out.is_empty());
    assert!(
        err.contains("no worker of pool none took the job within job_timeout (300ms)"),
        "{err}"
    );
}
