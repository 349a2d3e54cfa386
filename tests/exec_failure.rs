//! A program that cannot be exec'd is reported by name with errno, not as
//! a mysterious exit 127; a spawn that fails before forking says which
//! step failed.

mod common;

use std::time::Duration;

use common::{Forkd, Scratch};

#[test]
fn missing_binary_is_reported_with_the_program_name_and_errno() {
    let dir = Scratch::new("execfail");
    let config = dir.write(
        "forkd.toml",
        r#"
[[program]]
name = "ghost"
command = ["/nonexistent/forkd-test-binary", "--flag"]
start_retries = 1
backoff_initial = "10ms"
"#,
    );
    let forkd = Forkd::start(&config);
    let line = forkd
        .log
        .wait_line("ghost#0: cannot start", Duration::from_secs(10));
    assert!(line.contains("exec failed"), "{line}");
    assert!(line.contains("No such file or directory"), "{line}");
    forkd
        .log
        .wait_line("ghost#0 failed 2 times", Duration::from_secs(10));
    assert_eq!(forkd.log.count("exited with code 127"), 0);
}

#[test]
fn a_program_fatal_for_want_of_its_command_shows_the_exec_error_in_status_log_and_start() {
    let dir = Scratch::new("execfail-ctl");
    let (forkd, socket) = common::start_with_control(
        &dir,
        r#"
[[program]]
name = "ghost"
command = ["/nonexistent/forkd-test-binary"]
start_retries = 0
"#,
    );
    forkd
        .log
        .wait_line("ghost#0 failed 1 times", Duration::from_secs(10));
    let errno = "exec failed: No such file or directory";

    let status = common::forkctl(&socket, &["status", "ghost"]);
    assert_eq!(status.code, 0, "{status:?}");
    let row = status
        .stdout
        .lines()
        .find(|l| l.starts_with("ghost"))
        .unwrap_or_else(|| panic!("no ghost row: {}", status.stdout));
    assert!(
        row.contains("fatal") && row.contains(errno),
        "LAST EXIT: {row}"
    );
    let json = common::status_json(&socket);
    let last = &json["programs"][0]["instances"][0]["last_exit"];
    assert!(last["error"].as_str().unwrap().contains(errno), "{last}");

    let log = common::forkctl(&socket, &["log", "ghost"]);
    assert_eq!(log.code, 0, "{log:?}");
    assert!(
        log.stdout
            .contains("cannot start \"/nonexistent/forkd-test-binary\"")
            && log.stdout.contains(errno),
        "forkctl log ghost: {log:?}"
    );

    let start = common::forkctl(&socket, &["start", "ghost"]);
    assert_eq!(start.code, 1, "{start:?}");
    assert!(
        start.stdout.contains(errno) && start.stdout.contains("see forkctl log ghost"),
        "{start:?}"
    );
}

/// The lowest fd number `pid` has free.
fn lowest_free_fd(pid: i32) -> u64 {
    let used: std::collections::HashSet<u64> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    (0..).find(|n| !used.contains(n)).unwrap()
}

#[test]
fn a_failed_report_pipe_is_reported_as_such_not_as_a_failed_fork() {
    use std::io::{BufRead, BufReader, Write};
    let dir = Scratch::new("pipefail");
    let (forkd, socket) = common::start_with_control(
        &dir,
        r#"
[[program]]
name = "sleeper"
command = ["/bin/sleep", "1000"]
autostart = false
start_retries = 0
stdout = "null"
stderr = "null"
"#,
    );
    let pid = forkd.pid();
    // One connection, accepted before the limit drops (its fd is taken).
    let stream = std::os::unix::net::UnixStream::connect(&socket).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut ask = |request: &str| {
        (&stream).write_all(request.as_bytes()).unwrap();
        let mut reply = String::new();
        reader.read_line(&mut reply).unwrap();
        reply
    };
    assert!(ask("{\"command\":\"version\"}\n").contains("\"ok\":true"));
    // A single free fd number: pipe2 needs two, so the spawn's report
    // pipe fails with EMFILE before anything is forked.
    let was = common::set_open_files_limit(pid, lowest_free_fd(pid) + 1);
    ask("{\"command\":\"start\",\"name\":\"sleeper\"}\n");
    let line = forkd
        .log
        .wait_line("sleeper#0: cannot start", Duration::from_secs(10));
    common::set_open_files_limit(pid, was);
    assert!(
        line.contains("cannot create the pipe that reports a failed exec"),
        "{line}"
    );
    assert!(line.contains("Too many open files"), "{line}");
    assert!(!line.contains("fork failed"), "{line}");
}
