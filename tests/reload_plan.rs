//! Reload as plan, then apply: `forkctl reload --dry-run` and `forkd
//! --check --diff` print what a reload would do and change nothing; a
//! reload prints the same plan for what it did; a change to policy keys
//! only is applied in place, every pid kept and the new policy in effect.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{
    bound_address, forkctl, instance_states, start_with_control, status_json, wait_until, Scratch,
    FORKD,
};

const T: Duration = Duration::from_secs(10);

const BEFORE: &str = r#"
[[program]]
name = "steady"
command = ["/bin/sleep", "2001"]
instances = 2

[[program]]
name = "argv"
command = ["/bin/sleep", "2002"]

[[service]]
name = "echo"
listen = ["tcp://127.0.0.1:0"]
mode = "prefork"
workers = 1
handler = "echo"
"#;

/// `steady` changes policy only, `argv` its command, `echo` its workers.
const AFTER: &str = r#"
[[program]]
name = "steady"
command = ["/bin/sleep", "2001"]
instances = 2
restart = "never"
stop_timeout = "3s"

[[program]]
name = "argv"
command = ["/bin/sleep", "2003"]

[[service]]
name = "echo"
listen = ["tcp://127.0.0.1:0"]
mode = "prefork"
workers = 2
handler = "echo"
"#;

/// Every program instance's and service worker's pid, by name.
fn pids(socket: &Path) -> Vec<(String, Option<i64>)> {
    let status = status_json(socket);
    let mut out = Vec::new();
    for (list, members) in [("programs", "instances"), ("services", "workers")] {
        for entry in status[list].as_array().into_iter().flatten() {
            for m in entry[members].as_array().into_iter().flatten() {
                out.push((
                    format!("{}#{}", entry["name"].as_str().unwrap(), m["index"]),
                    m["pid"].as_i64(),
                ));
            }
        }
    }
    out
}

fn program_pids(socket: &Path, name: &str) -> Vec<Option<i64>> {
    instance_states(socket, name)
        .into_iter()
        .map(|(_, pid)| pid)
        .collect()
}

/// The inode of the socket listening on TCP `port` (from /proc/net/tcp).
fn listening_inode(port: u16) -> Option<u64> {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        let local_port = u16::from_str_radix(f[1].rsplit(':').next()?, 16).ok()?;
        (local_port == port && f[3] == "0A").then(|| f[9].parse().ok())?
    })
}

/// The listening sockets forkd holds (TCP and Unix), by inode: the
/// control socket and every service listener.
fn listening_sockets(pid: i32) -> Vec<u64> {
    let mut listening: Vec<u64> = Vec::new();
    let tcp = std::fs::read_to_string("/proc/net/tcp").unwrap();
    for f in tcp
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
    {
        if f[3] == "0A" {
            listening.extend(f[9].parse::<u64>());
        }
    }
    // Unix: the flags carry __SO_ACCEPTCON (0x10000) on a listener.
    let unix = std::fs::read_to_string("/proc/net/unix").unwrap();
    for f in unix
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
    {
        if u32::from_str_radix(f[3], 16).is_ok_and(|flags| flags & 0x10000 != 0) {
            listening.extend(f[6].parse::<u64>());
        }
    }
    let mut held: Vec<u64> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|p| {
            let text = p.display().to_string();
            text.strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()
        })
        .filter(|inode| listening.contains(inode))
        .collect();
    held.sort_unstable();
    held
}

fn plan_lines(stdout: &str) -> Vec<&str> {
    let mut lines: Vec<&str> = stdout.lines().collect();
    lines.pop(); // the summary line, which differs (dry run of / reloaded)
    lines
}

