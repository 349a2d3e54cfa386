//! `handler = "files"`: the classic length-prefixed JSON-header drop box.
//! A client written the way the course writes it (tests/clients/
//! files_client.py) puts and gets a binary file in each mode; bad frames
//! close only their own connection while another client is served, and
//! no upload is ever left half-written.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::*;

/// A files service in `mode` serving `scratch/root`; forkd, its address
/// and the root.
fn serve_files(scratch: &Scratch, mode: &str, extra: &str) -> (Forkd, String, PathBuf) {
    let root = scratch.file("root");
    std::fs::create_dir_all(&root).unwrap();
    let extra = format!("workers = 2\nroot = \"{}\"\n{extra}", root.display());
    let (forkd, addr) = serve(scratch, mode, "files", &extra);
    (forkd, addr, root)
}

fn frame(header: &str, body: &[u8]) -> Vec<u8> {
    let mut out = (header.len() as i32).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(body);
    out
}

/// A get over `s`: the reply header and the body.
fn get(s: &mut TcpStream, name: &str) -> (serde_json::Value, Vec<u8>) {
    let header = serde_json::json!({"cmd": "get", "filename": name}).to_string();
    s.write_all(&frame(&header, b"")).unwrap();
    let mut hlen = [0u8; 4];
    s.read_exact(&mut hlen).unwrap();
    let mut header = vec![0u8; i32::from_le_bytes(hlen) as usize];
    s.read_exact(&mut header).unwrap();
    let reply: serde_json::Value = serde_json::from_slice(&header).unwrap();
    let mut body = vec![0u8; reply["filesize"].as_i64().unwrap().max(0) as usize];
    s.read_exact(&mut body).unwrap();
    (reply, body)
}

