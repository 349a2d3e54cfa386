//! The `chat` handler serves the classic UDP chat room to the classic
//! client (tests/clients/chat_client.py, one socket per member): LOGIN,
//! CHAT and EXIT with their byte-exact texts, FAIL for taken, reserved and
//! surplus names, `forkctl chat` as `管理员消息 : text`, malformed and
//! spoofed datagrams ignored and counted, an unreachable member skipped,
//! silent members expired; in fork, prefork and event modes, with two
//! workers and one room (worker #0's), which a replacement of worker #0
//! starts again empty.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::Value;

const TEST: &str = "service_chat";
/// How long a member waits for a datagram it expects.
const EXPECT: &str = "5";

fn client() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients/chat_client.py")
}

/// One member: a classic client with its own UDP socket, killed on drop.
struct Member {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Member {
    fn new(room: &str) -> Member {
        let (host, port) = room.rsplit_once(':').unwrap();
        let mut child = Command::new("python3")
            .arg(client())
            .args([host, port])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the chat client");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Member {
            child,
            stdin,
            stdout,
        }
    }

    /// Runs one client command; the datagrams it received, as text.
    fn run(&mut self, command: &str) -> Vec<String> {
        writeln!(self.stdin, "{command}").expect("write to the chat client");
        let mut line = String::new();
        self.stdout
            .read_line(&mut line)
            .expect("read the chat client");
        assert!(!line.is_empty(), "the chat client died on {command:?}");
        let hex: Vec<String> = serde_json::from_str(&line).expect("a JSON list");
        hex.iter().map(|h| utf8(&unhex(h))).collect()
    }

    fn login(&mut self, name: &str) -> String {
        self.run(&format!("login {name}")).join("|")
    }

    /// The next `n` datagrams, each expected within a few seconds.
    fn receive(&mut self, n: usize) -> Vec<String> {
        self.run(&format!("recv {n} {EXPECT}"))
    }

