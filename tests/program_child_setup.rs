//! What the kernel shows of a running program, key by key: `user` and
//! `group` in /proc/PID/status, `rlimits` in /proc/PID/limits, and the
//! environment forkd builds (its own, `env`, `FORKD_PROGRAM`,
//! `FORKD_INSTANCE`) in /proc/PID/environ.

mod common;

use std::time::Duration;

use common::{instance_states, start_with_control, start_with_control_env, wait_until, Scratch};

const T: Duration = Duration::from_secs(10);

/// The pids of `program`'s instances once every one of them runs.
fn running_pids(socket: &std::path::Path, program: &str, n: usize) -> Vec<i32> {
    let pids = || -> Vec<i32> {
        instance_states(socket, program)
            .into_iter()
            .filter(|(state, _)| state == "running")
            .filter_map(|(_, pid)| pid.map(|p| p as i32))
            .collect()
    };
    wait_until(&format!("{n} {program} running"), T, || pids().len() == n);
    pids()
}

/// The numbers of a `Uid:`, `Gid:` or `Groups:` line of /proc/PID/status.
fn status_ids(pid: i32, field: &str) -> Vec<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"));
    line.split_whitespace()
        .map(|n| n.parse().unwrap())
        .collect()
}

#[test]
fn user_and_group_set_the_real_effective_and_saved_ids() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipping user_and_group_set_the_real_effective_and_saved_ids: forkd must run as root to change a program's user or group");
        return;
    }
    let dir = Scratch::new("credentials");
    let (_forkd, socket) = start_with_control(
        &dir,
        r#"
[[program]]
name = "as-nobody"
command = ["/bin/sleep", "1000"]
user = "nobody"
group = "nogroup"

[[program]]
name = "nobody-in-daemon"
command = ["/bin/sleep", "1000"]
user = "nobody"
group = "daemon"

[[program]]
name = "group-only"
command = ["/bin/sleep", "1000"]
group = "nogroup"
"#,
    );
    let nobody = 65534;
    let daemon = nix::unistd::Group::from_name("daemon")
        .unwrap()
        .expect("a daemon group")
        .gid
        .as_raw();
    let pid = running_pids(&socket, "as-nobody", 1)[0];
    assert_eq!(status_ids(pid, "Uid"), [nobody; 4]);
    assert_eq!(status_ids(pid, "Gid"), [nobody; 4]);
    assert_eq!(status_ids(pid, "Groups"), [nobody], "root's groups dropped");

    // `group` wins over the user's primary group.
    let pid = running_pids(&socket, "nobody-in-daemon", 1)[0];
    assert_eq!(status_ids(pid, "Uid"), [nobody; 4]);
    assert_eq!(status_ids(pid, "Gid"), [daemon; 4]);
    assert!(!status_ids(pid, "Groups").contains(&0), "root's group kept");

    // `group` alone changes the group and keeps forkd's user.
    let pid = running_pids(&socket, "group-only", 1)[0];
    assert_eq!(status_ids(pid, "Uid"), [0; 4]);
    assert_eq!(status_ids(pid, "Gid"), [nobody; 4]);
    assert_eq!(status_ids(pid, "Groups"), [nobody]);
}

/// (soft, hard) of one `Max ...` line of /proc/PID/limits.
fn limit(pid: i32, name: &str) -> (String, String) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("limits");
    let line = limits
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .unwrap_or_else(|| panic!("no {name:?} in /proc/{pid}/limits:\n{limits}"));
    let mut values = line.split_whitespace().map(String::from);
    (values.next().unwrap(), values.next().unwrap())
}

#[test]
fn rlimits_nproc_core_and_as_bound_the_running_program() {
    let dir = Scratch::new("rlimits");
    let (forkd, socket) = start_with_control(
        &dir,
        r#"
[[program]]
name = "limited"
command = ["/bin/sleep", "1000"]
rlimits = { nproc = 77, core = "1MiB", as = "768MiB" }
"#,
    );
    let pid = running_pids(&socket, "limited", 1)[0];
    let both = |v: &str| (v.to_string(), v.to_string());
    assert_eq!(limit(pid, "Max processes"), both("77"));
    assert_eq!(limit(pid, "Max core file size"), both("1048576"));
    assert_eq!(limit(pid, "Max address space"), both("805306368"));
    // The limits are the program's; forkd keeps its own.
    assert_ne!(limit(forkd.pid(), "Max processes"), both("77"));
    assert_ne!(limit(forkd.pid(), "Max address space"), both("805306368"));
}

/// The variables of a process, from /proc/PID/environ.
fn environ(pid: i32) -> Vec<(String, String)> {
    let bytes = std::fs::read(format!("/proc/{pid}/environ")).expect("environ");
    bytes
        .split(|&b| b == 0)
        .filter(|v| !v.is_empty())
        .map(|v| {
            let text = String::from_utf8_lossy(v);
            let (k, v) = text.split_once('=').unwrap_or((&text, ""));
            (k.to_string(), v.to_string())
        })
        .collect()
}

/// The value of `key` in a process's environment, if set (once).
fn var(env: &[(String, String)], key: &str) -> Option<String> {
    let values: Vec<&String> = env
        .iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v)
        .collect();
    assert!(values.len() <= 1, "{key} set {} times", values.len());
    values.first().map(|v| v.to_string())
}

#[test]
fn each_instance_gets_forkd_program_and_instance_over_forkds_environment_and_env() {
    let dir = Scratch::new("environ");
    let (_forkd, socket) = start_with_control_env(
        &dir,
        r#"
[[program]]
name = "probe"
command = ["/bin/sleep", "1000"]
instances = 2
env = { GREETING = "hello world", SHADOWED = "from env" }
"#,
        &[
            ("FORKD_TEST_INHERITED", "from forkd"),
            ("SHADOWED", "from forkd"),
        ],
    );
    let pids = running_pids(&socket, "probe", 2);
    for (index, pid) in pids.into_iter().enumerate() {
        let env = environ(pid);
        let get = |key: &str| var(&env, key);
        assert_eq!(get("FORKD_PROGRAM").as_deref(), Some("probe"));
        assert_eq!(get("FORKD_INSTANCE"), Some(index.to_string()));
        assert_eq!(get("GREETING").as_deref(), Some("hello world"));
        assert_eq!(get("FORKD_TEST_INHERITED").as_deref(), Some("from forkd"));
        assert_eq!(get("SHADOWED").as_deref(), Some("from env"), "env wins");
    }
}