#[test]
fn dry_run_prints_the_plan_changes_nothing_and_reload_then_applies_it() {
    let dir = Scratch::new("plan-dry");
    let (forkd, socket) = start_with_control(&dir, BEFORE);
    let port: u16 = bound_address(&forkd.log, "echo", "tcp://")
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    wait_until("every process up", T, || {
        pids(&socket).iter().all(|(_, pid)| pid.is_some())
    });
    let before = pids(&socket);
    let inode = listening_inode(port).expect("the echo listener");
    let sockets = listening_sockets(forkd.pid());
    assert_eq!(sockets.len(), 2, "the control socket and echo's listener");

    common::control_config(&dir, AFTER);
    let dry = forkctl(&socket, &["reload", "--dry-run"]);
    assert_eq!(dry.code, 0, "{dry:?}");
    let text = &dry.stdout;
    for line in [
        "program steady: changed: apply in place\n",
        "    restart: \"on-failure\" → \"never\"\n",
        "    stop_timeout: \"10s\" → \"3s\"\n",
        "program argv: changed: restart",
        "    command: [\"/bin/sleep\", \"2002\"] → [\"/bin/sleep\", \"2003\"]\n",
        "service echo: changed: replace workers",
        "hand the listening socket over: tcp://127.0.0.1:0\n",
        "    workers: 1 → 2\n",
        "; nothing was changed\n",
    ] {
        assert!(text.contains(line), "no {line:?} in:\n{text}");
    }
    assert!(text.starts_with("program steady"), "{text}");
    // Nothing moved: same pids, same listening sockets.
    assert_eq!(pids(&socket), before);
    assert_eq!(listening_inode(port), Some(inode));
    assert_eq!(listening_sockets(forkd.pid()), sockets);
    assert_eq!(forkd.log.count("reload: "), 0, "a dry run logged a reload");

    let real = forkctl(&socket, &["reload"]);
    assert_eq!(real.code, 0, "{real:?}");
    assert_eq!(
        plan_lines(&real.stdout),
        plan_lines(&dry.stdout),
        "the same plan"
    );
    let summary = real.stdout.lines().last().unwrap_or_default();
    assert!(summary.starts_with("reloaded "), "{}", real.stdout);
    wait_until("argv replaced and echo at two new workers", T, || {
        let now = pids(&socket);
        let argv = now
            .iter()
            .find(|(n, _)| n == "argv#0")
            .and_then(|(_, p)| *p);
        let workers: Vec<Option<i64>> = now
            .iter()
            .filter(|(n, _)| n.starts_with("echo#"))
            .map(|(_, p)| *p)
            .collect();
        argv.is_some()
            && argv != before.iter().find(|(n, _)| n == "argv#0").unwrap().1
            && workers.len() == 2
            && workers
                .iter()
                .all(|p| p.is_some() && !before.iter().any(|(_, b)| b == p))
    });
    let steady: Vec<Option<i64>> = before
        .iter()
        .filter(|(n, _)| n.starts_with("steady#"))
        .map(|(_, p)| *p)
        .collect();
    assert_eq!(
        program_pids(&socket, "steady"),
        steady,
        "policy only: same pids"
    );
    // The listening socket was handed over, not closed and bound again.
    assert_eq!(listening_inode(port), Some(inode));
    forkd.log.wait_line(
        "reload: steady changed (restart, stop_timeout), applied in place",
        T,
    );
}