    fn next(&mut self) -> String {
        self.receive(1).join("|")
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn unhex(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

/// The text of a datagram; not UTF-8 fails the test, byte-exact otherwise.
fn utf8(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).unwrap_or_else(|_| panic!("not UTF-8: {bytes:?}"))
}

/// forkd with one chat service "room"; returns it, its control socket and
/// the room's address.
fn start(scratch: &Scratch, mode: &str, extra: &str) -> (Forkd, PathBuf, String) {
    let body = format!(
        "[[service]]\nname = \"room\"\nlisten = [\"udp://127.0.0.1:0\"]\nmode = \"{mode}\"\nworkers = 2\nhandler = \"chat\"\n{extra}"
    );
    let (forkd, socket) = start_with_control(scratch, &body);
    let room = bound_address(&forkd.log, "room", "udp://");
    (forkd, socket, room)
}

fn room_status(socket: &Path) -> Value {
    let status = status_json(socket);
    status["services"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == "room"))
        .cloned()
        .unwrap_or_else(|| panic!("no service room in {status}"))
}

/// `(pid, state)` of the room's worker #0, if it has one.
fn worker_zero(socket: &Path) -> Option<(i64, String)> {
    let room = room_status(socket);
    let zero = room["workers"]
        .as_array()?
        .iter()
        .find(|w| w["index"] == 0)?;
    Some((zero["pid"].as_i64()?, zero["state"].as_str()?.to_string()))
}

fn operator(socket: &Path, text: &str) -> CtlOutput {
    forkctl(socket, &["chat", "room", text])
}

#[test]
fn the_classic_room_in_fork_prefork_and_event_modes() {
    if !have_tool("python3", TEST) {
        return;
    }
    for mode in ["fork", "prefork", "event"] {
        let scratch = Scratch::new(&format!("chat-{mode}"));
        let (forkd, socket, room) = start(&scratch, mode, "max_members = 3\n");
        one_room(&socket, &room, mode);
        restart_of_worker_zero(&socket, &room, mode);
        wait_no_zombies(forkd.pid());
    }
}

/// Logins, chat, refusals, the operator, bad datagrams, an unreachable
/// member and EXIT, against one room.
fn one_room(socket: &Path, room: &str, mode: &str) {
    let (mut ann, mut bob, mut cat, mut dan) = (
        Member::new(room),
        Member::new(room),
        Member::new(room),
        Member::new(room),
    );
    assert_eq!(ann.login("ann"), "OK", "{mode}");
    assert_eq!(bob.login("bob"), "OK", "{mode}");
    assert_eq!(ann.next(), "欢迎 bob 进入聊天室", "{mode}");
    assert_eq!(cat.login("cat"), "OK", "{mode}");
    assert_eq!(ann.next(), "欢迎 cat 进入聊天室", "{mode}");
    assert_eq!(bob.next(), "欢迎 cat 进入聊天室", "{mode}");

    bob.run("chat bob hello  there, 你好 ");
    assert_eq!(ann.next(), "bob : hello  there, 你好 ", "{mode}");
    assert_eq!(cat.next(), "bob : hello  there, 你好 ", "{mode}");
    cat.run("chat cat to you all");
    // Had bob been sent his own words, they would come first.
    assert_eq!(bob.next(), "cat : to you all", "{mode}: not to the sender");
    assert_eq!(ann.next(), "cat : to you all", "{mode}");

    assert_eq!(dan.login("ann"), "FAIL", "{mode}: a taken name");
    assert_eq!(dan.login("管理员"), "FAIL", "{mode}: a reserved name");
    assert_eq!(dan.login("dan"), "FAIL", "{mode}: max_members = 3");

    let sent = operator(socket, "hello all");
    assert_eq!(sent.code, 0, "{mode}: {sent:?}");
    assert_eq!(sent.stdout.trim(), "room: sent to 3 member(s)", "{mode}");
    for member in [&mut ann, &mut bob, &mut cat] {
        assert_eq!(member.next(), "管理员消息 : hello all", "{mode}");
    }

    // Not UTF-8, an unknown verb, a missing name, and dan speaking and
    // leaving as ann: all ignored and counted; the room goes on.
    for bad in [
        "raw fffe80",
        "say PING",
        "say LOGIN",
        "chat ann I am ann",
        "exit ann",
    ] {
        dan.run(bad);
    }
    ann.run("chat ann still here");
    assert_eq!(
        bob.next(),
        "ann : still here",
        "{mode}: nothing spoofed came first"
    );
    assert_eq!(cat.next(), "ann : still here", "{mode}");
    wait_until(
        "the ignored datagrams are counted",
        Duration::from_secs(5),
        || room_status(socket)["ignored"] == 5,
    );
    let table = forkctl(socket, &["status", "room"]).stdout;
    let row = table
        .lines()
        .find(|l| l.contains("udp://"))
        .expect("the service row");
    assert_eq!(row.split_whitespace().last(), Some("5"), "IGNORED: {table}");

    // ann's socket is gone: the broadcasts to her fail, the others' do not.
    ann.run("close");
    cat.run("chat cat after ann left");
    assert_eq!(bob.next(), "cat : after ann left", "{mode}");
    assert_eq!(operator(socket, "still on").code, 0, "{mode}");
    assert_eq!(bob.next(), "管理员消息 : still on", "{mode}");
    assert_eq!(cat.next(), "管理员消息 : still on", "{mode}");

    bob.run("exit bob");
    assert_eq!(cat.next(), "bob 退出聊天室", "{mode}");
    assert_eq!(dan.login("dan"), "OK", "{mode}: bob's place is free");
    assert_eq!(cat.next(), "欢迎 dan 进入聊天室", "{mode}");
    let status = room_status(socket);
    assert_eq!(status["members"], 3, "{mode}: ann, cat, dan: {status}");
}

/// SIGKILL to worker #0: its replacement serves a new, empty room, and
/// `forkctl chat` reaches it through the inbox it inherited.
fn restart_of_worker_zero(socket: &Path, room: &str, mode: &str) {
    let (old, _) = worker_zero(socket).expect("worker #0");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(old as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    wait_until(
        "a new worker #0 serves",
        Duration::from_secs(10),
        || matches!(worker_zero(socket), Some((pid, state)) if pid != old && state == "idle"),
    );
    let (mut eve, mut fay) = (Member::new(room), Member::new(room));
    assert_eq!(eve.login("eve"), "OK", "{mode}");
    assert_eq!(fay.login("fay"), "OK", "{mode}");
    assert_eq!(eve.next(), "欢迎 fay 进入聊天室", "{mode}");
    let sent = operator(socket, "after the restart");
    assert_eq!(
        sent.stdout.trim(),
        "room: sent to 2 member(s)",
        "{mode}: {sent:?}"
    );
    assert_eq!(eve.next(), "管理员消息 : after the restart", "{mode}");
    assert_eq!(fay.next(), "管理员消息 : after the restart", "{mode}");
}

#[test]
fn silent_members_expire_and_the_others_are_told() {
    if !have_tool("python3", TEST) {
        return;
    }
    let scratch = Scratch::new("chat-expiry");
    let (_forkd, socket, room) = start(&scratch, "event", "member_timeout = \"300ms\"\n");
    let (mut ann, mut bob) = (Member::new(room.as_str()), Member::new(room.as_str()));
    assert_eq!(ann.login("ann"), "OK");
    assert_eq!(bob.login("bob"), "OK");
    assert_eq!(ann.next(), "欢迎 bob 进入聊天室");
    // bob speaks (a LOGIN of his own name, answered OK, welcoming nobody)
    // every 100 ms at most; ann says nothing and expires.
    let mut heard = Vec::new();
    wait_until("bob hears that ann left", Duration::from_secs(10), || {
        bob.run("say LOGIN bob");
        heard.extend(bob.run("recv 1 0.1"));
        heard.iter().any(|h| h == "ann 退出聊天室")
    });
    assert!(
        heard.iter().all(|h| h == "OK" || h == "ann 退出聊天室"),
        "{heard:?}"
    );
    bob.run("say LOGIN bob");
    assert_eq!(room_status(&socket)["members"], 1, "bob, who spoke");
    ann.run("chat ann am I still here?");
    wait_until("bob expires too", Duration::from_secs(10), || {
        room_status(&socket)["members"] == 0
    });
    assert_eq!(room_status(&socket)["ignored"], 1, "ann's late CHAT");
}

#[test]
fn forkctl_chat_refuses_what_it_cannot_send() {
    let scratch = Scratch::new("chat-refusals");
    let body =
        "[[service]]\nname = \"room\"\nlisten = [\"udp://127.0.0.1:0\"]\nhandler = \"chat\"\n\n\
        [[service]]\nname = \"upper\"\nlisten = [\"udp://127.0.0.1:0\"]\nhandler = \"echo\"\n";
    let (_forkd, socket) = start_with_control(&scratch, body);
    let refused = |service: &str, text: &str, says: &str| {
        let out = forkctl(&socket, &["chat", service, text]);
        assert_eq!(out.code, 1, "{out:?}");
        assert!(out.stderr.contains(says), "{out:?}");
    };
    refused(
        "lobby",
        "hi",
        "no service named \"lobby\" (chat services: room)",
    );
    refused(
        "upper",
        "hi",
        "forkctl chat needs a service with handler = \"chat\"",
    );
    refused("room", "", "nothing to send");
    refused(
        "room",
        &"x".repeat(65_490),
        "the text is 65490 bytes; one datagram carries at most 65489 bytes",
    );
    wait_until("worker #0 runs", Duration::from_secs(10), || {
        worker_zero(&socket).is_some()
    });
    let out = forkctl(&socket, &["--json", "chat", "room", "nobody hears"]);
    assert_eq!(out.code, 0, "{out:?}");
    let reply: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(reply["members"], 0, "{reply}");
}
