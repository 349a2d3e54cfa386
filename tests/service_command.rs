//! The `command` handler answers the classic remote-shell client: each
//! line's first word selects an allowed command, run without a shell; the
//! reply is `{"data_size": N}` and stdout then stderr; refusals, timeouts
//! and the output limit are answered in a frame, and the service goes on
//! serving.

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};

use common::*;

const TEST: &str = "service_command";

fn client() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients/command_client.py")
}

fn start(mode: &str) -> (Scratch, Forkd, String) {
    let scratch = Scratch::new("command");
    let commands = "commands = { hello = [\"/bin/echo\", \"hello\"], \
        both = [\"/bin/sh\", \"-c\", \"echo out; echo err >&2\"], \
        echo = { argv = [\"/bin/echo\"], args = true }, \
        slow = [\"/bin/sleep\", \"30\"], big = [\"/usr/bin/yes\"] }";
    let body = format!(
        "listen = [\"tcp://127.0.0.1:0\"]\nmode = \"{mode}\"\nworkers = 2\nhandler = \"command\"\ntimeout = \"1s\"\nmax_output = \"4KiB\"\n{commands}"
    );
    let config = service_config(&scratch, &body);
    let forkd = Forkd::start(&config);
    let addr = bound_address(&forkd.log, "echo", "tcp://");
    (scratch, forkd, addr)
}

/// Runs the classic client on `lines` over one connection; the bodies.
fn ask(addr: &str, lines: &[&str]) -> Vec<String> {
    let (host, port) = addr.rsplit_once(':').unwrap();
    let out = Command::new("python3")
        .arg(client())
        .args([host, port])
        .args(lines)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn allowed_commands_answer_with_stdout_then_stderr_in_fork_and_prefork_modes() {
    if !have_tool("python3", TEST) {
        return;
    }
    for mode in ["fork", "prefork"] {
        let (_s, forkd, addr) = start(mode);
        let bodies = ask(&addr, &["hello", "both", "echo a b  c\n"]);
        assert_eq!(bodies, ["hello\n", "out\nerr\n", "a b c\n"], "{mode}");
        wait_until(
            "commands are reaped",
            std::time::Duration::from_secs(5),
            || zombies_below(forkd.pid()).is_empty(),
        );
    }
}

#[test]
fn refused_lines_get_an_error_body_and_run_nothing() {
    if !have_tool("python3", TEST) {
        return;
    }
    let (scratch, _forkd, addr) = start("fork");
    let marker = scratch.file("pwned");
    let attack = format!("echo hi ; touch {}", marker.display());
    let bodies = ask(
        &addr,
        &["ls; rm -rf /", "rm -rf /", "hello world", &attack, "hello"],
    );
    assert!(
        bodies[0].starts_with("forkd: unknown command \"ls;\"; allowed: "),
        "{}",
        bodies[0]
    );
    assert!(
        bodies[1].starts_with("forkd: unknown command \"rm\""),
        "{}",
        bodies[1]
    );
    assert!(
        bodies[2].contains("\"hello\" takes no arguments"),
        "{}",
        bodies[2]
    );
    assert!(bodies[3].contains("forkd runs no shell"), "{}", bodies[3]);
    assert_eq!(
        bodies[4], "hello\n",
        "the connection goes on after refusals"
    );
    assert!(!marker.exists(), "nothing of the refused line ran");
}

#[test]
fn a_slow_command_is_killed_at_the_timeout_while_others_are_served() {
    if !have_tool("python3", TEST) {
        return;
    }
    let (_s, forkd, addr) = start("fork");
    let (host, port) = addr.rsplit_once(':').unwrap();
    let slow = Command::new("python3")
        .arg(client())
        .args([host, port, "slow", "hello"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    assert_eq!(
        ask(&addr, &["hello"]),
        ["hello\n"],
        "another client is served"
    );
    let out = slow.wait_with_output().unwrap();
    let bodies: Vec<String> = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        bodies[0].contains("forkd: timed out after 1s"),
        "{}",
        bodies[0]
    );
    assert_eq!(bodies[1], "hello\n");
    wait_until(
        "the killed command is reaped",
        std::time::Duration::from_secs(5),
        || {
            !descendants(forkd.pid())
                .iter()
                .any(|&p| cmdline(p).contains("sleep"))
                && zombies_below(forkd.pid()).is_empty()
        },
    );
}

#[test]
fn output_beyond_max_output_is_cut_with_a_note() {
    if !have_tool("python3", TEST) {
        return;
    }
    let (_s, _forkd, addr) = start("prefork");
    let bodies = ask(&addr, &["big", "hello"]);
    let (output, note) = bodies[0].split_at(4096);
    assert!(output.chars().all(|c| c == 'y' || c == '\n'));
    assert!(note.contains("output cut at 4096 bytes"), "{note}");
    assert_eq!(bodies[1], "hello\n");
}

/// Reads one `HLEN | {"data_size": N} | BODY` reply; `None` at EOF.
fn read_reply(s: &mut std::net::TcpStream) -> Option<Vec<u8>> {
    use std::io::Read;
    let mut hlen = [0u8; 4];
    s.read_exact(&mut hlen).ok()?;
    let mut header = vec![0u8; i32::from_le_bytes(hlen) as usize];
    s.read_exact(&mut header).unwrap();
    let header: serde_json::Value = serde_json::from_slice(&header).unwrap();
    let mut body = vec![0u8; header["data_size"].as_u64().unwrap() as usize];
    s.read_exact(&mut body).unwrap();
    Some(body)
}

/// A line over the limit is answered once, then the connection ends in
/// an orderly EOF, not a reset that could cost the client the refusal
/// (the close lingers while the rest of the line arrives).
#[test]
fn a_10_mb_line_and_bytes_that_are_not_text_are_refused_while_others_are_served() {
    use std::io::{Read, Write};
    if !have_tool("python3", TEST) {
        return;
    }
    for mode in ["fork", "prefork"] {
        let (_s, _forkd, addr) = start(mode);
        let mut flood = tcp(&addr);
        let mut writer = flood.try_clone().unwrap();
        let sender = std::thread::spawn(move || {
            let line = vec![b'x'; 10 << 20];
            // The server reads and drops the rest of the line.
            let sent = writer.write_all(&line);
            let _ = writer.shutdown(std::net::Shutdown::Write);
            sent
        });
        let first = read_reply(&mut flood).expect("a refusal, not a silent close");
        let first = String::from_utf8(first).unwrap();
        assert!(
            first.contains("command line over 1024 bytes"),
            "{mode}: {first}"
        );
        assert_eq!(
            ask(&addr, &["hello"]),
            ["hello\n"],
            "{mode}: another client is served meanwhile"
        );
        let mut rest = [0u8; 64];
        match flood.read(&mut rest) {
            Ok(0) => {}
            other => panic!("{mode}: one refusal then EOF, not {other:?}"),
        }
        let sent = sender.join().unwrap();
        assert!(sent.is_ok(), "{mode}: the whole line was taken: {sent:?}");

        let mut s = tcp(&addr);
        s.write_all(b"\xff\xfe hello").unwrap();
        let body = String::from_utf8(read_reply(&mut s).unwrap()).unwrap();
        assert!(body.contains("not UTF-8"), "{mode}: {body}");
        s.write_all(b"hello").unwrap();
        assert_eq!(
            read_reply(&mut s).unwrap(),
            b"hello\n",
            "{mode}: the session goes on"
        );
    }
}
