//! `forkd --check`: exit 0 on a valid file; otherwise every error printed as
//! `file:line:col: message` and exit 1. Also the bundled config is valid.

mod common;

use std::process::Command;

use common::{Scratch, FORKD};

fn check(path: &std::path::Path) -> (Option<i32>, String, String) {
    check_with(path, Command::new(FORKD))
}

fn check_with(path: &std::path::Path, mut cmd: Command) -> (Option<i32>, String, String) {
    let out = cmd
        .arg("--check")
        .arg("--config")
        .arg(path)
        .output()
        .expect("run forkd --check");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_bundled_config_is_valid() {
    let bundled = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/forkd.toml");
    let (code, stdout, stderr) = check(&bundled);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("OK"));
    assert!(!stderr.contains("warning"), "{stderr}");
}

#[test]
fn a_command_that_cannot_run_is_a_warning_and_the_file_still_checks_ok() {
    let dir = Scratch::new("check-warn");
    let script = dir.write("not-executable.sh", "#!/bin/sh\n");
    let path = dir.write(
        "forkd.toml",
        &format!(
            r#"
[[program]]
name = "ok"
command = ["sleep", "1"]

[[program]]
name = "ghost"
command = ["/nonexistent/forkd-test-binary"]

[[program]]
name = "typo"
command = ["forkd-no-such-command"]
env = {{ PATH = "/bin:/usr/bin" }}

[[program]]
name = "plain"
command = ["{}"]

[[service]]
name = "cat"
listen = ["tcp://127.0.0.1:0"]
handler = "exec"
command = ["/nonexistent/cat"]

[[pool]]
name = "jobs"
command = ["/nonexistent/worker"]
"#,
            script.display()
        ),
    );
    let (code, stdout, stderr) = check(&path);
    assert_eq!(code, Some(0), "warnings do not fail the check: {stderr}");
    assert!(stdout.contains("OK, 5 warnings"), "{stdout}");
    let file = path.display().to_string();
    for (name, gist) in [
        (
            "program \"ghost\"",
            "/nonexistent/forkd-test-binary does not exist".to_string(),
        ),
        (
            "program \"typo\"",
            "not an executable file in any PATH directory (/bin:/usr/bin)".into(),
        ),
        (
            "program \"plain\"",
            format!("{} is not executable", script.display()),
        ),
        ("service \"cat\"", "/nonexistent/cat does not exist".into()),
        ("pool \"jobs\"", "/nonexistent/worker does not exist".into()),
    ] {
        assert!(
            stderr
                .lines()
                .any(|l| l.starts_with(&format!("{file}: warning: {name}: ")) && l.contains(&gist)),
            "missing {name}: {gist} in:\n{stderr}"
        );
    }
    assert!(
        !stderr.contains("\"ok\""),
        "sleep is found through PATH: {stderr}"
    );
}

#[test]
fn every_error_class_is_reported_with_file_line_col_in_one_run() {
    let dir = Scratch::new("check");
    let path = dir.write(
        "bad.toml",
        r#"[daemon]
stop_timeout = "10 sec"

[[program]]
name = "api"
command = ["/bin/true"]
restrat = "always"

[[program]]
name = "api"
command = []
instances = "two"
"#,
    );
    let (code, _, stderr) = check(&path);
    assert_eq!(code, Some(1));
    let file = path.display().to_string();
    for (line, col, gist) in [
        (2, 16, "bad duration"),
        (7, 1, "did you mean \"restart\"?"),
        (10, 8, "duplicate"),
        (11, 11, "empty"),
        (12, 13, "integer"),
    ] {
        let prefix = format!("{file}:{line}:{col}: ");
        assert!(
            stderr
                .lines()
                .any(|l| l.starts_with(&prefix) && l.contains(gist)),
            "missing {prefix}…{gist} in:\n{stderr}"
        );
    }
}

#[test]
fn a_pool_with_an_unknown_builtin_is_an_error_with_its_position() {
    let dir = Scratch::new("check-pool");
    let good = dir.write(
        "good.toml",
        "[[pool]]\nname = \"upper\"\nworker = \"builtin:upper\"\n",
    );
    let (code, stdout, stderr) = check(&good);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(!stderr.contains("warning"), "{stderr}");
    assert!(stdout.contains("OK"), "{stdout}");
    let bad = dir.write(
        "bad.toml",
        "[[pool]]\nname = \"upper\"\nworker = \"builtin:uper\"\n",
    );
    let (code, _, stderr) = check(&bad);
    assert_ne!(code, Some(0));
    assert!(
        stderr.contains("bad.toml:3:10: ") && stderr.contains("did you mean \"builtin:upper\"?"),
        "{stderr}"
    );
}

#[test]
fn more_mqueue_workers_than_rlimit_msgqueue_holds_is_a_warning() {
    let dir = Scratch::new("check-mqueue");
    let path = dir.write(
        "forkd.toml",
        "[[pool]]\nname = \"a\"\ntransport = \"mqueue\"\nworkers = 40\nworker = \"builtin:echo\"\n",
    );
    // Linux's default limit, whatever this machine's is.
    let mut cmd = Command::new(FORKD);
    // SAFETY: setrlimit is async-signal-safe and touches no memory of ours.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
            let limit = libc::rlimit {
                rlim_cur: 819_200,
                rlim_max: 819_200,
            };
            if libc::setrlimit(libc::RLIMIT_MSGQUEUE, &limit) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    let (code, stdout, stderr) = check_with(&path, cmd);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("OK, 1 warning"), "{stdout}");
    assert!(
        stderr.contains("40 mqueue pool workers need about") && stderr.contains("RLIMIT_MSGQUEUE"),
        "{stderr}"
    );
}

#[test]
fn a_syntax_error_names_its_position() {
    let dir = Scratch::new("syntax");
    let path = dir.write(
        "bad.toml",
        "[[program]]\nname = \"x\ncommand = [\"/bin/true\"]\n",
    );
    let (code, _, stderr) = check(&path);
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains(&format!("{}:2:", path.display())),
        "{stderr}"
    );
}

#[test]
fn a_missing_file_is_a_clear_error() {
    let (code, _, stderr) = check(std::path::Path::new("/nonexistent/forkd.toml"));
    assert_eq!(code, Some(1));
    assert!(stderr.contains("/nonexistent/forkd.toml"), "{stderr}");
    assert!(stderr.contains("No such file"), "{stderr}");
}

#[test]
fn process_counts_are_capped_so_a_typo_cannot_fork_bomb_the_host() {
    let dir = Scratch::new("cap");
    let path = dir.write(
        "big.toml",
        "[[program]]\nname = \"many\"\ncommand = [\"/bin/true\"]\ninstances = 100000\n",
    );
    let (code, _, stderr) = check(&path);
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains(&format!("{}:4:13: ", path.display())) && stderr.contains("1024"),
        "{stderr}"
    );
}

#[test]
fn spare_counts_are_capped_too() {
    let dir = Scratch::new("spares");
    let path = dir.write(
        "spares.toml",
        "[[service]]\nname = \"echo\"\nlisten = [\"tcp://127.0.0.1:0\"]\nmode = \"prefork\"\nhandler = \"echo\"\nmin_spare = 3000000000\n",
    );
    let (code, _, stderr) = check(&path);
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains(&format!("{}:6:13: ", path.display())),
        "{stderr}"
    );
}