fn classic_client_puts_and_gets_a_binary_file(mode: &str) {
    let test = "classic_client_puts_and_gets_a_binary_file";
    if !have_tool("python3", test) {
        return;
    }
    let scratch = Scratch::new(&format!("files-{mode}"));
    let (forkd, addr, root) = serve_files(&scratch, mode, "");
    let content = binary(3 << 20);
    let local = scratch.file("upload.bin");
    std::fs::write(&local, &content).unwrap();
    let back = scratch.file("download.bin");
    let (host, port) = addr.rsplit_once(':').unwrap();
    let client = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/files_client.py");
    let run = Command::new("python3")
        .args([client, host, port, "put"])
        .arg(&local)
        .args(["data.bin", "get", "data.bin"])
        .arg(&back)
        .args(["get", "missing.bin", "-"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert_eq!(
        stdout,
        format!("data.bin {}\nmissing.bin -1 no such file\n", content.len())
    );
    assert!(std::fs::read(root.join("data.bin")).unwrap() == content);
    assert!(std::fs::read(&back).unwrap() == content);
    assert_eq!(entries(&root), ["data.bin"]);
    drop(forkd);
}

#[test]
fn classic_client_puts_and_gets_a_binary_file_in_fork_mode() {
    classic_client_puts_and_gets_a_binary_file("fork");
}

#[test]
fn classic_client_puts_and_gets_a_binary_file_in_prefork_mode() {
    classic_client_puts_and_gets_a_binary_file("prefork");
}

#[test]
fn classic_client_puts_and_gets_a_binary_file_in_event_mode() {
    classic_client_puts_and_gets_a_binary_file("event");
}

fn bad_frames_close_only_their_own_connection(mode: &str) {
    let scratch = Scratch::new(&format!("files-bad-{mode}"));
    let (forkd, addr, root) = serve_files(&scratch, mode, "max_file_size = \"1KiB\"");
    std::fs::write(root.join("kept.txt"), b"kept").unwrap();
    std::os::unix::fs::symlink("/etc/passwd", root.join("escape")).unwrap();
    // Held open across every bad connection, and served after each.
    let mut good = tcp(&addr);
    let put = |name: &str, size: usize| {
        serde_json::json!({"cmd": "put", "filename": name, "filesize": size}).to_string()
    };
    let huge = i32::MAX.to_le_bytes().to_vec();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("truncated body", frame(&put("cut.bin", 1000), &[7u8; 100])),
        (
            "truncated header",
            frame(&put("cut.bin", 1), b"")[..10].to_vec(),
        ),
        ("HLEN 0", 0i32.to_le_bytes().to_vec()),
        ("HLEN -1", (-1i32).to_le_bytes().to_vec()),
        ("HLEN huge", huge),
        ("non-JSON header", frame("this is not json", b"")),
        (
            "unknown cmd",
            frame(r#"{"cmd": "del", "filename": "kept.txt"}"#, b""),
        ),
        ("name with /", frame(&put("sub/x", 1), b"x")),
        ("name ..", frame(&put("..", 1), b"x")),
        ("name with NUL", frame(&put("a\0b", 1), b"x")),
        (
            "over max_file_size",
            frame(&put("big.bin", 2000), &[1u8; 2000]),
        ),
    ];
    for (what, bytes) in cases {
        let mut bad = tcp(&addr);
        bad.write_all(&bytes).unwrap();
        bad.shutdown(Shutdown::Write).unwrap();
        assert!(
            closed_by_server(&mut bad),
            "{mode}: {what}: the connection is closed"
        );
        let (reply, body) = get(&mut good, "kept.txt");
        assert_eq!(
            (reply["filesize"].as_i64(), &body[..]),
            (Some(4), &b"kept"[..]),
            "{what}"
        );
    }
    // A put over max_file_size whose body is still arriving: the close
    // lingers, so the client's sending is not cut short by a reset and
    // it reads an orderly EOF.
    let mut bad = tcp(&addr);
    let mut writer = bad.try_clone().unwrap();
    let upload = frame(&put("big.bin", 4 << 20), &vec![1u8; 4 << 20]);
    let sender = std::thread::spawn(move || writer.write_all(&upload));
    let mut rest = [0u8; 64];
    match bad.read(&mut rest) {
        Ok(0) => {}
        other => panic!("{mode}: an over-size put ends in EOF, not {other:?}"),
    }
    let sent = sender.join().unwrap();
    assert!(
        sent.is_ok(),
        "{mode}: the body was taken and dropped: {sent:?}"
    );
    drop(bad);
    for name in ["../etc/passwd", "escape", "", "."] {
        let (reply, body) = get(&mut good, name);
        assert_eq!(reply["filesize"], -1, "get {name:?} is refused");
        assert!(reply["error"].is_string() && body.is_empty());
    }
    wait_until("no upload is left behind", Duration::from_secs(5), || {
        entries(&root) == ["escape", "kept.txt"]
    });
    drop(forkd);
}

#[test]
fn bad_frames_close_only_their_own_connection_in_fork_mode() {
    bad_frames_close_only_their_own_connection("fork");
}

#[test]
fn bad_frames_close_only_their_own_connection_in_prefork_mode() {
    bad_frames_close_only_their_own_connection("prefork");
}

#[test]
fn bad_frames_close_only_their_own_connection_in_event_mode() {
    bad_frames_close_only_their_own_connection("event");
}

#[test]
fn overwrite_false_keeps_the_first_file_and_the_session() {
    let scratch = Scratch::new("files-no-overwrite");
    let (forkd, addr, root) = serve_files(&scratch, "event", "overwrite = false");
    let mut s = tcp(&addr);
    let put = |body: &[u8]| {
        let header = serde_json::json!({"cmd": "put", "filename": "once", "filesize": body.len()});
        frame(&header.to_string(), body)
    };
    // Back to back in one write: the body is counted, never read past.
    let mut both = put(b"first");
    both.extend_from_slice(&put(b"second!"));
    s.write_all(&both).unwrap();
    let (reply, body) = get(&mut s, "once");
    assert_eq!(
        (reply["filesize"].as_i64(), &body[..]),
        (Some(5), &b"first"[..])
    );
    assert_eq!(entries(&root), ["once"]);
    drop(forkd);
}
