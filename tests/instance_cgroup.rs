//! Where forkd has a cgroup v2 subtree, each instance runs in a cgroup of
//! its own, and a stop empties it: even a descendant that called setsid,
//! and so left the process group, is stopped. The test delegates a cgroup
//! below its own to forkd (`[daemon] cgroup`); it needs root and a cgroup v2
//! mount, and says why it is skipped without them.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{
    forkctl, proc_stat, start_with_control, status_json, wait_no_zombies, wait_until, KillOnDrop,
    Scratch,
};

/// A cgroup made for this test, emptied and removed on drop.
struct TestCgroup(PathBuf);

impl TestCgroup {
    /// Below the test's own cgroup on a writable cgroup v2 mount.
    fn new(tag: &str) -> Result<TestCgroup, String> {
        let mountinfo =
            std::fs::read_to_string("/proc/self/mountinfo").map_err(|e| e.to_string())?;
        let mount = mountinfo
            .lines()
            .find(|l| {
                l.split(" - ")
                    .nth(1)
                    .is_some_and(|f| f.starts_with("cgroup2 "))
            })
            .and_then(|l| l.split_whitespace().nth(4))
            .ok_or("no cgroup v2 mount")?;
        let own = std::fs::read_to_string("/proc/self/cgroup").map_err(|e| e.to_string())?;
        let own = own
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .ok_or("no cgroup v2 line in /proc/self/cgroup")?;
        let dir = Path::new(mount)
            .join(own.trim_start_matches('/'))
            .join(format!("forkd-test-{tag}-{}", std::process::id()));
        std::fs::create_dir(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        Ok(TestCgroup(dir))
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        let Ok(entries) = std::fs::read_dir(&self.0) else {
            return;
        };
        for entry in entries.flatten().filter(|e| e.path().is_dir()) {
            let _ = std::fs::write(entry.path().join("cgroup.kill"), "1");
            let path = entry.path();
            let deadline = Instant::now() + Duration::from_secs(5);
            while std::fs::remove_dir(&path).is_err() && Instant::now() < deadline {
                common::pause();
            }
        }
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// A cgroup for `test` below the test's own, or `None` (said why) when
/// the test cannot delegate one.
fn delegated(test: &str, tag: &str) -> Option<TestCgroup> {
    if !common::running_as_root(test, "delegate a cgroup to forkd") {
        return None;
    }
    TestCgroup::new(tag)
        .map_err(|why| common::skip(test, &why))
        .ok()
}

/// A program `tree` in `cgroup` whose main process runs `then` after
/// starting a grandchild that leaves the process group (setsid), ignores
/// SIGTERM, and writes its pid to `DIR/gc`.
fn tree(dir: &Scratch, cgroup: &TestCgroup, then: &str, extra: &str) -> String {
    let d = dir.path.display();
    format!(
        r#"cgroup = "{}"

[[program]]
name = "tree"
command = ["/bin/sh", "-c", '''
setsid sh -c "trap '' TERM; echo \$\$ > {d}/gc.tmp; mv {d}/gc.tmp {d}/gc; exec sleep 1000" &
{then}
''']
stop_timeout = "1s"
{extra}
"#,
        cgroup.0.display()
    )
}

/// The grandchild's pid, once it leads a session of its own.
fn grandchild(dir: &Scratch) -> i32 {
    let gc_file = dir.file("gc");
    wait_until("the grandchild's pid", Duration::from_secs(10), || {
        gc_file.exists()
    });
    let pid: i32 = std::fs::read_to_string(&gc_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    wait_until(
        "the grandchild in a session of its own",
        Duration::from_secs(5),
        || {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
                s.rsplit(") ").next().and_then(|r| r.split(' ').nth(3)) == Some(&pid.to_string())
            })
        },
    );
    pid
}

#[test]
fn a_setsid_grandchild_is_stopped_through_the_instance_cgroup() {
    let test = "a_setsid_grandchild_is_stopped_through_the_instance_cgroup";
    let Some(cgroup) = delegated(test, "setsid") else {
        return;
    };
    let dir = Scratch::new("cgroup-setsid");
    let body = tree(&dir, &cgroup, "exec sleep 1000", "");
    let (forkd, socket) = start_with_control(&dir, &body);
    let grandchild = grandchild(&dir);
    let _guard = KillOnDrop::new(grandchild);

    let status = status_json(&socket);
    let instance = &status["programs"][0]["instances"][0];
    let path = instance["cgroup"]
        .as_str()
        .expect("status names the cgroup");
    assert!(path.starts_with(cgroup.0.to_str().unwrap()), "{instance}");
    assert_eq!(instance["cgroup_processes"], 2, "{instance}");
    let text = forkctl(&socket, &["status"]);
    assert!(text.stdout.contains(path), "{}", text.stdout);

    let stopped = forkctl(&socket, &["stop", "tree"]);
    assert_eq!(stopped.code, 0, "{stopped:?}");
    let asked = Instant::now();
    // stop_timeout (1 s) + 1 s.
    wait_until(
        "the setsid grandchild gone and reaped",
        Duration::from_secs(2),
        || proc_stat(grandchild).is_none(),
    );
    assert!(asked.elapsed() < Duration::from_secs(2));
    wait_until(
        "the instance cgroup removed",
        Duration::from_secs(5),
        || !Path::new(path).exists(),
    );
    wait_no_zombies(forkd.pid());
}

#[test]
fn a_crashed_leaders_setsid_grandchild_is_killed_at_stop_timeout() {
    let test = "a_crashed_leaders_setsid_grandchild_is_killed_at_stop_timeout";
    let Some(cgroup) = delegated(test, "crash") else {
        return;
    };
    let dir = Scratch::new("cgroup-crash");
    let d = dir.path.display();
    // The leader waits for the grandchild's pid, then crashes.
    let then = format!("while [ ! -e {d}/gc ]; do sleep 0.01; done; exit 3");
    let body = tree(&dir, &cgroup, &then, "restart = \"never\"");
    let (forkd, _socket) = start_with_control(&dir, &body);
    let grandchild = grandchild(&dir);
    let _guard = KillOnDrop::new(grandchild);
    let swept = forkd
        .log
        .wait_line("left processes behind", Duration::from_secs(10));
    let seen = Instant::now();
    // stop_timeout (1 s) + 1 s: SIGTERM is ignored, cgroup.kill is not.
    wait_until(
        "the setsid grandchild gone and reaped",
        Duration::from_secs(2),
        || proc_stat(grandchild).is_none(),
    );
    assert!(seen.elapsed() < Duration::from_secs(2));
    let killed = forkd.log.wait_line(
        "outlived its main process: sending SIGKILL",
        Duration::from_secs(5),
    );
    assert!(
        common::log_time(&killed).saturating_sub(common::log_time(&swept))
            >= Duration::from_millis(999),
        "SIGKILL before stop_timeout: {swept} / {killed}"
    );
    wait_until(
        "every instance cgroup removed",
        Duration::from_secs(5),
        || {
            common::entries(&cgroup.0)
                .iter()
                .all(|e| !cgroup.0.join(e).is_dir())
        },
    );
    wait_no_zombies(forkd.pid());
}

#[test]
fn a_daemon_adopted_through_its_pidfile_runs_in_the_instance_cgroup() {
    let test = "a_daemon_adopted_through_its_pidfile_runs_in_the_instance_cgroup";
    let Some(cgroup) = delegated(test, "pidfile") else {
        return;
    };
    let dir = Scratch::new("cgroup-pidfile");
    let pidfile = dir.file("d.pid");
    let p = pidfile.display();
    let body = format!(
        r#"cgroup = "{}"

[[program]]
name = "daemon"
{}
pidfile = "{p}"
"#,
        cgroup.0.display(),
        common::daemonizing_command(&pidfile)
    );
    let (forkd, socket) = start_with_control(&dir, &body);
    let line = forkd
        .log
        .wait_line("daemon#0: daemon pid", Duration::from_secs(10));
    let daemon: i32 = line
        .split("daemon pid ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .unwrap()
        .parse()
        .unwrap();
    let _guard = KillOnDrop::new(daemon);
    let instance = status_json(&socket)["programs"][0]["instances"][0].clone();
    assert_eq!(instance["pid"], daemon, "{instance}");
    assert_eq!(instance["cgroup_processes"], 1, "{instance}");
    let stopped = forkctl(&socket, &["stop", "daemon"]);
    assert_eq!(stopped.code, 0, "{stopped:?}");
    wait_until("the daemon gone and reaped", Duration::from_secs(5), || {
        proc_stat(daemon).is_none()
    });
    wait_no_zombies(forkd.pid());
}
