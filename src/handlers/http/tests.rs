//! Sessions fed requests directly (no socket), their output drained
//! through a socket pair as a driver would.

use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

use super::*;
use crate::config::Config;

struct Root(PathBuf);

impl Drop for Root {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn root(tag: &str) -> Root {
    let dir = std::env::temp_dir().join(format!("forkd-http-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("index.html"), "<p>hi</p>").unwrap();
    std::fs::write(dir.join("big.bin"), vec![7u8; 100 << 10]).unwrap();
    Root(dir)
}

fn handler(root: &Root, extra: &str) -> Http {
    let text = format!(
        "[[service]]\nname = \"t\"\nlisten = [\"tcp://127.0.0.1:1\"]\nhandler = \"http\"\nmode = \"event\"\nroot = \"{}\"\n{extra}",
        root.0.display()
    );
    let config = Config::parse(&text, std::path::Path::new("t.toml")).unwrap();
    Http::new(&Context::new(&config.services[0])).unwrap()
}

/// Feeds `input` in pieces of `step` bytes, pulling deferred replies with
/// `drained` as a driver does; returns what was sent and the last flow.
fn exchange(handler: &Http, input: &[u8], step: usize) -> (String, Flow) {
    let mut session = handler.session().unwrap();
    let (near, far) = UnixStream::pair().unwrap();
    near.set_nonblocking(true).unwrap();
    far.set_nonblocking(true).unwrap();
    let mut out = Output::new();
    let mut sent = Vec::new();
    let mut flow = Flow::Continue;
    let mut pieces = input.chunks(step);
    loop {
        let mut closing = flow == Flow::Close;
        loop {
            super::super::write_out(&near, &mut out, &mut *session, &mut closing).unwrap();
            let mut buf = [0u8; 64 << 10];
            while let Ok(n) = std::io::Read::read(&mut &far, &mut buf) {
                sent.extend_from_slice(&buf[..n]);
            }
            if out.is_empty() {
                break;
            }
        }
        if closing {
            flow = Flow::Close;
            break;
        }
        if !session.wants_input() {
            continue;
        }
        match pieces.next() {
            Some(piece) => flow = session.input(piece, &mut out),
            None => break,
        }
    }
    (String::from_utf8_lossy(&sent).into_owned(), flow)
}

fn statuses(replies: &str) -> Vec<&str> {
    replies
        .split("HTTP/1.1 ")
        .skip(1)
        .map(|r| &r[..3])
        .collect()
}

#[test]
fn pipelined_requests_are_answered_in_order_however_they_arrive() {
    let root = root("pipeline");
    let http = handler(&root, "");
    let mut input = Vec::new();
    for target in ["/", "/big.bin", "/missing", "/index.html"] {
        input.extend_from_slice(format!("GET {target} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
    }
    for step in [1, 7, input.len()] {
        let (sent, flow) = exchange(&http, &input, step);
        assert_eq!(statuses(&sent), ["200", "200", "404", "200"], "step {step}");
        assert_eq!(flow, Flow::Continue);
        assert_eq!(sent.matches("<p>hi</p>").count(), 2);
        assert!(sent.contains("Content-Length: 102400\r\n"));
    }
}

#[test]
fn the_request_cap_closes_after_the_last_allowed_reply() {
    let root = root("cap");
    let http = handler(&root, "max_requests_per_connection = 2\n");
    let input = "GET / HTTP/1.1\r\nHost: x\r\n\r\n".repeat(3);
    let (sent, flow) = exchange(&http, input.as_bytes(), input.len());
    assert_eq!(statuses(&sent), ["200", "200"]);
    assert_eq!(sent.matches("Connection: close\r\n").count(), 1);
    assert_eq!(flow, Flow::Close);
}

/// A refusal, or bytes pipelined behind the closing reply, leave input
/// unread (the drivers then linger); a whole `Connection: close` request
/// does not, so its close stays plain.
#[test]
fn only_a_close_that_leaves_input_unread_lingers() {
    let root = root("unread");
    let http = handler(&root, "max_line = 1024\n");
    let close = "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let long_line = format!("GET /{} HTTP/1.1\r\n", "a".repeat(2000));
    let cases = [
        (close.to_string(), false),
        (format!("{close}GET / HTTP/1.1\r\n"), true),
        (long_line, true),
        ("POST / HTTP/1.1\r\nHost: x\r\n\r\n".to_string(), true),
    ];
    for (input, unread) in cases {
        let mut session = http.session().unwrap();
        let mut out = Output::new();
        let flow = session.input(input.as_bytes(), &mut out);
        assert_eq!(flow, Flow::Close, "{input:?}");
        assert_eq!(session.unread_input(), unread, "{input:?}");
    }
}

#[test]
fn oversized_heads_are_414_or_431_and_close() {
    let root = root("limits");
    let http = handler(&root, "max_line = 1024\n");
    let long_line = format!("GET /{} HTTP/1.1\r\n", "a".repeat(2000));
    let (sent, flow) = exchange(&http, long_line.as_bytes(), 100);
    assert_eq!((statuses(&sent), flow), (vec!["414"], Flow::Close));
    let long_fields = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX: {}\r\n\r\n",
        "b".repeat(2000)
    );
    let (sent, flow) = exchange(&http, long_fields.as_bytes(), 100);
    assert_eq!((statuses(&sent), flow), (vec!["431"], Flow::Close));
    let many = format!(
        "GET / HTTP/1.1\r\n{}\r\n",
        "A: b\r\n".repeat(MAX_HEADERS + 1)
    );
    let (sent, _) = exchange(&http, many.as_bytes(), many.len());
    assert_eq!(statuses(&sent), ["431"]);
}

#[test]
fn the_keepalive_timer_closes_an_idle_connection_only() {
    let root = root("timer");
    let http = handler(&root, "keepalive_timeout = \"80ms\"\n");
    let mut session = http.session().unwrap();
    let mut out = Output::new();
    assert_eq!(session.deadline(), None, "no timer before the first reply");
    session.input(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", &mut out);
    let (near, _far) = UnixStream::pair().unwrap();
    near.set_nonblocking(true).unwrap();
    let mut closing = false;
    super::super::write_out(&near.as_fd(), &mut out, &mut *session, &mut closing).unwrap();
    let at = session.deadline().expect("a timer once idle");
    let now = Instant::now();
    assert!(at >= now + Duration::from_millis(70) && at <= now + Duration::from_millis(100));
    assert_eq!(
        session.wake(now, &mut out),
        Flow::Continue,
        "not yet idle long enough"
    );
    assert_eq!(session.wake(at, &mut out), Flow::Close);
}

/// Sends what `out` holds through a socket pair; returns it as text.
fn written(session: &mut dyn Session, out: &mut Output) -> String {
    let (near, far) = UnixStream::pair().unwrap();
    near.set_nonblocking(true).unwrap();
    let mut closing = false;
    super::super::write_out(&near.as_fd(), out, session, &mut closing).unwrap();
    assert!(out.is_empty(), "a small reply leaves in one go");
    drop(near);
    let mut text = String::new();
    std::io::Read::read_to_string(&mut &far, &mut text).unwrap();
    text
}

#[test]
fn a_drain_closes_between_requests_and_makes_a_request_in_hand_the_last() {
    let root = root("drain");
    let http = handler(&root, "");
    let request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";

    let mut idle = http.session().unwrap();
    let mut out = Output::new();
    assert_eq!(idle.input(request, &mut out), Flow::Continue);
    assert!(!written(&mut *idle, &mut out).contains("Connection: close"));
    assert_eq!(idle.drain(), Flow::Close, "nothing in hand: close now");

    // Not yet a first request, then half of one: it is answered, and its
    // reply says it is the last.
    let mut fresh = http.session().unwrap();
    assert_eq!(fresh.drain(), Flow::Continue);
    assert_eq!(fresh.input(&request[..20], &mut out), Flow::Continue);
    assert_eq!(fresh.drain(), Flow::Continue, "a request in hand");
    assert_eq!(fresh.input(&request[20..], &mut out), Flow::Close);
    let reply = written(&mut *fresh, &mut out);
    assert!(reply.starts_with("HTTP/1.1 200 "), "{reply}");
    assert!(reply.contains("Connection: close\r\n"), "{reply}");
}
