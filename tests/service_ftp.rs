//! `handler = "ftp"`: the classic text FTP. A client written the way the
//! course writes it (tests/clients/ftp_client.py) lists, gets a binary file
//! byte for byte, puts one and is refused a second put of it, in each
//! mode; refused names and bad requests get `FAIL` and the session goes
//! on; an upload cut before `##` leaves nothing behind, one whose `##`
//! came merged with its last bytes is stored without it; and in event mode
//! a client in its pause does not hold up another one.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;

const TEST: &str = "service_ftp";

/// An ftp service in `mode` serving `scratch/root`, which holds a binary
/// file, a text file, a directory and a symlink out of the root.
fn serve_ftp(scratch: &Scratch, mode: &str, extra: &str) -> (Forkd, String, PathBuf) {
    let root = scratch.file("root");
    std::fs::create_dir_all(root.join("dir")).unwrap();
    std::fs::write(root.join("binary.bin"), binary(300 << 10)).unwrap();
    std::fs::write(root.join("text.txt"), "hello\n").unwrap();
    std::os::unix::fs::symlink("/etc/passwd", root.join("escape")).unwrap();
    let extra = format!("root = \"{}\"\n{extra}", root.display());
    let (forkd, addr) = serve(scratch, mode, "ftp", &extra);
    (forkd, addr, root)
}

/// One request and the reply's first read, as the classic client reads it.
fn ask(s: &mut TcpStream, request: &[u8]) -> Vec<u8> {
    s.write_all(request).unwrap();
    let mut buf = [0u8; 4096];
    let n = s.read(&mut buf).unwrap();
    buf[..n].to_vec()
}

/// `LIST`'s names, after its `OK`.
fn list(s: &mut TcpStream) -> String {
    assert_eq!(ask(s, b"LIST"), b"OK");
    let mut buf = [0u8; 4096];
    let n = s.read(&mut buf).unwrap();
    String::from_utf8(buf[..n].to_vec()).unwrap()
}

const NAMES: &str = "binary.bin\ntext.txt";

