//! `[daemon] control_read_group`: its members may look (status, log,
//! version) but every verb that changes state is refused, naming the verb;
//! `control_group` members and root may do everything; anyone else is
//! refused at connect. Each peer is another uid and gid (setpriv), with
//! exactly the supplementary groups the test gives it.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::group::{forkctl_as_nobody, open_directory, TempGroup};
use common::{
    forkctl, have_tool, instance_states, running_as_root, start_with_control, wait_until, Forkd,
    Scratch,
};

const T: Duration = Duration::from_secs(10);

const ONE_SLEEPER: &str = r#"
[[program]]
name = "web"
command = ["/bin/sleep", "1000"]
"#;

/// Every verb that changes state, as forkctl arguments.
const CHANGES: &[&[&str]] = &[
    &["start", "web"],
    &["stop", "web"],
    &["restart", "web"],
    &["signal", "web", "HUP"],
    &["scale", "web", "2"],
    &["reload"],
    &["shutdown"],
    &["call", "jobs"],
    &["chat", "room", "hello"],
];

fn web_pid(socket: &Path) -> Option<i64> {
    match instance_states(socket, "web").as_slice() {
        [(state, pid)] if state == "running" => *pid,
        _ => None,
    }
}

/// forkd with `control_group = ops` and `control_read_group = view`,
/// its program running and its socket reachable by other users.
fn start_with_groups(dir: &Scratch, ops: &TempGroup, view: &TempGroup) -> (Forkd, PathBuf) {
    let (forkd, socket) = start_with_control(
        dir,
        &format!(
            "control_group = \"{}\"\ncontrol_read_group = \"{}\"\n{ONE_SLEEPER}",
            ops.name, view.name
        ),
    );
    wait_until("web running", T, || web_pid(&socket).is_some());
    open_directory(dir);
    (forkd, socket)
}

fn can_switch_users(test: &str) -> bool {
    running_as_root(test, "add groups and run forkctl as another user")
        && have_tool("setpriv", test)
        && have_tool("groupadd", test)
}

#[test]
fn a_read_only_member_is_served_status_log_and_version_and_refused_every_change() {
    let test = "a_read_only_member_is_served_status_log_and_version_and_refused_every_change";
    if !can_switch_users(test) {
        return;
    }
    // Declared first, so they are dropped (groupdel) after forkd is gone.
    let (ops, view) = (TempGroup::add("o"), TempGroup::add("v"));
    let dir = Scratch::new("ctl-read-only");
    let (forkd, socket) = start_with_groups(&dir, &ops, &view);
    let pid = web_pid(&socket);
    // Two groups, one file group: the file lets anyone connect and the
    // credential check at accept decides.
    let meta = std::fs::metadata(&socket).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o666);

    for args in [
        &["status"][..],
        &["log", "web"],
        &["version"],
        &["metrics"],
        &["events"],
        &["--json", "status"],
    ] {
        let out = forkctl_as_nobody(&socket, &[view.gid], args);
        assert_eq!(out.code, 0, "a reader may {args:?}: {out:?}");
    }
    let status = forkctl_as_nobody(&socket, &[view.gid], &["status"]);
    assert!(status.stdout.contains("web"), "{}", status.stdout);

    for args in CHANGES {
        let out = forkctl_as_nobody(&socket, &[view.gid], args);
        assert_eq!(out.code, 1, "{args:?}: {out:?}");
        let expected = format!("access denied: read-only: \"{}\" changes state", args[0]);
        assert!(
            out.stderr.starts_with(&format!("forkctl: {expected}")),
            "{args:?}: {}",
            out.stderr
        );
    }
    forkd.log.wait_line("refused \"stop\" from uid 65534", T);
    assert_eq!(web_pid(&socket), pid, "the refused verbs changed nothing");
    assert_eq!(forkctl(&socket, &["version"]).code, 0, "forkd still serves");

    // A member of both groups is an operator.
    let out = forkctl_as_nobody(&socket, &[view.gid, ops.gid], &["restart", "web"]);
    assert_eq!(out.code, 0, "{out:?}");
    let restarted = web_pid(&socket);
    assert!(restarted.is_some() && restarted != pid, "{restarted:?}");
    let out = forkctl_as_nobody(&socket, &[ops.gid], &["stop", "web"]);
    assert_eq!(out.code, 0, "{out:?}");
}

#[test]
fn a_user_in_neither_group_is_refused_everything_and_root_is_served_everything() {
    let test = "a_user_in_neither_group_is_refused_everything_and_root_is_served_everything";
    if !can_switch_users(test) {
        return;
    }
    let (ops, view) = (TempGroup::add("p"), TempGroup::add("w"));
    let dir = Scratch::new("ctl-neither");
    let (_forkd, socket) = start_with_groups(&dir, &ops, &view);
    for args in [
        &["status"][..],
        &["version"],
        &["log", "web"],
        &["stop", "web"],
    ] {
        let out = forkctl_as_nobody(&socket, &[], args);
        assert_eq!(out.code, 1, "{args:?}: {out:?}");
        assert!(
            out.stderr.contains("access denied for uid 65534")
                && out.stderr.contains(&format!("\"{}\"", view.name)),
            "{args:?}: {}",
            out.stderr
        );
    }
    for args in [
        &["status"][..],
        &["log", "web"],
        &["version"],
        &["signal", "web", "CONT"],
    ] {
        let out = forkctl(&socket, args);
        assert_eq!(out.code, 0, "root may {args:?}: {out:?}");
    }
    let out = forkctl(&socket, &["restart", "web"]);
    assert_eq!(out.code, 0, "{out:?}");
    let out = forkctl(&socket, &["shutdown"]);
    assert_eq!(out.code, 0, "{out:?}");
}

#[test]
fn a_reload_keeps_the_access_the_socket_was_bound_with_and_says_so() {
    let test = "a_reload_keeps_the_access_the_socket_was_bound_with_and_says_so";
    if !can_switch_users(test) {
        return;
    }
    let (ops, view) = (TempGroup::add("q"), TempGroup::add("x"));
    let dir = Scratch::new("ctl-read-reload");
    let (forkd, socket) = start_with_groups(&dir, &ops, &view);
    let text = std::fs::read_to_string(&forkd.config).unwrap();
    let without: String = text
        .lines()
        .filter(|l| !l.starts_with("control_read_group"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_ne!(without, text);
    std::fs::write(&forkd.config, without).unwrap();
    let reload = forkctl(&socket, &["reload"]);
    assert_eq!(reload.code, 0, "{reload:?}");
    forkd.log.wait_line(
        "control_socket, control_group and control_read_group take effect when forkd restarts",
        T,
    );
    let reader = forkctl_as_nobody(&socket, &[view.gid], &["status"]);
    assert_eq!(
        reader.code, 0,
        "still a reader until forkd restarts: {reader:?}"
    );
}
