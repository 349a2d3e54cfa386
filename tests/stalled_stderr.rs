//! A reader of forkd's stderr that stops reading must not stall the loop:
//! records are dropped and counted instead, and forkd keeps answering.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{forkctl, wait_until, Scratch, FORKD};

#[test]
fn a_stalled_stderr_reader_does_not_stall_the_event_loop() {
    let dir = Scratch::new("stalled-stderr");
    let socket = dir.file("control.sock");
    let config = dir.write(
        "forkd.toml",
        &format!(
            r#"
[daemon]
control_socket = "{}"

[[program]]
name = "chatty"
command = ["/bin/sh", "-c", "yes 'a line of output that nobody reads' | head -n 200000; exec sleep 1000"]
"#,
            socket.display()
        ),
    );
    // stderr goes to a pipe this test never reads: it fills after 64 KiB.
    let mut child = Command::new(FORKD)
        .arg("--config")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn forkd");
    let guard = common::KillOnDrop::new(child.id() as i32);
    let _unread = child.stderr.take();
    // 200,000 lines are far more than the pipe holds. The program only
    // reaches `sleep` once forkd has read all of its output, which a forkd
    // blocked on its own stderr never would.
    let pid = child.id() as i32;
    wait_until(
        "the program wrote everything",
        Duration::from_secs(60),
        || common::children_running(pid, "sleep 1000").len() == 1,
    );
    wait_until("forkctl answers", Duration::from_secs(30), || {
        let out = forkctl(&socket, &["--timeout", "2s", "status"]);
        out.code == 0 && out.stdout.contains("chatty")
    });
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    wait_until("forkd exits", Duration::from_secs(15), || {
        matches!(child.try_wait(), Ok(Some(_)))
    });
    drop(guard);
}
