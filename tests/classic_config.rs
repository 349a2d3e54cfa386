//! `config/classic.toml` as the README tells a user to run it: all five
//! classic services start, and each answers its course-style client
//! (tests/clients/) with the sample files of `examples/classic/`. Only the
//! fixed ports (made 0), the served directories (copied into the test's
//! scratch, so uploads never land in the source tree) and the control
//! socket are rewritten.

mod common;

use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;

const TEST: &str = "classic_config";
const PORTS: [&str; 5] = ["8000", "8070", "8080", "8880", "8888"];
const ROOTS: [&str; 3] = ["www", "files", "ftp"];

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// The classic config, rewritten to run beside other tests.
fn classic_config(scratch: &Scratch) -> PathBuf {
    let mut text = std::fs::read_to_string(repo("config/classic.toml")).unwrap();
    for port in PORTS {
        let fixed = format!("127.0.0.1:{port}\"");
        assert!(text.contains(&fixed), "classic.toml no longer has {fixed}");
        text = text.replace(&fixed, "127.0.0.1:0\"");
    }
    for dir in ROOTS {
        let written = format!("root = \"../examples/classic/{dir}\"");
        assert!(
            text.contains(&written),
            "classic.toml no longer has {written}"
        );
        let copy = scratch.file(dir);
        std::fs::create_dir(&copy).unwrap();
        for entry in std::fs::read_dir(repo(&format!("examples/classic/{dir}"))).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), copy.join(entry.file_name())).unwrap();
        }
        text = text.replace(&written, &format!("root = \"{}\"", copy.display()));
    }
    let socket = scratch.file("control.sock");
    text = text.replacen(
        "[daemon]\n",
        &format!("[daemon]\ncontrol_socket = \"{}\"\n", socket.display()),
        1,
    );
    scratch.write("classic.toml", &text)
}

/// Runs a client of tests/clients/ and returns its standard output.
fn client(name: &str, addr: &str, args: &[&str]) -> String {
    let (host, port) = addr.rsplit_once(':').unwrap();
    let script = repo(&format!("tests/clients/{name}"));
    let run = Command::new("python3")
        .arg(script)
        .args([host, port])
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout).into_owned();
    assert!(
        run.status.success(),
        "{name}: {stdout} {}",
        String::from_utf8_lossy(&run.stderr)
    );
    stdout
}

/// One HTTP/1.0 GET, read to the server's close.
fn http_get(addr: &str, path: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\n\r\n").unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    reply
}

#[test]
fn every_classic_service_answers_its_classic_client() {
    if !have_tool("python3", TEST) {
        return;
    }
    let scratch = Scratch::new("classic");
    let forkd = Forkd::start(&classic_config(&scratch));
    let addr = |service: &str, scheme: &str| bound_address(&forkd.log, service, scheme);
    let (http, command, files, ftp) = (
        addr("http", "tcp://"),
        addr("command", "tcp://"),
        addr("files", "tcp://"),
        addr("ftp", "tcp://"),
    );
    let chat = addr("chat", "udp://");

    let index = http_get(&http, "/");
    assert!(index.starts_with("HTTP/1.1 200 OK\r\n"), "{index}");
    assert!(index.contains("<h1>Served by forkd</h1>"), "{index}");
    let missing = http_get(&http, "/no-such-page");
    assert!(missing.starts_with("HTTP/1.1 404 "), "{missing}");
    assert!(missing.contains("404: no such page"), "the root's 404.html");

    let replies: Vec<String> =
        serde_json::from_str(&client("command_client.py", &command, &["whoami", "rm"])).unwrap();
    let whoami = Command::new("whoami").output().unwrap().stdout;
    assert_eq!(replies[0].as_bytes(), whoami, "whoami runs");
    assert!(replies[1].contains("unknown command \"rm\""), "{replies:?}");

    let got = scratch.file("hello-from-files.txt");
    let out = client(
        "files_client.py",
        &files,
        &["get", "hello.txt", got.to_str().unwrap()],
    );
    let sample = std::fs::read(repo("examples/classic/files/hello.txt")).unwrap();
    assert_eq!(out, format!("hello.txt {}\n", sample.len()));
    assert_eq!(std::fs::read(&got).unwrap(), sample);

    let out = client("ftp_client.py", &ftp, &["list", "exit"]);
    assert_eq!(out, "OK\nhello.txt\nclosed\n");

    let alice = UdpSocket::bind("127.0.0.1:0").unwrap();
    alice
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    alice.send_to(b"LOGIN alice", &chat).unwrap();
    let mut buf = [0u8; 256];
    let n = alice.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"OK");
    let sent = forkctl(&scratch.file("control.sock"), &["chat", "chat", "hello"]);
    assert_eq!(sent.code, 0, "{}", sent.stderr);
    let n = alice.recv(&mut buf).unwrap();
    assert_eq!(
        std::str::from_utf8(&buf[..n]).unwrap(),
        "管理员消息 : hello"
    );
}