#[test]
fn a_policy_only_reload_keeps_every_pid_and_the_new_policy_is_in_effect() {
    let dir = Scratch::new("plan-policy");
    // `stubborn` ignores its stop signal: only SIGKILL at stop_timeout ends it.
    let body = |stop_timeout: &str, restart: &str| {
        format!(
            r#"
[[program]]
name = "stubborn"
command = ["/bin/sh", "-c", "trap '' TERM; while :; do /bin/sleep 1; done"]
stop_timeout = "{stop_timeout}"

[[program]]
name = "once"
command = ["/bin/sleep", "2004"]
restart = "{restart}"
backoff_initial = "100ms"
"#
        )
    };
    let (forkd, socket) = start_with_control(&dir, &body("120s", "always"));
    wait_until("both running", T, || {
        program_pids(&socket, "stubborn")[0].is_some() && program_pids(&socket, "once")[0].is_some()
    });
    let stubborn = program_pids(&socket, "stubborn");
    let once = program_pids(&socket, "once");

    common::control_config(&dir, &body("1s", "never"));
    let out = forkctl(&socket, &["reload"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout.contains(
            "program stubborn: changed: apply in place\n    stop_timeout: \"2m\" → \"1s\"\n"
        ),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("program once: changed: apply in place\n"),
        "{}",
        out.stdout
    );
    assert_eq!(program_pids(&socket, "stubborn"), stubborn);
    assert_eq!(program_pids(&socket, "once"), once);

    // restart = "never" holds: a killed `once` stays down.
    let pid = nix::unistd::Pid::from_raw(once[0].unwrap() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
    wait_until("once exited and left down", T, || {
        instance_states(&socket, "once")[0].0 == "exited"
    });
    assert_eq!(instance_states(&socket, "once")[0].1, None);

    // stop_timeout = "1s" holds: the stop ends in SIGKILL long before 120 s.
    let started = Instant::now();
    let stop = forkctl(&socket, &["--timeout", "60s", "stop", "stubborn"]);
    assert_eq!(stop.code, 0, "{stop:?}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    forkd
        .log
        .wait_for("stubborn#0 killed by SIGKILL", T, |lines| {
            lines
                .iter()
                .any(|l| l.contains("stubborn#0 (pid") && l.contains("killed by SIGKILL"))
        });
}

#[test]
fn reload_json_carries_the_plan() {
    let dir = Scratch::new("plan-json");
    let (_forkd, socket) = start_with_control(&dir, BEFORE);
    common::control_config(&dir, AFTER);
    let dry = forkctl(&socket, &["--json", "reload", "--dry-run"]);
    assert_eq!(dry.code, 0, "{dry:?}");
    let reply: serde_json::Value = serde_json::from_str(&dry.stdout).expect("one JSON object");
    assert_eq!(reply["ok"], true);
    assert_eq!(reply["dry_run"], true);
    assert!(reply["message"]
        .as_str()
        .unwrap()
        .starts_with("dry run of "));
    let plan = &reply["plan"];
    assert_eq!(plan["daemon"], serde_json::json!([]));
    assert_eq!(plan["pools"], serde_json::json!([]));
    let steady = &plan["programs"][0];
    assert_eq!(steady["name"], "steady");
    assert_eq!(steady["status"], "changed");
    assert_eq!(steady["action"], "apply_in_place");
    assert_eq!(steady["detail"], "apply in place");
    assert_eq!(
        steady["changes"][0],
        serde_json::json!({"key": "restart", "old": "\"on-failure\"", "new": "\"never\"", "apply": "in_place"})
    );
    assert_eq!(plan["programs"][1]["action"], "restart");
    assert_eq!(plan["programs"][1]["changes"][0]["apply"], "replace");
    assert_eq!(plan["services"][0]["action"], "replace_workers");

    let real = forkctl(&socket, &["--json", "reload"]);
    assert_eq!(real.code, 0, "{real:?}");
    let applied: serde_json::Value = serde_json::from_str(&real.stdout).unwrap();
    assert_eq!(applied["dry_run"], false);
    assert_eq!(applied["plan"], reply["plan"], "the same plan");
}

#[test]
fn check_diff_asks_the_running_forkd_and_changes_nothing() {
    let dir = Scratch::new("plan-check");
    let (_forkd, socket) = start_with_control(&dir, BEFORE);
    wait_until("every process up", T, || {
        pids(&socket).iter().all(|(_, pid)| pid.is_some())
    });
    let before = pids(&socket);
    // A new file elsewhere, naming the same control socket: the daemon
    // compares it with what it runs.
    let new = dir.write(
        "next.toml",
        &format!(
            "[daemon]\ncontrol_socket = \"{}\"\n{AFTER}",
            socket.display()
        ),
    );
    let out = Command::new(FORKD)
        .args(["--check", "--diff", "--config"])
        .arg(&new)
        .env_remove("FORKD_SOCKET")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.starts_with(&format!("{}: OK\n", new.display())),
        "{stdout}"
    );
    assert!(
        stdout.contains("program steady: changed: apply in place\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("dry run of {}: ", new.display())),
        "{stdout}"
    );
    assert_eq!(pids(&socket), before);

    // The daemon's own dry run of the same file says the same.
    common::control_config(&dir, AFTER);
    let dry = forkctl(&socket, &["reload", "--dry-run"]);
    let check_plan: Vec<&str> = stdout.lines().skip(1).collect();
    assert_eq!(
        check_plan[..check_plan.len() - 1],
        plan_lines(&dry.stdout)[..],
        "one plan"
    );

    let json = Command::new(FORKD)
        .args(["--check", "--diff", "--json", "--config"])
        .arg(&new)
        .env_remove("FORKD_SOCKET")
        .output()
        .unwrap();
    assert_eq!(json.status.code(), Some(0));
    let reply: serde_json::Value = serde_json::from_slice(&json.stdout).expect("JSON alone");
    assert_eq!(reply["plan"]["programs"][0]["action"], "apply_in_place");

    // Nobody listening: exit 3.
    let nowhere = Command::new(FORKD)
        .args(["--check", "--diff", "--config"])
        .arg(&new)
        .env("FORKD_SOCKET", dir.file("nobody.sock"))
        .output()
        .unwrap();
    assert_eq!(nowhere.status.code(), Some(3), "{nowhere:?}");
}

#[test]
fn a_dry_run_of_a_bad_file_prints_its_errors_and_exits_1() {
    let dir = Scratch::new("plan-bad");
    let (_forkd, socket) = start_with_control(&dir, BEFORE);
    wait_until("every process up", T, || {
        pids(&socket).iter().all(|(_, pid)| pid.is_some())
    });
    let before = pids(&socket);
    let (config, _) = common::control_config(&dir, &format!("{AFTER}restrat = \"always\"\n"));
    let out = forkctl(&socket, &["reload", "--dry-run"]);
    assert_eq!(out.code, 1, "{out:?}");
    let at = format!("{}:", config.display());
    assert!(
        out.stderr.contains(&at) && out.stderr.contains("unknown key \"restrat\""),
        "{}",
        out.stderr
    );
    let line_col = out.stderr.split(&at).nth(1).unwrap_or_default();
    let mut parts = line_col.split(':');
    assert!(
        parts.next().unwrap().parse::<u32>().is_ok(),
        "{}",
        out.stderr
    );
    assert!(
        parts.next().unwrap().parse::<u32>().is_ok(),
        "{}",
        out.stderr
    );
    assert_eq!(pids(&socket), before);

    let check = Command::new(FORKD)
        .args(["--check", "--diff", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(check.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&check.stderr);
    assert!(
        stderr.contains(&at) && stderr.contains("restrat"),
        "{stderr}"
    );
}

#[test]
fn a_new_instance_count_scales_without_restarting_the_others() {
    let dir = Scratch::new("plan-scale");
    let body = |n: u32| {
        format!(
            "[[program]]\nname = \"many\"\ncommand = [\"/bin/sleep\", \"2005\"]\ninstances = {n}\n"
        )
    };
    let (_forkd, socket) = start_with_control(&dir, &body(2));
    wait_until("two running", T, || {
        program_pids(&socket, "many").iter().all(Option::is_some)
    });
    let two = program_pids(&socket, "many");

    common::control_config(&dir, &body(3));
    let out = forkctl(&socket, &["reload"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout.starts_with(
            "program many: changed: apply in place, scale to 3 instance(s)\n    instances: 2 → 3\n"
        ),
        "{}",
        out.stdout
    );
    wait_until("a third instance", T, || {
        let now = program_pids(&socket, "many");
        now.len() == 3 && now[2].is_some()
    });
    assert_eq!(
        program_pids(&socket, "many")[..2],
        two[..],
        "the others kept"
    );

    common::control_config(&dir, &body(1));
    assert_eq!(forkctl(&socket, &["reload"]).code, 0);
    wait_until("scaled down to the first", T, || {
        program_pids(&socket, "many") == two[..1]
    });
}
