//! What a program finds when it starts: argv without a shell, env, cwd,
//! umask, rlimits, stdin on /dev/null, its own process group, output in
//! forkd's log.

mod common;

use std::time::Duration;

use common::{Forkd, Scratch};

#[test]
fn a_program_gets_its_env_cwd_umask_rlimits_and_own_session() {
    let dir = Scratch::new("setup");
    let cwd = dir.path.display().to_string();
    let config = dir.write(
        "forkd.toml",
        &format!(
            r#"
[[program]]
name = "probe"
command = ["/bin/sh", "-c", "echo env=$GREETING cwd=$(pwd) umask=$(umask) nofile=$(ulimit -n) pgid=$(ps -o pgid= $$ | tr -d ' ') pid=$$ sid=$(ps -o sid= $$ | tr -d ' ') inst=$FORKD_INSTANCE; read x; echo stdin-eof=$?; echo to-stderr >&2"]
restart = "never"
cwd = "{cwd}"
umask = "027"
env = {{ GREETING = "hello world" }}
rlimits = {{ nofile = 123 }}
"#
        ),
    );
    let forkd = Forkd::start(&config);
    let line = forkd
        .log
        .wait_line("probe#0: env=", Duration::from_secs(10));
    assert!(line.contains("env=hello world"), "{line}");
    assert!(line.contains(&format!("cwd={cwd}")), "{line}");
    assert!(line.contains("umask=0027"), "{line}");
    assert!(line.contains("nofile=123"), "{line}");
    assert!(line.contains("inst=0"), "{line}");
    let field = |name: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(name))
            .unwrap()
            .to_string()
    };
    assert_eq!(field("pgid="), field("pid="), "own process group");
    assert_eq!(field("sid="), field("pid="), "own session");
    forkd
        .log
        .wait_line("probe#0: stdin-eof=1", Duration::from_secs(10));
    forkd
        .log
        .wait_line("probe#0 [stderr]: to-stderr", Duration::from_secs(10));
}

#[test]
fn a_program_runs_as_its_configured_user_with_supplementary_groups() {
    if !common::running_as_root(
        "a_program_runs_as_its_configured_user_with_supplementary_groups",
        "drop privileges",
    ) {
        return;
    }
    let dir = Scratch::new("user");
    let config = dir.write(
        "forkd.toml",
        r#"
[[program]]
name = "who"
command = ["/usr/bin/id"]
restart = "never"
user = "nobody"
cwd = "/"
"#,
    );
    let forkd = Forkd::start(&config);
    let line = forkd.log.wait_line("who#0: uid=", Duration::from_secs(10));
    assert!(line.contains("uid=65534(nobody)"), "{line}");
    assert!(line.contains("groups=65534(nogroup)"), "{line}");
}

#[test]
fn the_supervisor_process_has_exactly_one_thread() {
    let dir = Scratch::new("threads");
    let config = dir.write(
        "forkd.toml",
        "[[program]]\nname = \"s\"\ncommand = [\"/bin/sleep\", \"1000\"]\ninstances = 3\n",
    );
    let forkd = Forkd::start(&config);
    common::wait_until("3 children", Duration::from_secs(10), || {
        common::children(forkd.pid()).len() == 3
    });
    let tasks = std::fs::read_dir(format!("/proc/{}/task", forkd.pid()))
        .unwrap()
        .count();
    assert_eq!(tasks, 1);
}

#[test]
fn forkd_started_with_closed_stdin_and_stdout_still_captures_output() {
    let dir = Scratch::new("closed-stdio");
    let config = dir.write(
        "forkd.toml",
        &format!(
            "[daemon]\ncontrol_socket = \"{}\"\n[[program]]\nname = \"talk\"\ncommand = [\"/bin/sh\", \"-c\", \"echo hello; sleep 1000\"]\n",
            dir.file("control.sock").display()
        ),
    );
    // The shell closes fds 0 and 1, then execs forkd in its own pid, so the
    // `Forkd` guard still kills the right process.
    let forkd = common::start_forkd_under(
        &["/bin/sh", "-c", "exec 0<&- 1>&- \"$0\" \"$@\""],
        &config,
        &[],
    );
    forkd
        .log
        .wait_line("talk#0: hello", Duration::from_secs(10));
}
