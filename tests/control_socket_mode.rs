//! The control socket file's mode and group: 0600 for forkd's user alone
//! by default, 0660 and owned by `[daemon] control_group` or
//! `control_read_group` when one is set, and the mode is what lets another
//! user's forkctl in, or not.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::PathBuf;
use std::time::Duration;

use common::group::{forkctl_as_nobody, open_directory, TempGroup};
use common::{instance_states, start_with_control, wait_until, Forkd, Scratch};

const T: Duration = Duration::from_secs(10);

const ONE_SLEEPER: &str = r#"
[[program]]
name = "web"
command = ["/bin/sleep", "1000"]
"#;

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
    let other = forkctl_as_nobody(&socket, &[meta.gid()], &["status"]);
    assert_eq!(other.code, 3, "the file mode keeps others out: {other:?}");
    assert!(
        other.stderr.contains("ermission denied"),
        "{}",
        other.stderr
    );
}

/// Starts forkd with `KEY = "GROUP"` (control_group or
/// control_read_group) and checks what one group alone makes of the
/// socket file: 0660, owned by that group, which lets a member's `status`
/// in and keeps a non-member out at the file mode.
fn one_group_owns_the_socket(key: &str, group: &TempGroup, dir: &Scratch) -> (Forkd, PathBuf) {
    let (forkd, socket) =
        start_with_control(dir, &format!("{key} = \"{}\"\n{ONE_SLEEPER}", group.name));
    let meta = std::fs::metadata(&socket).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    assert_eq!(meta.gid(), group.gid, "owned by {}", group.name);
    assert_eq!(meta.uid(), nix::unistd::Uid::effective().as_raw());
    wait_running(&socket);
    open_directory(dir);

    let member = forkctl_as_nobody(&socket, &[group.gid], &["status"]);
    assert_eq!(member.code, 0, "a member of {} may: {member:?}", group.name);
    assert!(member.stdout.contains("web"), "{}", member.stdout);
    let outsider = forkctl_as_nobody(&socket, &[], &["status"]);
    assert_eq!(outsider.code, 3, "a non-member may not: {outsider:?}");
    assert!(
        outsider.stderr.contains("ermission denied"),
        "{}",
        outsider.stderr
    );
    (forkd, socket)
}

#[test]
fn control_group_makes_the_socket_0660_owned_by_that_group() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipping control_group_makes_the_socket_0660_owned_by_that_group: groupadd and running forkctl as another user need root");
        return;
    }
    // Declared first, so it is dropped (groupdel) after forkd is gone.
    let group = TempGroup::add("");
    let dir = Scratch::new("ctl-group");
    let (_forkd, socket) = one_group_owns_the_socket("control_group", &group, &dir);
    let member = forkctl_as_nobody(&socket, &[group.gid], &["stop", "web"]);
    assert_eq!(
        member.code, 0,
        "a control_group member may stop: {member:?}"
    );
}

#[test]
fn control_read_group_alone_makes_the_socket_0660_owned_by_that_group() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipping control_read_group_alone_makes_the_socket_0660_owned_by_that_group: groupadd and running forkctl as another user need root");
        return;
    }
    let group = TempGroup::add("r");
    let dir = Scratch::new("ctl-read-group");
    let (_forkd, socket) = one_group_owns_the_socket("control_read_group", &group, &dir);
    let reader = forkctl_as_nobody(&socket, &[group.gid], &["stop", "web"]);
    assert_eq!(reader.code, 1, "{reader:?}");
    assert!(
        reader.stderr.contains("read-only: \"stop\""),
        "{}",
        reader.stderr
    );
}
