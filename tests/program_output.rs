//! Where a program's `stdout` and `stderr` go besides forkd's log: an
//! absolute file (appended), `null`, or `inherit` (forkd's own streams).

mod common;

use std::path::Path;
use std::time::Duration;

use common::{children_running, wait_until, Forkd, Scratch};
use nix::sys::signal::Signal;

const T: Duration = Duration::from_secs(10);

/// A program that writes two lines to stdout and one to stderr, then
/// execs `sleep 1000` (which writes nothing).
fn talker(name: &str, stdout: &str, stderr: &str) -> String {
    format!(
        r#"
[[program]]
name = "{name}"
command = ["/bin/sh", "-c", "echo {name}-out-1; echo {name}-out-2; echo {name}-err >&2; exec sleep 1000"]
stdout = "{stdout}"
stderr = "{stderr}"
"#
    )
}

/// The pid of forkd's child once it has exec'd `sleep 1000`: everything
/// the shell before it wrote has been written.
fn wait_sleeping(forkd: &Forkd) -> i32 {
    wait_until("the program's shell exec'd sleep", T, || {
        children_running(forkd.pid(), "sleep 1000").len() == 1
    });
    children_running(forkd.pid(), "sleep 1000")[0]
}

/// Stops forkd and waits for its last line: by then every line it
/// captured from a pipe has been logged.
fn stop(mut forkd: Forkd) -> Vec<String> {
    forkd.signal(Signal::SIGTERM);
    assert_eq!(forkd.wait_exit(T), Some(0));
    forkd.log.wait_line("forkd stopped", T);
    forkd.log.snapshot()
}

fn fd_target(pid: i32, fd: u32) -> std::path::PathBuf {
    std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).expect("readlink fd")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

#[test]
fn output_to_a_file_is_appended_to_it_and_not_logged() {
    let dir = Scratch::new("output-file");
    let out = dir.write("out.log", "written before forkd\n");
    let err = dir.file("err.log");
    let config = dir.write(
        "forkd.toml",
        &talker(
            "filed",
            &out.display().to_string(),
            &err.display().to_string(),
        ),
    );
    let forkd = Forkd::start(&config);
    wait_sleeping(&forkd);
    assert_eq!(
        read(&out),
        "written before forkd\nfiled-out-1\nfiled-out-2\n",
        "stdout appended"
    );
    assert_eq!(read(&err), "filed-err\n");
    let log = stop(forkd);
    assert!(
        !log.iter()
            .any(|l| l.contains("filed-out") || l.contains("filed-err")),
        "{log:#?}"
    );
}

#[test]
fn output_to_null_reaches_neither_a_file_nor_the_log() {
    let dir = Scratch::new("output-null");
    // A neighbour whose output is logged shows the log would have had it.
    let config = dir.write(
        "forkd.toml",
        &format!(
            "{}{}",
            talker("silent", "null", "null"),
            talker("logged", "log", "log")
        ),
    );
    let forkd = Forkd::start(&config);
    forkd.log.wait_line("logged#0 [stderr]: logged-err", T);
    wait_until("silent exec'd sleep", T, || {
        common::children(forkd.pid())
            .into_iter()
            .filter(|&c| common::cmdline(c) == "sleep 1000")
            .count()
            == 2
    });
    let silent = common::children(forkd.pid())
        .into_iter()
        .find(|&c| common::cmdline(c) == "sleep 1000" && fd_target(c, 1) == Path::new("/dev/null"))
        .expect("silent's sleep, stdout on /dev/null");
    assert_eq!(fd_target(silent, 2), Path::new("/dev/null"));
    let log = stop(forkd);
    assert!(log.iter().any(|l| l.contains("logged#0: logged-out-2")));
    assert!(!log.iter().any(|l| l.contains("silent-")), "{log:#?}");
}

#[test]
fn output_inherit_writes_to_forkds_own_stdout_and_stderr() {
    let dir = Scratch::new("output-inherit");
    let forkd_stdout = dir.file("forkd.stdout");
    let config = dir.write("forkd.toml", &talker("loud", "inherit", "inherit"));
    // forkd's stdout goes to a file here (the shell execs forkd in its own
    // pid); its stderr is the pipe this test reads.
    let launcher = format!("exec >>'{}' \"$0\" \"$@\"", forkd_stdout.display());
    let forkd = common::start_forkd_under(&["/bin/sh", "-c", &launcher], &config, &[]);
    let pid = wait_sleeping(&forkd);
    assert_eq!(fd_target(pid, 1), fd_target(forkd.pid(), 1));
    assert_eq!(fd_target(pid, 2), fd_target(forkd.pid(), 2));
    // Written by the program itself: no timestamp, no "loud#0:" prefix.
    forkd.log.wait_for("loud's own stderr line", T, |lines| {
        lines.iter().any(|l| l == "loud-err")
    });
    assert_eq!(read(&forkd_stdout), "loud-out-1\nloud-out-2\n");
    let log = stop(forkd);
    assert!(
        !log.iter()
            .any(|l| l.contains("loud#0:") || l.contains("loud#0 [stderr]:")),
        "{log:#?}"
    );
}
