//! Pools change while they work: `forkctl scale POOL N`, and reloads that
//! add, remove and change pools under load without losing a job.

mod common;

use std::time::Duration;

use common::pool::{forkctl_call, Caller};
use common::*;

const T: Duration = Duration::from_secs(20);

fn pool_status(socket: &std::path::Path, pool: &str) -> Option<serde_json::Value> {
    let status = status_json(socket);
    status["pools"]
        .as_array()
        .and_then(|pools| pools.iter().find(|p| p["name"] == pool).cloned())
}

fn worker_pids(socket: &std::path::Path, pool: &str, state: &str) -> Vec<i64> {
    pool_status(socket, pool)
        .map(|p| {
            p["workers"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|w| w["state"] == state)
                .filter_map(|w| w["pid"].as_i64())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn scale_grows_and_shrinks_a_pool_and_the_retired_workers_are_reaped() {
    let dir = Scratch::new("pool-scale");
    let body = "[[pool]]\nname = \"upper\"\nworkers = 2\nworker = \"builtin:upper\"\n";
    let (forkd, socket) = start_with_control(&dir, body);
    wait_until("2 workers", T, || {
        worker_pids(&socket, "upper", "running").len() == 2
    });
    let out = forkctl(&socket, &["scale", "upper", "4"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout.contains("upper: 2 → 4 worker(s)"),
        "{}",
        out.stdout
    );
    wait_until("4 workers", T, || {
        worker_pids(&socket, "upper", "running").len() == 4
    });
    let four = worker_pids(&socket, "upper", "running");
    let out = forkctl(&socket, &["scale", "upper", "1"]);
    assert_eq!(out.code, 0, "{out:?}");
    wait_until("1 worker left", T, || {
        let workers = pool_status(&socket, "upper").unwrap()["workers"]
            .as_array()
            .unwrap()
            .len();
        workers == 1
    });
    for pid in &four[1..] {
        wait_until("a retired worker is gone", T, || !alive(*pid as i32));
    }
    assert!(zombies_below(forkd.pid()).is_empty());
    let (code, out, err) = forkctl_call(&socket, "upper", b"still here");
    assert_eq!((code, out.as_slice()), (0, &b"STILL HERE"[..]), "{err}");
}

#[test]
fn a_reload_changes_adds_and_removes_pools_under_load_and_loses_no_job() {
    let dir = Scratch::new("pool-reload");
    // sleep and echo both answer a job with its payload: the results
    // cannot tell old workers from new ones, only whether each came back.
    let before = "[[pool]]\nname = \"work\"\nworkers = 2\nworker = \"builtin:sleep\"\n\n[[pool]]\nname = \"old\"\nworker = \"builtin:upper\"\nworkers = 1\n";
    let after = "[[pool]]\nname = \"work\"\nworkers = 3\nworker = \"builtin:echo\"\n\n[[pool]]\nname = \"new\"\nworker = \"builtin:sha256\"\nworkers = 1\n";
    let (forkd, socket) = start_with_control(&dir, before);
    wait_until("the pools run", T, || {
        worker_pids(&socket, "work", "running").len() == 2
            && worker_pids(&socket, "old", "running").len() == 1
    });
    let old_workers = worker_pids(&socket, "work", "running");
    let load_socket = socket.clone();
    let load = std::thread::spawn(move || {
        let jobs: Vec<Vec<u8>> = (0..400)
            .map(|i| format!("{}", i % 3 + 2).into_bytes())
            .collect();
        let expected = jobs.clone();
        let results = Caller::connect(&load_socket, "work").run_all(jobs);
        (expected, results)
    });
    wait_until("jobs are being done", T, || {
        pool_status(&socket, "work").and_then(|p| p["done"].as_u64()) >= Some(40)
    });
    control_config(&dir, after);
    let out = forkctl(&socket, &["reload"]);
    assert_eq!(out.code, 0, "{out:?}");
    let (expected, results) = load.join().unwrap();
    assert_eq!(
        results, expected,
        "every job answered once, in order, across the reload"
    );
    wait_until("3 new workers and the old ones gone", T, || {
        let now = worker_pids(&socket, "work", "running");
        now.len() == 3 && now.iter().all(|p| !old_workers.contains(p))
    });
    for pid in &old_workers {
        wait_until("an old worker exits", T, || !alive(*pid as i32));
    }
    let (code, out, err) = forkctl_call(&socket, "new", b"abc");
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        b"ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    let (code, _, err) = forkctl_call(&socket, "old", b"abc");
    assert_eq!(code, 1);
    assert!(err.contains("no pool named \"old\""), "{err}");
    assert!(pool_status(&socket, "old").is_none());
    assert!(zombies_below(forkd.pid()).is_empty());
    forkd.log.wait_line("pool work changed", T);
}