fn classic_client_lists_gets_and_puts(mode: &str) {
    if !have_tool("python3", TEST) {
        return;
    }
    let scratch = Scratch::new(&format!("ftp-{mode}"));
    let (forkd, addr, root) = serve_ftp(&scratch, mode, "workers = 2");
    let upload = binary(200 << 10);
    let local = scratch.file("upload.bin");
    std::fs::write(&local, &upload).unwrap();
    let back = scratch.file("download.bin");
    let (host, port) = addr.rsplit_once(':').unwrap();
    let client = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/ftp_client.py");
    let run = Command::new("python3")
        .args([client, host, port, "list", "get", "binary.bin"])
        .arg(&back)
        .arg("put")
        .arg(&local)
        .arg("up.bin")
        .arg("put")
        .arg(&local)
        .args(["up.bin", "get", "escape", "-", "list", "exit"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{mode}: {stdout} {}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert_eq!(
        stdout,
        format!(
            "OK\n{NAMES}\nOK {}\nOK\nFAIL\nFAIL\nOK\nbinary.bin\ntext.txt\nup.bin\nclosed\n",
            300 << 10
        ),
        "{mode}: list, get, put, a second put refused, the symlink refused, exit"
    );
    assert!(
        std::fs::read(&back).unwrap() == binary(300 << 10),
        "{mode}: get"
    );
    assert!(
        std::fs::read(root.join("up.bin")).unwrap() == upload,
        "{mode}: put"
    );
    assert_eq!(
        entries(&root),
        ["binary.bin", "dir", "escape", "text.txt", "up.bin"],
        "{mode}: no temporary file left"
    );
    drop(forkd);
}

#[test]
fn classic_client_lists_gets_and_puts_in_fork_mode() {
    classic_client_lists_gets_and_puts("fork");
}

#[test]
fn classic_client_lists_gets_and_puts_in_prefork_mode() {
    classic_client_lists_gets_and_puts("prefork");
}

#[test]
fn classic_client_lists_gets_and_puts_in_event_mode() {
    classic_client_lists_gets_and_puts("event");
}

fn bad_requests_fail_and_the_service_goes_on(mode: &str) {
    let scratch = Scratch::new(&format!("ftp-bad-{mode}"));
    // One event worker: the long request and the good client share it.
    let workers = if mode == "event" { 1 } else { 3 };
    let (forkd, addr, root) = serve_ftp(&scratch, mode, &format!("workers = {workers}"));
    let mut good = tcp(&addr);
    let refused: &[&[u8]] = &[
        b"GET",
        b"PUT",
        b"GET ../etc/passwd",
        b"GET /etc/passwd",
        b"GET a\0b",
        b"PUT a\0b",
        b"PUT a/b",
        b"PUT ..",
        b"PUT escape",
        b"GET escape",
        b"GET dir",
        b"GET \xff\xfe",
        b"DELE text.txt",
    ];
    for request in refused {
        assert_eq!(ask(&mut good, request), b"FAIL", "{mode}: {request:?}");
    }
    assert_eq!(list(&mut good), NAMES, "{mode}: the session goes on");

    // An upload cut before `##` leaves no file and no temporary file.
    let mut cut = tcp(&addr);
    assert_eq!(ask(&mut cut, b"PUT cut.bin"), b"OK");
    cut.write_all(&binary(100 << 10)).unwrap();
    cut.shutdown(Shutdown::Write).unwrap();
    assert!(closed_by_server(&mut cut), "{mode}: EOF before ## closes");
    wait_until("the cut upload is gone", Duration::from_secs(5), || {
        entries(&root) == ["binary.bin", "dir", "escape", "text.txt"]
    });

    // A 10 MB request: the good client is served while it is half sent;
    // it is answered FAIL once it is over, and its session goes on.
    let ((half_sent, is_half_sent), (go_on, may_go_on)) = (mpsc::channel(), mpsc::channel());
    let bad_addr = addr.as_str();
    let long = std::thread::scope(|scope| {
        let sender = scope.spawn(move || {
            let mut bad = tcp(bad_addr);
            bad.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            let line = vec![b'G'; 5 << 20];
            bad.write_all(&line).unwrap();
            half_sent.send(()).unwrap();
            may_go_on.recv().unwrap();
            bad.write_all(&line).unwrap();
            let reply = String::from_utf8_lossy(&ask(&mut bad, b"")).into_owned();
            (reply, list(&mut bad))
        });
        is_half_sent.recv().unwrap();
        assert_eq!(list(&mut good), NAMES, "{mode}: served meanwhile");
        go_on.send(()).unwrap();
        sender.join().unwrap()
    });
    assert_eq!(long, ("FAIL".to_string(), NAMES.to_string()), "{mode}");

    // The last bytes and `##` in one read: the upload ends once the
    // client has been quiet for upload_quiet, without the `##`.
    assert_eq!(ask(&mut good, b"PUT merged.bin"), b"OK");
    good.write_all(b"last bytes##").unwrap();
    wait_until(
        "the merged upload is stored",
        Duration::from_secs(5),
        || std::fs::read(root.join("merged.bin")).is_ok_and(|b| b == b"last bytes"),
    );
    assert_eq!(
        list(&mut good),
        "binary.bin\nmerged.bin\ntext.txt",
        "{mode}"
    );
    assert_eq!(ask(&mut good, b"EXIT"), b"", "{mode}: EXIT closes");
    drop(forkd);
}

#[test]
fn bad_requests_fail_and_the_service_goes_on_in_fork_mode() {
    bad_requests_fail_and_the_service_goes_on("fork");
}

#[test]
fn bad_requests_fail_and_the_service_goes_on_in_prefork_mode() {
    bad_requests_fail_and_the_service_goes_on("prefork");
}

#[test]
fn bad_requests_fail_and_the_service_goes_on_in_event_mode() {
    bad_requests_fail_and_the_service_goes_on("event");
}

/// One event worker serves both clients. A asks for a file larger than
/// the sockets' buffers and reads nothing more; B lists meanwhile. B's
/// `OK` comes while A is still in its pause (no byte of A's file has been
/// sent), and B's whole LIST completes while A's download is stuck half
/// way, so neither A's pause nor A's full socket holds the worker. (The
/// 2 s pause is the margin for B's connect and `OK`; a worker that slept
/// through A's pause would answer B only after A's file had started.)
#[test]
fn a_client_in_its_pause_does_not_hold_up_another_in_event_mode() {
    let scratch = Scratch::new("ftp-pause");
    let (forkd, addr, root) = serve_ftp(&scratch, "event", "workers = 1\npause = \"2s\"");
    let big = binary(16 << 20);
    std::fs::write(root.join("big.bin"), &big).unwrap();
    let mut a = tcp(&addr);
    a.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    assert_eq!(ask(&mut a, b"GET big.bin"), b"OK");

    let mut b = tcp(&addr);
    b.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    assert_eq!(ask(&mut b, b"LIST"), b"OK");
    a.set_nonblocking(true).unwrap();
    let waiting = a.read(&mut [0u8; 1]).map_err(|e| e.kind());
    assert_eq!(waiting, Err(ErrorKind::WouldBlock), "A is still pausing");
    a.set_nonblocking(false).unwrap();
    let mut names = [0u8; 4096];
    let n = b.read(&mut names).unwrap();
    assert_eq!(&names[..n], b"big.bin\nbinary.bin\ntext.txt");

    let mut got = vec![0u8; big.len()];
    a.read_exact(&mut got).unwrap();
    assert!(got == big, "A's file arrived whole after all");
    let mut end = [0u8; 2];
    a.read_exact(&mut end).unwrap();
    assert_eq!(&end, b"##");
    drop(forkd);
}

/// `pause` and `upload_quiet` are what the config says: the file comes no
/// sooner than `pause` after `OK` and `##` no sooner than `pause` after
/// the file; a trailing `##` ends the upload no sooner than
/// `upload_quiet` after it came. (Lower bounds only: a busy machine makes
/// them later, never sooner.)
#[test]
fn the_pauses_and_the_quiet_time_follow_the_config() {
    let scratch = Scratch::new("ftp-timings");
    let extra = "pause = \"500ms\"\nupload_quiet = \"1s\"";
    let (forkd, addr, root) = serve_ftp(&scratch, "fork", extra);
    let mut s = tcp(&addr);
    let asked = Instant::now();
    assert_eq!(ask(&mut s, b"GET text.txt"), b"OK");
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).unwrap();
    let file_came = Instant::now();
    assert_eq!(&buf[..n], b"hello\n");
    assert!(
        file_came - asked >= Duration::from_millis(500),
        "pause after OK"
    );
    let n = s.read(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"##");
    assert!(
        file_came.elapsed() >= Duration::from_millis(500),
        "pause before ##"
    );

    assert_eq!(ask(&mut s, b"PUT quiet.bin"), b"OK");
    let sent = Instant::now();
    s.write_all(b"all of it##").unwrap();
    wait_until("the upload is stored", Duration::from_secs(10), || {
        root.join("quiet.bin").exists()
    });
    assert!(sent.elapsed() >= Duration::from_secs(1), "upload_quiet");
    assert_eq!(std::fs::read(root.join("quiet.bin")).unwrap(), b"all of it");
    drop(forkd);
}
