//! Children die with forkd: PR_SET_PDEATHSIG takes them down when forkd is
//! SIGKILLed, so no program outlives its supervisor unnoticed.

mod common;

use std::time::Duration;

use common::{alive, output_of, wait_until, Forkd, Scratch};
use nix::sys::signal::Signal;

#[test]
fn sigkill_of_forkd_takes_its_children_down() {
    let dir = Scratch::new("pdeathsig");
    let config = dir.write(
        "forkd.toml",
        r#"
[[program]]
name = "orphan-to-be"
command = ["/bin/sh", "-c", "echo $$; exec sleep 1000"]
"#,
    );
    let mut forkd = Forkd::start(&config);
    let line = forkd
        .log
        .wait_line("orphan-to-be#0: ", Duration::from_secs(10));
    let pid: i32 = output_of(&line, "orphan-to-be#0").trim().parse().unwrap();
    assert!(alive(pid));
    forkd.signal(Signal::SIGKILL);
    assert_eq!(forkd.wait_exit(Duration::from_secs(5)), None);
    wait_until(
        "the program died with forkd",
        Duration::from_secs(5),
        || !alive(pid),
    );
}

#[test]
fn a_program_that_dropped_privileges_still_dies_with_forkd() {
    if !nix::unistd::Uid::effective().is_root() {
        common::skip(
            "a_program_that_dropped_privileges_still_dies_with_forkd",
            "needs root to drop privileges",
        );
        return;
    }
    let dir = Scratch::new("pdeathsig-user");
    let config = dir.write(
        "forkd.toml",
        r#"
[[program]]
name = "nobody"
command = ["/bin/sh", "-c", "echo $$; exec sleep 1000"]
user = "nobody"
cwd = "/"
"#,
    );
    let mut forkd = Forkd::start(&config);
    let line = forkd.log.wait_line("nobody#0: ", Duration::from_secs(10));
    let pid: i32 = output_of(&line, "nobody#0").trim().parse().unwrap();
    assert!(alive(pid));
    forkd.signal(Signal::SIGKILL);
    assert_eq!(forkd.wait_exit(Duration::from_secs(5)), None);
    let guard = common::KillOnDrop(pid);
    wait_until(
        "the unprivileged program died with forkd",
        Duration::from_secs(5),
        || !alive(pid),
    );
    drop(guard);
}
