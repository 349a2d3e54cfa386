//! The control socket file's mode and group: 0600 for forkd's user alone
//! by default, 0660 and owned by `[daemon] control_group` when one is set,
//! and the mode is what lets another user's forkctl in, or not.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::Command;
use std::time::Duration;

use common::{forkctl_as, instance_states, start_with_control, wait_until, Scratch};

const T: Duration = Duration::from_secs(10);

const ONE_SLEEPER: &str = r#"
[[program]]
name = "web"
command = ["/bin/sleep", "1000"]
"#;

/// A group created for one test with groupadd and removed with groupdel
/// when dropped, even when the test fails.
struct TempGroup {
    name: String,
    gid: u32,
}

impl TempGroup {
    fn add() -> TempGroup {
        let name = format!("forkdtest{}", std::process::id());
        let out = Command::new("groupadd")
            .arg(&name)
            .output()
            .expect("run groupadd");
        assert!(out.status.success(), "groupadd {name}: {out:?}");
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

/// Lets other users reach the socket through the scratch directory.
fn open_directory(dir: &Scratch) {
    std::fs::set_permissions(&dir.path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// `forkctl status` as uid/gid 65534 with exactly these supplementary groups.
fn status_as_nobody(socket: &std::path::Path, groups: &[u32]) -> common::CtlOutput {
    let groups = groups
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let group_arg = if groups.is_empty() {
        "--clear-groups".to_string()
    } else {
        format!("--groups={groups}")
    };
    forkctl_as(
        &["setpriv", "--reuid=65534", "--regid=65534", &group_arg],
        socket,
        &["status"],
    )
}

fn wait_running(socket: &std::path::Path) {
    wait_until("web running", T, || {
        instance_states(socket, "web")[0].0 == "running"
    });
}

#[test]
fn without_control_group_the_socket_is_0600_and_forkds_alone() {
    let dir = Scratch::new("ctl-0600");
    let (_forkd, socket) = start_with_control(&dir, ONE_SLEEPER);
    let meta = std::fs::metadata(&socket).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!(meta.uid(), nix::unistd::Uid::effective().as_raw());
    assert_eq!(meta.gid(), nix::unistd::Gid::effective().as_raw());
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipping the other-user half: only root can run forkctl as another user");
        return;
    }
    wait_running(&socket);
    open_directory(&dir);
    let other = status_as_nobody(&socket, &[meta.gid()]);
    assert_eq!(other.code, 3, "the file mode keeps others out: {other:?}");
    assert!(
        other.stderr.contains("ermission denied"),
        "{}",
        other.stderr
    );
}

#[test]
fn control_group_makes_the_socket_0660_owned_by_that_group() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipping control_group_makes_the_socket_0660_owned_by_that_group: groupadd and running forkctl as another user need root");
        return;
    }
    // Declared first, so it is dropped (groupdel) after forkd is gone.
    let group = TempGroup::add();
    let dir = Scratch::new("ctl-group");
    let (_forkd, socket) = start_with_control(
        &dir,
        &format!("control_group = \"{}\"\n{ONE_SLEEPER}", group.name),
    );
    let meta = std::fs::metadata(&socket).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    assert_eq!(meta.gid(), group.gid, "owned by {}", group.name);
    assert_eq!(meta.uid(), nix::unistd::Uid::effective().as_raw());
    wait_running(&socket);
    open_directory(&dir);

    let member = status_as_nobody(&socket, &[group.gid]);
    assert_eq!(member.code, 0, "a member of {} may: {member:?}", group.name);
    assert!(member.stdout.contains("web"), "{}", member.stdout);
    let outsider = status_as_nobody(&socket, &[]);
    assert_eq!(outsider.code, 3, "a non-member may not: {outsider:?}");
    assert!(
        outsider.stderr.contains("ermission denied"),
        "{}",
        outsider.stderr
    );
}
