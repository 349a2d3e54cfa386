//! End to end under a real systemd: a Debian bookworm root booted with
//! `systemd-nspawn --boot`, forkd.service from systemd/ installed in it,
//! then `systemctl start`, `reload` (with a changed config), `is-active`
//! and `stop`, as an operator would.
//!
//! Slow and needs root, so it runs only when a root is already cached
//! (`/var/cache/forkd-e2e/root`, or `FORKD_E2E_ROOT`) and the tools are
//! installed (Debian's `systemd-container` and `util-linux`), or when
//! `FORKD_E2E=1` asks for it, in which case a missing root is built with
//! `debootstrap --variant=minbase --include=systemd,dbus bookworm` (package
//! `debootstrap`) first (minutes). Otherwise it prints why it skipped, in
//! `cargo test`'s own output (see `common::skip`).
//! Commands reach the container with `nsenter` into its init's namespaces,
//! so no systemd-machined is needed on the host. The container's root is
//! an overlay (`--volatile=overlay`): the cache is never modified.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{children, missing_tool, on_path, skip, wait_until, Scratch, FORKD};

const T: Duration = Duration::from_secs(60);

fn root_dir() -> PathBuf {
    std::env::var_os("FORKD_E2E_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/forkd-e2e/root"))
}

/// The cached root, or why the test cannot run.
fn prepare_root() -> Result<PathBuf, String> {
    let root = root_dir();
    let wanted = std::env::var("FORKD_E2E").is_ok_and(|v| v == "1");
    if !nix::unistd::geteuid().is_root() {
        return Err("systemd-nspawn needs root".into());
    }
    for tool in ["systemd-nspawn", "nsenter"] {
        if !on_path(tool) {
            return Err(missing_tool(tool));
        }
    }
    if root.join("lib/systemd/systemd").exists() {
        return Ok(root);
    }
    if !wanted {
        return Err(format!(
            "no cached root at {} (set FORKD_E2E=1 to build it with debootstrap, a few minutes)",
            root.display()
        ));
    }
    if !on_path("debootstrap") {
        return Err(missing_tool("debootstrap"));
    }
    let partial = root.with_extension("partial");
    let _ = std::fs::remove_dir_all(&partial);
    std::fs::create_dir_all(root.parent().unwrap()).map_err(|e| e.to_string())?;
    let status = Command::new("debootstrap")
        .args(["--variant=minbase", "--include=systemd,dbus", "bookworm"])
        .arg(&partial)
        .arg("http://deb.debian.org/debian")
        .status()
        .map_err(|e| format!("debootstrap: {e}"))?;
    if !status.success() {
        return Err(format!("debootstrap failed ({status})"));
    }
    std::fs::rename(&partial, &root).map_err(|e| e.to_string())?;
    Ok(root)
}

/// A booted container; powered off (or killed by pid) when dropped.
struct Container {
    nspawn: Child,
    init: i32,
}

impl Container {
    fn boot(root: &Path, binds: &[(PathBuf, &str)]) -> Container {
        let mut cmd = Command::new("systemd-nspawn");
        cmd.args([
            "-q",
            "--boot",
            "--volatile=overlay",
            "--register=no",
            "--keep-unit",
        ])
        .arg("--console=pipe")
        .arg(format!("--machine=forkd-e2e-{}", std::process::id()))
        .arg("-D")
        .arg(root);
        for (host, inside) in binds {
            cmd.arg(format!("--bind-ro={}:{inside}", host.display()));
        }
        let nspawn = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn systemd-nspawn");
        let mut container = Container { nspawn, init: 0 };
        let nspawn_pid = container.nspawn.id() as i32;
        // nspawn forks helpers first; the container's init is the child
        // that runs systemd.
        wait_until("the container's init", T, || {
            let init = children(nspawn_pid).into_iter().find(|&c| {
                std::fs::read_to_string(format!("/proc/{c}/comm"))
                    .is_ok_and(|comm| comm.trim() == "systemd")
            });
            container.init = init.unwrap_or(0);
            init.is_some()
        });
        let deadline = Instant::now() + T;
        loop {
            let state = container.run(&["systemctl", "is-system-running"]);
            let (state, err) = (
                String::from_utf8_lossy(&state.stdout).trim().to_string(),
                String::from_utf8_lossy(&state.stderr).trim().to_string(),
            );
            if state == "running" || state == "degraded" {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the container did not finish booting: {state:?} {err}"
            );
            common::pause();
        }
        container
    }

    /// Runs a command inside the container (its namespaces, its root).
    fn run(&self, argv: &[&str]) -> Output {
        Command::new("nsenter")
            .arg("-t")
            .arg(self.init.to_string())
            .arg("-a")
            .args(argv)
            .output()
            .expect("run nsenter")
    }

