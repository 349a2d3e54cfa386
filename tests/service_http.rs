//! `handler = "http"`: static files under `root`, as curl, raw clients
//! and a classic one-recv client (tests/clients/http_client.py) see them, in fork, prefork and event modes: the index, HEAD,
//! 304, ranges, 404 pages, Content-Types, percent-decoded names; no way
//! out of the root, symlinks included; keep-alive, pipelining and the
//! per-connection cap; bad requests answered and closed while another
//! client is served; and a load of requests at the defaults.

mod common;

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

const DIGITS: &str = "0123456789abcdefghijklmnopqrstuvwxyz";

/// The files served: one of each type, a name with a space, a directory
/// with and one without an index, symlinks in and out of the root.
fn site(scratch: &Scratch) -> PathBuf {
    let root = scratch.file("root");
    std::fs::create_dir_all(root.join("dir")).unwrap();
    std::fs::create_dir_all(root.join("empty")).unwrap();
    let files = [
        ("index.html", "<h1>home</h1>"),
        ("style.css", "body{}"),
        ("app.js", "let a;"),
        ("logo.png", "PNG"),
        ("photo.jpg", "JPG"),
        ("notes.txt", "notes"),
        ("data.json", "{}"),
        ("icon.svg", "<svg/>"),
        ("mod.wasm", "wasm"),
        ("blob.xyz", "blob"),
        ("a file.txt", "spaced"),
        ("digits.txt", DIGITS),
        ("dir/index.html", "<h1>dir</h1>"),
    ];
    for (name, body) in files {
        std::fs::write(root.join(name), body).unwrap();
    }
    std::fs::write(scratch.file("secret.txt"), "SECRET").unwrap();
    std::os::unix::fs::symlink("../secret.txt", root.join("out")).unwrap();
    std::os::unix::fs::symlink(scratch.file("secret.txt"), root.join("abs")).unwrap();
    std::os::unix::fs::symlink("notes.txt", root.join("inside")).unwrap();
    root
}

fn serve_http(scratch: &Scratch, mode: &str, extra: &str) -> (Forkd, String, PathBuf) {
    let root = site(scratch);
    let extra = format!("workers = 2\nroot = \"{}\"\n{extra}", root.display());
    let (forkd, addr) = serve(scratch, mode, "http", &extra);
    (forkd, addr, root)
}

