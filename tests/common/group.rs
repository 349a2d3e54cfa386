//! Other users for the access tests: a group made for one test and
//! removed when it ends (even on failure), and forkctl run as uid 65534
//! with exactly the groups a test gives it.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// A group created with groupadd and removed with groupdel when dropped.
pub struct TempGroup {
    pub name: String,
    pub gid: u32,
}

impl TempGroup {
    /// `forkdtest<PID><tag>`: `tag` tells apart the groups of one test
    /// process. groupadd refuses while another holds /etc/group's lock
    /// (tests in parallel, other test processes): it is retried until a
    /// deadline.
    pub fn add(tag: &str) -> TempGroup {
        let name = format!("forkdtest{}{tag}", std::process::id());
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let out = Command::new("groupadd")
                .arg(&name)
                .output()
                .expect("run groupadd");
            if out.status.success() {
                break;
            }
            // 10: cannot update the group file (its lock is held).
            let locked = out.status.code() == Some(10);
            assert!(
                locked && Instant::now() < deadline,
                "groupadd {name}: {out:?}"
            );
            super::pause();
        }
        // The guard first: a failed lookup still removes the group.
        let mut group = TempGroup { name, gid: 0 };
        group.gid = nix::unistd::Group::from_name(&group.name)
            .unwrap()
            .expect("the group just added")
            .gid
            .as_raw();
        group
    }
}

impl Drop for TempGroup {
    fn drop(&mut self) {
        let _ = Command::new("groupdel").arg(&self.name).output();
    }
}

/// `forkctl ARGS` as uid and gid 65534 (setpriv) with exactly `groups` as
/// its supplementary groups.
pub fn forkctl_as_nobody(socket: &Path, groups: &[u32], args: &[&str]) -> super::CtlOutput {
    let groups: Vec<String> = groups.iter().map(u32::to_string).collect();
    let group_arg = if groups.is_empty() {
        "--clear-groups".to_string()
    } else {
        format!("--groups={}", groups.join(","))
    };
    super::forkctl_as(
        &["setpriv", "--reuid=65534", "--regid=65534", &group_arg],
        socket,
        args,
    )
}

/// Lets other users reach a socket in the scratch directory.
pub fn open_directory(dir: &super::Scratch) {
    std::fs::set_permissions(&dir.path, std::fs::Permissions::from_mode(0o755)).unwrap();
}
