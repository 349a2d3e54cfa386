//! cgroup v2 per program instance, where forkd has a delegated subtree.
//!
//! A process group is left by any descendant that calls setsid(2); a
//! cgroup is not (a process cannot leave it without write access to a
//! common ancestor's `cgroup.procs`). So where forkd may create cgroups,
//! each spawn of an instance gets one of its own below forkd's directory,
//! the child moves itself there between fork and exec (by writing "0",
//! "the writing process", to the `cgroup.procs` fd opened here), and a stop
//! empties it: signals go to every pid in `cgroup.procs`, SIGKILL through
//! `cgroup.kill` (Linux 5.14; before that, to each pid listed).
//!
//! Only the core `cgroup.*` files are used: no controller is enabled, so
//! the "no internal processes" rule never applies and forkd itself may
//! stay in the directory it delegates from. This module never decides when
//! to signal; the supervisor does.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::sys::signal::Signal;
use nix::unistd::Pid;

use crate::config::CgroupSetting;

/// Where cgroup v2 is mounted (the unified hierarchy).
const CGROUP2_MOUNTS: [&str; 2] = ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"];

/// The directory instance cgroups are made in.
#[derive(Debug)]
pub struct CgroupRoot {
    dir: PathBuf,
    /// Numbers spawns, so an old run's cgroup (still being emptied) and a
    /// new run's, or a retiring program's and its replacement's, never
    /// share a directory.
    serial: u64,
}

impl CgroupRoot {
    /// The directory `setting` names, if it can be used. `Auto` takes
    /// forkd's own cgroup when it is delegated: on cgroup v2, writable,
    /// and holding no process but forkd (systemd's `Delegate=yes` unit;
    /// under a shell or a test runner the cgroup is shared, and forkd
    /// leaves it alone). `Err` explains why an explicit path is refused.
    pub fn detect(setting: &CgroupSetting) -> Result<Option<CgroupRoot>, String> {
        let dir = match setting {
            CgroupSetting::Off => return Ok(None),
            CgroupSetting::Path(dir) => {
                usable(dir).map_err(|why| format!("cgroup {}: {why}", dir.display()))?;
                dir.clone()
            }
            CgroupSetting::Auto => match own_cgroup() {
                Some(dir) if usable(&dir).is_ok() && alone_in(&dir) => dir,
                _ => return Ok(None),
            },
        };
        let root = CgroupRoot { dir, serial: 0 };
        root.remove_leftovers();
        Ok(Some(root))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Creates the cgroup for one spawn of `program#index`.
    pub fn create(&mut self, program: &str, index: usize) -> io::Result<InstanceCgroup> {
        self.serial += 1;
        let dir = self.dir.join(format!("{program}.{index}.{}", self.serial));
        fs::create_dir(&dir)?;
        Ok(InstanceCgroup { dir })
    }

    /// Kills and removes instance cgroups a previous forkd left (it crashed,
    /// or was killed): their processes belong to no one now.
    fn remove_leftovers(&self) {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                let old = InstanceCgroup { dir: entry.path() };
                if old.members() > 0 {
                    log::warn!(
                        "cgroup {}: killing {} processes a previous forkd left",
                        old.dir.display(),
                        old.members()
                    );
                    old.signal(Signal::SIGKILL);
                }
                // Busy until the killed processes are gone: tried again
                // at the next start.
                let _ = fs::remove_dir(&old.dir);
            }
        }
    }
}

/// One spawn's cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceCgroup {
    dir: PathBuf,
}

impl InstanceCgroup {
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Its `cgroup.procs`, opened for the child to write "0" into.
    pub fn procs_for_child(&self) -> io::Result<OwnedFd> {
        let file = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(self.dir.join("cgroup.procs"))?;
        Ok(file.into())
    }

    /// The pids in it (none once it is gone).
    pub fn pids(&self) -> Vec<Pid> {
        fs::read_to_string(self.dir.join("cgroup.procs"))
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .map(Pid::from_raw)
            .collect()
    }

    /// How many processes it holds.
    pub fn members(&self) -> usize {
        self.pids().len()
    }

    /// Sends `signal` to every process in it; SIGKILL through `cgroup.kill`,
    /// which also reaches processes forked meanwhile.
    pub fn signal(&self, signal: Signal) {
        if signal == Signal::SIGKILL {
            let killed = File::options()
                .write(true)
                .open(self.dir.join("cgroup.kill"))
                .and_then(|mut f| f.write_all(b"1"));
            if killed.is_ok() {
                return;
            }
        }
        for pid in self.pids() {
            let _ = nix::sys::signal::kill(pid, signal);
        }
    }

    /// Removes it once empty; false while processes remain (EBUSY).
    pub fn remove(&self) -> bool {
        match fs::remove_dir(&self.dir) {
            Ok(()) => true,
            Err(e) => e.kind() == io::ErrorKind::NotFound,
        }
    }
}

/// forkd's own cgroup v2 directory, from `/proc/self/cgroup`'s `0::` line.
fn own_cgroup() -> Option<PathBuf> {
    let text = fs::read_to_string("/proc/self/cgroup").ok()?;
    let relative = text.lines().find_map(|l| l.strip_prefix("0::"))?;
    let relative = relative.trim_start_matches('/');
    CGROUP2_MOUNTS
        .iter()
        .map(|m| Path::new(m).join(relative))
        .find(|dir| is_cgroup2(dir) && dir.join("cgroup.procs").exists())
}

fn is_cgroup2(dir: &Path) -> bool {
    nix::sys::statfs::statfs(dir)
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
}

/// Whether forkd may make instance cgroups in `dir`: cgroup v2, and the
/// directory, its `cgroup.procs` and `cgroup.subtree_control` writable.
fn usable(dir: &Path) -> Result<(), String> {
    use nix::unistd::{access, AccessFlags};
    if !is_cgroup2(dir) {
        return Err("not a cgroup v2 directory".into());
    }
    for path in [
        dir.to_path_buf(),
        dir.join("cgroup.procs"),
        dir.join("cgroup.subtree_control"),
    ] {
        access(&path, AccessFlags::W_OK)
            .map_err(|e| format!("{} is not writable ({e})", path.display()))?;
    }
    Ok(())
}

/// Whether forkd is the only process in `dir` (a delegated service cgroup).
fn alone_in(dir: &Path) -> bool {
    let me = std::process::id().to_string();
    fs::read_to_string(dir.join("cgroup.procs"))
        .is_ok_and(|procs| procs.split_whitespace().all(|p| p == me))
}