/// One reply: status, header fields (names lower-cased) and body.
#[derive(Debug)]
struct Reply {
    status: u16,
    fields: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A raw connection that reads replies one after another.
struct Client {
    reader: BufReader<TcpStream>,
}

impl Client {
    fn connect(addr: &str) -> Client {
        Client {
            reader: BufReader::new(tcp(addr)),
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.reader.get_mut().write_all(bytes).unwrap();
    }

    fn get(&mut self, target: &str) -> Reply {
        self.send(format!("GET {target} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
        self.reply(false)
    }

    /// Reads one reply; `head_only` for a HEAD (no body follows).
    fn reply(&mut self, head_only: bool) -> Reply {
        let mut line = String::new();
        self.reader.read_line(&mut line).expect("a status line");
        let status = line
            .strip_prefix("HTTP/1.1 ")
            .and_then(|rest| rest.get(..3))
            .and_then(|code| code.parse().ok())
            .unwrap_or_else(|| panic!("not a status line: {line:?}"));
        let mut fields = Vec::new();
        loop {
            line.clear();
            self.reader.read_line(&mut line).unwrap();
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let (name, value) = line.split_once(':').expect("a header field");
            fields.push((name.to_ascii_lowercase(), value.trim().to_string()));
        }
        let mut reply = Reply {
            status,
            fields,
            body: Vec::new(),
        };
        let len: usize = reply
            .field("content-length")
            .map_or(0, |n| n.parse().unwrap());
        if !head_only && status != 304 {
            reply.body = vec![0; len];
            self.reader.read_exact(&mut reply.body).unwrap();
        }
        reply
    }

    /// The server ended the connection in an orderly way: EOF with
    /// nothing more, not a reset (which can cost a client the reply it
    /// has not read yet). What else came, if not.
    fn ends_in_eof(&mut self) -> Result<(), String> {
        let mut rest = Vec::new();
        match self.reader.read_to_end(&mut rest) {
            Ok(_) if rest.is_empty() => Ok(()),
            Ok(_) => Err(format!("{} more bytes", rest.len())),
            Err(e) => Err(e.to_string()),
        }
    }

    /// The server closed the connection (EOF or reset), with nothing more.
    fn closed(&mut self) -> bool {
        let mut rest = Vec::new();
        match self.reader.read_to_end(&mut rest) {
            Ok(_) => rest.is_empty(),
            Err(e) => e.kind() == ErrorKind::ConnectionReset,
        }
    }
}

/// curl's view of a request: `curl -s -i ARGS`, its reply parsed.
fn curl(args: &[&str]) -> Reply {
    let run = Command::new("curl")
        .args(["-s", "-S", "-i", "--max-time", "10"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    let out = run.stdout;
    let end = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a reply head");
    let head = String::from_utf8_lossy(&out[..end]).into_owned();
    let mut lines = head.lines();
    let status = lines.next().unwrap()[9..12].parse().unwrap();
    let fields = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Reply {
        status,
        fields,
        body: out[end + 4..].to_vec(),
    }
}

fn files_are_served_as_curl_sees_them(mode: &str) {
    if !have_tool("curl", "files_are_served_as_curl_sees_them") {
        return;
    }
    let scratch = Scratch::new(&format!("http-curl-{mode}"));
    let (forkd, addr, root) = serve_http(&scratch, mode, "");
    let url = |path: &str| format!("http://{addr}{path}");

    let index = curl(&[&url("/")]);
    assert_eq!(
        (index.status, index.text().as_str()),
        (200, "<h1>home</h1>")
    );
    assert_eq!(
        index.field("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert_eq!(index.field("content-length"), Some("13"));
    assert_eq!(index.field("server"), Some("forkd"));
    assert_eq!(index.field("accept-ranges"), Some("bytes"));
    assert!(index.field("date").is_some_and(|d| d.ends_with(" GMT")));
    assert_eq!(curl(&[&url("/dir/")]).text(), "<h1>dir</h1>");
    let moved = curl(&[&url("/dir?x=1")]);
    assert_eq!(
        (moved.status, moved.field("location")),
        (301, Some("/dir/?x=1"))
    );
    assert_eq!(curl(&[&url("/empty/")]).status, 404, "no listing");

    let head = curl(&["-I", &url("/digits.txt")]);
    assert_eq!(head.status, 200);
    assert_eq!(head.field("content-length"), Some("36"));
    assert!(head.body.is_empty());

    let modified = index.field("last-modified").unwrap().to_string();
    let since = format!("If-Modified-Since: {modified}");
    let not_modified = curl(&["-H", &since, &url("/")]);
    assert_eq!((not_modified.status, not_modified.body.len()), (304, 0));
    let old = "If-Modified-Since: Thu, 01 Jan 1970 00:00:00 GMT";
    assert_eq!(curl(&["-H", old, &url("/")]).status, 200);
    let tag = index.field("etag").unwrap().to_string();
    let matching = format!("If-None-Match: {tag}");
    assert_eq!(curl(&["-H", &matching, &url("/")]).status, 304);
    let other = "If-None-Match: \"0-0\"";
    let changed = curl(&["-H", other, "-H", &since, &url("/")]);
    assert_eq!(
        changed.status, 200,
        "If-None-Match decides over If-Modified-Since"
    );

    let part = curl(&["-r", "10-19", &url("/digits.txt")]);
    assert_eq!((part.status, part.text().as_str()), (206, "abcdefghij"));
    assert_eq!(part.field("content-range"), Some("bytes 10-19/36"));
    let suffix = curl(&["-r", "-5", &url("/digits.txt")]);
    assert_eq!((suffix.status, suffix.text().as_str()), (206, "vwxyz"));
    let open_ended = curl(&["-r", "30-", &url("/digits.txt")]);
    assert_eq!(open_ended.text(), "uvwxyz");
    let several = curl(&["-r", "0-1,4-5", &url("/digits.txt")]);
    assert_eq!((several.status, several.text().as_str()), (200, DIGITS));
    let beyond = curl(&["-r", "36-", &url("/digits.txt")]);
    assert_eq!(beyond.status, 416);
    assert_eq!(beyond.field("content-range"), Some("bytes */36"));

    let missing = curl(&[&url("/missing.html")]);
    assert_eq!(missing.status, 404);
    assert!(
        missing.text().contains("404 Not Found"),
        "the built-in page"
    );
    std::fs::write(root.join("404.html"), "<p>our own 404</p>").unwrap();
    let missing = curl(&[&url("/missing.html")]);
    assert_eq!(
        (missing.status, missing.text().as_str()),
        (404, "<p>our own 404</p>")
    );

    for (name, content_type) in [
        ("style.css", "text/css; charset=utf-8"),
        ("app.js", "text/javascript; charset=utf-8"),
        ("logo.png", "image/png"),
        ("photo.jpg", "image/jpeg"),
        ("notes.txt", "text/plain; charset=utf-8"),
        ("data.json", "application/json"),
        ("icon.svg", "image/svg+xml"),
        ("mod.wasm", "application/wasm"),
        ("blob.xyz", "application/octet-stream"),
    ] {
        let reply = curl(&[&url(&format!("/{name}"))]);
        assert_eq!(reply.status, 200, "{name}");
        assert_eq!(reply.field("content-type"), Some(content_type), "{name}");
    }
    let spaced = curl(&[&url("/a%20file.txt")]);
    assert_eq!((spaced.status, spaced.text().as_str()), (200, "spaced"));
    drop(forkd);
}

#[test]
fn files_are_served_as_curl_sees_them_in_fork_mode() {
    files_are_served_as_curl_sees_them("fork");
}

#[test]
fn files_are_served_as_curl_sees_them_in_prefork_mode() {
    files_are_served_as_curl_sees_them("prefork");
}

#[test]
fn files_are_served_as_curl_sees_them_in_event_mode() {
    files_are_served_as_curl_sees_them("event");
}

/// The classic client reads once: a small file's head and body arrive
/// in that one recv (they leave in one write).
fn a_classic_client_gets_head_and_body_in_one_recv(mode: &str) {
    let test = "a_classic_client_gets_head_and_body_in_one_recv";
    if !have_tool("python3", test) {
        return;
    }
    let scratch = Scratch::new(&format!("http-classic-{mode}"));
    let (forkd, addr, _root) = serve_http(&scratch, mode, "");
    let (host, port) = addr.rsplit_once(':').unwrap();
    let client = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/http_client.py");
    let run = Command::new("python3")
        .args([client, host, port, "/", "/digits.txt", "/missing"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&run.stderr)
    );
    let mut lines = stdout.lines();
    assert_eq!(lines.next(), Some("200 13 13"));
    assert_eq!(lines.next(), Some("200 36 36"));
    let missing: Vec<&str> = lines.next().unwrap().split(' ').collect();
    assert_eq!(missing[0], "404");
    assert_eq!(missing[1], missing[2], "the whole 404 page in the one recv");
    drop(forkd);
}

#[test]
fn a_classic_client_gets_head_and_body_in_one_recv_in_fork_mode() {
    a_classic_client_gets_head_and_body_in_one_recv("fork");
}

#[test]
fn a_classic_client_gets_head_and_body_in_one_recv_in_prefork_mode() {
    a_classic_client_gets_head_and_body_in_one_recv("prefork");
}

#[test]
fn a_classic_client_gets_head_and_body_in_one_recv_in_event_mode() {
    a_classic_client_gets_head_and_body_in_one_recv("event");
}

fn nothing_outside_the_root_is_served(mode: &str) {
    let scratch = Scratch::new(&format!("http-escape-{mode}"));
    let (forkd, addr, _root) = serve_http(&scratch, mode, "");
    let mut client = Client::connect(&addr);
    for (target, status) in [
        ("/../secret.txt", 400),
        ("/%2e%2e/secret.txt", 400),
        ("/dir/..%2F..%2Fsecret.txt", 400),
        ("/notes.txt%00.html", 400),
        ("http://t/../secret.txt", 400),
        ("/out", 403),
        ("/abs", 403),
        ("/inside", 403),
    ] {
        let mut fresh = Client::connect(&addr);
        let reply = fresh.get(target);
        assert_eq!(reply.status, status, "{mode}: {target}");
        assert!(!reply.text().contains("SECRET"), "{target}");
        // The kept connection still works (and stays in the root).
        assert_eq!(client.get("/notes.txt").text(), "notes");
    }
    let absolute = client.get("http://elsewhere/notes.txt");
    assert_eq!((absolute.status, absolute.text().as_str()), (200, "notes"));
    drop(forkd);
}

#[test]
fn nothing_outside_the_root_is_served_in_fork_mode() {
    nothing_outside_the_root_is_served("fork");
}

#[test]
fn nothing_outside_the_root_is_served_in_prefork_mode() {
    nothing_outside_the_root_is_served("prefork");
}

#[test]
fn nothing_outside_the_root_is_served_in_event_mode() {
    nothing_outside_the_root_is_served("event");
}

#[test]
fn follow_symlinks_serves_links_inside_the_root_only() {
    let scratch = Scratch::new("http-follow");
    let (forkd, addr, _root) = serve_http(&scratch, "event", "follow_symlinks = true");
    let mut client = Client::connect(&addr);
    let inside = client.get("/inside");
    assert_eq!((inside.status, inside.text().as_str()), (200, "notes"));
    assert_eq!(
        inside.field("content-type"),
        Some("application/octet-stream")
    );
    assert_eq!(client.get("/out").status, 403);
    assert_eq!(client.get("/abs").status, 403);
    drop(forkd);
}

fn keep_alive_pipelining_and_the_cap(mode: &str) {
    let scratch = Scratch::new(&format!("http-keepalive-{mode}"));
    let extra = "max_requests_per_connection = 4\nkeepalive_timeout = \"1s\"";
    let (forkd, addr, _root) = serve_http(&scratch, mode, extra);
    // Several requests on one connection; a HEAD leaves no body behind.
    let mut client = Client::connect(&addr);
    assert_eq!(client.get("/notes.txt").text(), "notes");
    client.send(b"HEAD /digits.txt HTTP/1.1\r\nHost: t\r\n\r\n");
    let head = client.reply(true);
    assert_eq!(
        (head.status, head.field("content-length")),
        (200, Some("36"))
    );
    assert_eq!(
        client.get("/data.json").text(),
        "{}",
        "the next reply follows the HEAD's head"
    );
    // The fourth reply is the last: it says so and the connection closes.
    let last = client.get("/notes.txt");
    assert_eq!(last.field("connection"), Some("close"));
    assert!(
        client.closed(),
        "{mode}: closed after max_requests_per_connection"
    );

    // Pipelined in one write, answered in order.
    let mut client = Client::connect(&addr);
    let targets = ["/notes.txt", "/missing", "/digits.txt", "/data.json"];
    let batch: String = targets
        .iter()
        .map(|t| format!("GET {t} HTTP/1.1\r\nHost: t\r\n\r\n"))
        .collect();
    client.send(batch.as_bytes());
    let got: Vec<(u16, usize)> = (0..4)
        .map(|_| client.reply(false))
        .map(|r| (r.status, r.body.len()))
        .collect();
    assert_eq!(got[0], (200, 5));
    assert_eq!(got[1].0, 404);
    assert_eq!(got[2..], [(200, 36), (200, 2)]);

    // Connection: close, and HTTP/1.0 without keep-alive, close after one.
    for request in [
        "GET /notes.txt HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        "GET /notes.txt HTTP/1.0\r\n\r\n",
    ] {
        let mut client = Client::connect(&addr);
        client.send(request.as_bytes());
        assert_eq!(client.reply(false).text(), "notes");
        assert!(client.closed(), "{mode}: {request:?} closes");
    }
    let mut client = Client::connect(&addr);
    client.send(b"GET /notes.txt HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    assert_eq!(client.reply(false).field("connection"), Some("keep-alive"));
    assert_eq!(client.get("/data.json").text(), "{}");

    // Idle for keepalive_timeout after a reply: closed (the read times
    // out after 5 s if not).
    let mut idle = Client::connect(&addr);
    assert_eq!(idle.get("/notes.txt").text(), "notes");
    let since = Instant::now();
    assert!(idle.closed(), "{mode}: closed after keepalive_timeout");
    assert!(
        since.elapsed() >= Duration::from_millis(900),
        "{mode}: not before it"
    );
    drop(forkd);
}

#[test]
fn keep_alive_pipelining_and_the_cap_in_fork_mode() {
    keep_alive_pipelining_and_the_cap("fork");
}

#[test]
fn keep_alive_pipelining_and_the_cap_in_prefork_mode() {
    keep_alive_pipelining_and_the_cap("prefork");
}

#[test]
fn keep_alive_pipelining_and_the_cap_in_event_mode() {
    keep_alive_pipelining_and_the_cap("event");
}

fn bad_requests_close_only_their_own_connection(mode: &str) {
    let scratch = Scratch::new(&format!("http-bad-{mode}"));
    let extra = "keepalive_timeout = \"60s\"\nmax_line = \"8KiB\"";
    let (forkd, addr, _root) = serve_http(&scratch, mode, extra);
    let mut good = Client::connect(&addr);
    // A head within max_line is served.
    let fields = format!(
        "GET /notes.txt HTTP/1.1\r\nHost: t\r\nX-Pad: {}\r\n\r\n",
        "p".repeat(6 << 10)
    );
    good.send(fields.as_bytes());
    assert_eq!(good.reply(false).text(), "notes", "{mode}: a 6 KiB head");
    let huge_fields = format!(
        "GET / HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\n\r\n",
        "b".repeat(9 << 10)
    );
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("garbage", b"\x00\x01 not http at all\r\n\r\n".to_vec(), 400),
        ("no version", b"GET /\r\n\r\n".to_vec(), 400),
        ("1.1 without Host", b"GET / HTTP/1.1\r\n\r\n".to_vec(), 400),
        ("POST", b"POST / HTTP/1.1\r\nHost: t\r\n\r\n".to_vec(), 405),
        (
            "a body",
            b"GET / HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n\r\nbody".to_vec(),
            413,
        ),
        ("huge header fields", huge_fields.into_bytes(), 431),
    ];
    for (what, bytes, status) in cases {
        let mut bad = Client::connect(&addr);
        bad.send(&bytes);
        let reply = bad.reply(false);
        assert_eq!(reply.status, status, "{mode}: {what}");
        assert_eq!(reply.field("connection"), Some("close"), "{what}");
        if status == 405 {
            assert_eq!(reply.field("allow"), Some("GET, HEAD"));
        }
        // The refusal was read whole above, then EOF: the close lingered.
        assert_eq!(bad.ends_in_eof(), Ok(()), "{mode}: {what}: closed");
        assert_eq!(good.get("/notes.txt").text(), "notes", "after {what}");
    }
    // A 10 MB request line: 414 once max_line is passed, whatever the
    // client is still sending; the status line is read reliably, then
    // EOF (not a reset), while the server reads and drops the rest.
    let mut bad = Client::connect(&addr);
    let mut writer = bad.reader.get_ref().try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        let line = format!("GET /{} HTTP/1.1\r\n", "a".repeat(10 << 20));
        writer.write_all(line.as_bytes())
    });
    assert_eq!(bad.reply(false).status, 414, "{mode}: a 10 MB request line");
    assert_eq!(bad.ends_in_eof(), Ok(()), "{mode}: EOF after the 414");
    let sent = sender.join().unwrap();
    assert!(sent.is_ok(), "{mode}: the rest was taken: {sent:?}");
    drop(bad);
    assert_eq!(
        good.get("/notes.txt").text(),
        "notes",
        "after the long line"
    );
    drop(forkd);
}

#[test]
fn bad_requests_close_only_their_own_connection_in_fork_mode() {
    bad_requests_close_only_their_own_connection("fork");
}

#[test]
fn bad_requests_close_only_their_own_connection_in_prefork_mode() {
    bad_requests_close_only_their_own_connection("prefork");
}

#[test]
fn bad_requests_close_only_their_own_connection_in_event_mode() {
    bad_requests_close_only_their_own_connection("event");
}

/// 32 clients from 127.0.0.1 at the defaults (no `workers`, no limits
/// set), each 50 requests on fresh connections and 50 on one kept
/// connection: every one answered 200 with the right body.
/// Whether `pid` is blocked in epoll_wait(2) (its wchan).
fn waits_in_epoll(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/wchan")).is_ok_and(|w| w == "do_epoll_wait")
}

fn defaults_answer_3200_requests_from_one_address_at_c32(mode: &str) {
    let scratch = Scratch::new(&format!("http-load-{mode}"));
    let root = site(&scratch);
    let body: Vec<u8> = (0..40_000).map(|i| (i % 251) as u8).collect();
    std::fs::write(root.join("big.bin"), &body).unwrap();
    let root = format!("root = \"{}\"", root.display());
    let (forkd, addr) = serve(&scratch, mode, "http", &root);
    // Event workers' descriptors before: each request's file is closed
    // once sent, each connection once it ends.
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut fds_before = Vec::new();
    if mode == "event" {
        // Counted once each worker is set up and waits in epoll_wait: a
        // worker still closing what it inherited has more open.
        wait_until("the event workers, set up", Duration::from_secs(10), || {
            let pids = children(forkd.pid());
            pids.len() == workers && pids.iter().all(|&pid| waits_in_epoll(pid))
        });
        fds_before = children(forkd.pid())
            .into_iter()
            .map(|pid| (pid, fd_count(pid)))
            .collect();
    }
    let started = Instant::now();
    let errors: Vec<String> = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..32)
            .map(|c| {
                let (addr, body) = (&addr, &body);
                scope.spawn(move || {
                    let mut errors = Vec::new();
                    let mut kept = Client::connect(addr);
                    for i in 0..50 {
                        if started.elapsed() > MAX_TIME {
                            errors.push(format!("client {c}: out of time at {i}"));
                            break;
                        }
                        let target = if i % 2 == 0 {
                            "/big.bin"
                        } else {
                            "/index.html"
                        };
                        let want: &[u8] = if i % 2 == 0 { body } else { b"<h1>home</h1>" };
                        let fresh = Client::connect(addr).get(target);
                        let again = kept.get(target);
                        for (how, reply) in [("fresh", fresh), ("kept", again)] {
                            if reply.status != 200 || reply.body != want {
                                errors.push(format!("client {c} {how} {i}: {}", reply.status));
                            }
                        }
                    }
                    errors
                })
            })
            .collect();
        threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect()
    });
    assert_all_answered(&format!("{mode}/http"), &errors, 3200);
    assert_eq!(forkd.log.count("refused"), 0, "nothing was refused");
    wait_until("no descriptor left open", Duration::from_secs(10), || {
        fds_before.iter().all(|&(pid, n)| fd_count(pid) == n)
    });
    wait_no_zombies(forkd.pid());
    drop(forkd);
}

#[test]
fn event_mode_at_the_defaults_answers_3200_requests_from_one_address_at_c32() {
    defaults_answer_3200_requests_from_one_address_at_c32("event");
}

/// Fork mode is what a config without `mode` gets.
#[test]
fn fork_mode_at_the_defaults_answers_3200_requests_from_one_address_at_c32() {
    defaults_answer_3200_requests_from_one_address_at_c32("fork");
}

#[test]
fn a_zero_request_cap_is_a_config_error_at_its_value() {
    let scratch = Scratch::new("http-cap-error");
    let config = service_config(
        &scratch,
        "listen = [\"tcp://127.0.0.1:0\"]\nhandler = \"http\"\nroot = \"/\"\nmax_requests_per_connection = 0",
    );
    let run = Command::new(env!("CARGO_BIN_EXE_forkd"))
        .args(["--check", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("forkd.toml:6:31:") && stderr.contains("max_requests_per_connection"),
        "{stderr}"
    );
}