    /// Runs a command that must succeed; returns its stdout.
    fn ok(&self, argv: &[&str]) -> String {
        let out = self.run(argv);
        assert!(
            out.status.success(),
            "{argv:?} failed ({}): {}{}\njournal:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.journal()
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn journal(&self) -> String {
        let out = self.run(&["journalctl", "-u", "forkd", "--no-pager", "-o", "cat"]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn show(&self, property: &str) -> String {
        self.ok(&["systemctl", "show", "-P", property, "forkd"])
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        if self.init > 0 {
            let _ = self.run(&["systemctl", "poweroff", "--no-block"]);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.nspawn.try_wait() {
                return;
            }
            common::pause();
        }
        // Still up: SIGKILL every process nspawn started, by pid (killing
        // the container's init ends its whole pid namespace).
        let below = common::descendants(self.nspawn.id() as i32);
        let _ = self.nspawn.kill();
        let _ = self.nspawn.wait();
        for pid in below {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

const ONE: &str = "[[program]]\nname = \"a\"\ncommand = [\"/bin/sleep\", \"1001\"]\n";

#[test]
fn forkd_service_starts_reloads_and_stops_under_systemd() {
    let root = match prepare_root() {
        Ok(root) => root,
        Err(why) => {
            skip("the systemd end-to-end test", &why);
            return;
        }
    };
    let dir = Scratch::new("e2e");
    let etc = Scratch::new("e2e-etc");
    etc.write("forkd.toml", ONE);
    let unit = dir.write(
        "forkd.service",
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/forkd.service"),
        )
        .unwrap()
        // A short watchdog, so petting is exercised during the test.
        .replace("WatchdogSec=30s", "WatchdogSec=2s"),
    );
    let container = Container::boot(
        &root,
        &[
            (PathBuf::from(FORKD), "/usr/local/bin/forkd"),
            (unit, "/etc/systemd/system/forkd.service"),
            (etc.path.clone(), "/etc/forkd"),
        ],
    );
    container.ok(&["systemctl", "daemon-reload"]);
    container.ok(&["systemctl", "start", "forkd"]);
    assert_eq!(container.ok(&["systemctl", "is-active", "forkd"]), "active");
    assert_eq!(
        container.show("StatusText"),
        "1 programs, 0 pools, 0 services; 0 failing"
    );
    let main_pid = container.show("MainPID");
    // Delegate=yes: forkd's program runs in a cgroup of its own.
    let journal = container.journal();
    assert!(
        journal.contains("each program instance runs in a cgroup of its own below"),
        "no instance cgroups under Delegate=yes:\n{journal}"
    );
    let cgroup = container.ok(&["sh", "-c", "grep -h '^0::' /proc/$(pidof sleep)/cgroup"]);
    assert!(
        cgroup.starts_with("0::/system.slice/forkd.service/a.0."),
        "the program's cgroup: {cgroup}"
    );

    etc.write(
        "forkd.toml",
        &format!("{ONE}\n[[program]]\nname = \"b\"\ncommand = [\"/bin/sleep\", \"1002\"]\n"),
    );
    container.ok(&["systemctl", "reload", "forkd"]);
    let deadline = Instant::now() + T;
    while container.show("StatusText") != "2 programs, 0 pools, 0 services; 0 failing" {
        assert!(
            Instant::now() < deadline,
            "reload never reported READY:\n{}",
            container.journal()
        );
        common::pause();
    }
    assert_eq!(container.ok(&["systemctl", "is-active", "forkd"]), "active");
    assert_eq!(
        container.show("MainPID"),
        main_pid,
        "reload restarted forkd"
    );

    // systemd records each WATCHDOG=1 it accepts: see three distinct pets
    // (WatchdogSec=2s, so one every second) from forkd's main pid.
    let mut pets = std::collections::BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while pets.len() < 3 {
        assert!(
            Instant::now() < deadline,
            "systemd saw {} watchdog pets",
            pets.len()
        );
        pets.insert(container.show("WatchdogTimestampMonotonic"));
        common::pause();
    }
    assert_eq!(container.ok(&["systemctl", "is-active", "forkd"]), "active");
    assert_eq!(container.show("NRestarts"), "0", "{}", container.journal());

    container.ok(&["systemctl", "stop", "forkd"]);
    let state = container.run(&["systemctl", "is-active", "forkd"]);
    assert_eq!(String::from_utf8_lossy(&state.stdout).trim(), "inactive");
    let journal = container.journal();
    for line in [
        "reload: b added, starting 1 instance",
        "SIGTERM: stopping every program",
        "forkd stopped",
    ] {
        assert!(
            journal.contains(line),
            "no {line:?} in the journal:\n{journal}"
        );
    }
}
