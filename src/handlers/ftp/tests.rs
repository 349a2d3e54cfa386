//! The session's table, fed events and times by hand over a scratch root:
//! no socket, no clock, no sleep. Output is read back through a pipe.

use std::io::Read;
use std::path::{Path, PathBuf};

use super::*;

const PAUSE: Duration = Duration::from_millis(100);
const QUIET: Duration = Duration::from_millis(200);

/// A scratch root, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("forkd-ftp-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn session(&self, max_file_size: u64) -> FtpSession {
        let settings = Settings {
            pause: PAUSE,
            upload_quiet: QUIET,
            max_file_size,
        };
        FtpSession::new(Root::open(&self.0).unwrap(), settings)
    }

    /// The names in the root, hidden ones too, sorted.
    fn entries(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Everything `out` holds, written through a pipe (small outputs only).
fn sent(out: &mut Output) -> Vec<u8> {
    let (read, write) = nix::unistd::pipe().unwrap();
    let mut read = std::fs::File::from(read);
    while !out.write_to(write.as_fd()).unwrap().drained {}
    drop(write);
    let mut got = Vec::new();
    read.read_to_end(&mut got).unwrap();
    got
}

/// Feeds one event at `at` ms after `t0`; what it queued and the flow.
fn at(
    session: &mut FtpSession,
    t0: Instant,
    ms: u64,
    event: Event<'_>,
    out: &mut Output,
) -> (Vec<u8>, Flow) {
    let flow = session.step(event, t0 + Duration::from_millis(ms), out);
    (sent(out), flow)
}

#[test]
fn requests_split_at_the_first_space() {
    assert_eq!(parse(b"LIST"), Ok(Request::List));
    assert_eq!(parse(b"LIST\n"), Ok(Request::List));
    assert_eq!(parse(b"EXIT"), Ok(Request::Exit));
    assert_eq!(parse(b"GET a b.txt"), Ok(Request::Get("a b.txt")));
    assert_eq!(parse(b"PUT x\r\n"), Ok(Request::Put("x")));
    assert_eq!(parse(b"GET"), Err(Refusal::NoName("GET")));
    assert_eq!(parse(b"PUT "), Err(Refusal::NoName("PUT")));
    assert_eq!(parse(b"DELE x"), Err(Refusal::UnknownVerb));
    assert_eq!(parse(b"list"), Err(Refusal::UnknownVerb));
    assert_eq!(parse(b"GET \xff"), Err(Refusal::NotUtf8));
    assert_eq!(parse(&[b'A'; MAX_REQUEST]), Err(Refusal::UnknownVerb));
    assert_eq!(parse(&[b'A'; MAX_REQUEST + 1]), Err(Refusal::TooLong));
}

#[test]
fn list_answers_ok_then_after_the_pause_the_regular_files() {
    let root = Scratch::new("list");
    let mut s = root.session(1 << 20);
    let mut out = Output::new();
    let t0 = Instant::now();
    assert_eq!(at(&mut s, t0, 0, Event::Input(b"LIST"), &mut out).0, FAIL);
    for name in ["b.txt", "a.bin", ".hidden"] {
        std::fs::write(root.path(name), name).unwrap();
    }
    std::fs::create_dir(root.path("dir")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", root.path("link")).unwrap();

    assert_eq!(at(&mut s, t0, 1, Event::Input(b"LIST"), &mut out).0, OK);
    assert!(!s.wants_input(), "the client is not read during a reply");
    assert_eq!(s.deadline(), None, "the pause starts once OK has left");
    at(&mut s, t0, 5, Event::Drained, &mut out);
    assert_eq!(s.deadline(), Some(t0 + Duration::from_millis(5) + PAUSE));
    assert_eq!(at(&mut s, t0, 50, Event::Wake, &mut out).0, b"");
    assert_eq!(
        at(&mut s, t0, 105, Event::Wake, &mut out).0,
        b"a.bin\nb.txt"
    );
    assert!(s.wants_input() && s.deadline().is_none());
}

#[test]
fn get_sends_ok_a_pause_the_file_a_pause_and_the_mark() {
    let root = Scratch::new("get");
    let content: Vec<u8> = (0..=255u8).cycle().take(4096).collect();
    std::fs::write(root.path("all.bin"), &content).unwrap();
    std::fs::write(root.path("empty"), b"").unwrap();
    let mut s = root.session(1 << 20);
    let mut out = Output::new();
    let t0 = Instant::now();
    for (name, want) in [("all.bin", &content[..]), ("empty", &b""[..])] {
        let get = format!("GET {name}");
        assert_eq!(
            at(&mut s, t0, 0, Event::Input(get.as_bytes()), &mut out).0,
            OK
        );
        at(&mut s, t0, 0, Event::Drained, &mut out);
        let (file, _) = at(&mut s, t0, 100, Event::Wake, &mut out);
        assert!(file == want, "{name}: the file's bytes, alone");
        if !want.is_empty() {
            assert_eq!(s.deadline(), None, "the second pause waits for the file");
            at(&mut s, t0, 120, Event::Drained, &mut out);
        }
        assert_eq!(at(&mut s, t0, 150, Event::Wake, &mut out).0, b"", "{name}");
        assert_eq!(at(&mut s, t0, 220, Event::Wake, &mut out).0, END_MARK);
        assert!(matches!(s.state, State::Request));
    }
}

#[test]
fn refused_requests_fail_and_the_session_goes_on() {
    let root = Scratch::new("refused");
    std::fs::write(root.path("there"), b"x").unwrap();
    std::fs::create_dir(root.path("dir")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", root.path("link")).unwrap();
    let mut s = root.session(1 << 20);
    let mut out = Output::new();
    let t0 = Instant::now();
    let reads: &[&[u8]] = &[
        b"GET",
        b"PUT",
        b"GET missing",
        b"GET dir",
        b"GET link",
        b"GET ../etc/passwd",
        b"GET .",
        b"GET a\0b",
        b"PUT there",
        b"PUT link",
        b"PUT a/b",
        b"PUT ..",
        b"PUT .forkd-partial-1-1",
        b"GET \xff\xfe",
        b"HELP",
    ];
    for read in reads {
        let (reply, flow) = at(&mut s, t0, 0, Event::Input(read), &mut out);
        assert_eq!((&reply[..], flow), (FAIL, Flow::Continue), "{read:?}");
    }
    assert_eq!(root.entries(), ["dir", "link", "there"]);
    assert_eq!(
        at(&mut s, t0, 0, Event::Input(b"EXIT"), &mut out),
        (Vec::new(), Flow::Close)
    );
    assert!(!s.unread_input(), "EXIT is a whole request: a plain close");
}

/// Starts a `PUT name`, checking its `OK`.
fn put(s: &mut FtpSession, name: &str, out: &mut Output) {
    let t0 = Instant::now();
    let request = format!("PUT {name}");
    assert_eq!(at(s, t0, 0, Event::Input(request.as_bytes()), out).0, OK);
    assert!(s.wants_input());
}

#[test]
fn a_read_of_exactly_the_mark_stores_the_upload_and_a_second_put_fails() {
    let root = Scratch::new("put");
    let mut s = root.session(1 << 20);
    let mut out = Output::new();
    let t0 = Instant::now();
    put(&mut s, "up.bin", &mut out);
    for read in [&b"ab##c"[..], b"#", b"d\0\xff", b"##"] {
        assert_eq!(at(&mut s, t0, 1, Event::Input(read), &mut out).0, b"");
    }
    assert_eq!(
        std::fs::read(root.path("up.bin")).unwrap(),
        b"ab##c#d\0\xff"
    );
    assert!(matches!(s.state, State::Request), "no reply, next request");
    assert_eq!(
        at(&mut s, t0, 2, Event::Input(b"PUT up.bin"), &mut out).0,
        FAIL
    );
    assert_eq!(root.entries(), ["up.bin"]);
}

#[test]
fn a_trailing_mark_then_quiet_ends_the_upload_without_the_mark() {
    let root = Scratch::new("quiet");
    let mut s = root.session(1 << 20);
    let mut out = Output::new();
    let t0 = Instant::now();
    put(&mut s, "merged", &mut out);
    at(&mut s, t0, 10, Event::Input(b"data##"), &mut out);
    assert_eq!(s.deadline(), Some(t0 + Duration::from_millis(10) + QUIET));
    at(&mut s, t0, 150, Event::Wake, &mut out);
    assert!(matches!(s.state, State::Receiving { .. }), "not quiet yet");
    at(&mut s, t0, 210, Event::Wake, &mut out);
    assert!(matches!(s.state, State::Request));
    assert_eq!(std::fs::read(root.path("merged")).unwrap(), b"data");

    // More bytes within the quiet time: the `##` was data.
    put(&mut s, "kept", &mut out);
    at(&mut s, t0, 300, Event::Input(b"a##"), &mut out);
    at(&mut s, t0, 400, Event::Input(b"b"), &mut out);
    assert_eq!(s.deadline(), None);
    at(&mut s, t0, 401, Event::Input(b"##"), &mut out);
    assert_eq!(std::fs::read(root.path("kept")).unwrap(), b"a##b");
    assert_eq!(root.entries(), ["kept", "merged"]);
}

#[test]
fn eof_before_the_mark_discards_the_upload() {
    let root = Scratch::new("eof");
    let mut out = Output::new();
    let t0 = Instant::now();
    let mut s = root.session(1 << 20);
    put(&mut s, "cut", &mut out);
    at(&mut s, t0, 1, Event::Input(b"partial"), &mut out);
    assert_eq!(root.entries().len(), 1, "the temporary file");
    let (_, flow) = at(&mut s, t0, 2, Event::InputEnded, &mut out);
    assert_eq!((flow, root.entries()), (Flow::Close, Vec::<String>::new()));

    // EOF right after a trailing `##`: that was the end.
    let mut s = root.session(1 << 20);
    put(&mut s, "ended", &mut out);
    at(&mut s, t0, 1, Event::Input(b"all##"), &mut out);
    at(&mut s, t0, 2, Event::InputEnded, &mut out);
    assert_eq!(std::fs::read(root.path("ended")).unwrap(), b"all");
    assert_eq!(root.entries(), ["ended"]);
}

#[test]
fn an_upload_over_max_file_size_is_discarded_and_closes() {
    let root = Scratch::new("big");
    let mut s = root.session(8);
    let mut out = Output::new();
    let t0 = Instant::now();
    put(&mut s, "big", &mut out);
    assert_eq!(
        at(&mut s, t0, 1, Event::Input(b"12345678"), &mut out).1,
        Flow::Continue
    );
    assert_eq!(
        at(&mut s, t0, 2, Event::Input(b"9"), &mut out),
        (Vec::new(), Flow::Close)
    );
    assert!(
        s.unread_input(),
        "the rest may still come: the close lingers"
    );
    assert!(root.entries().is_empty(), "nothing left behind");
}

#[test]
fn an_over_long_request_is_dropped_until_quiet_then_fails() {
    let root = Scratch::new("long");
    let mut s = root.session(10_000);
    let mut out = Output::new();
    let t0 = Instant::now();
    let long = vec![b'G'; MAX_REQUEST + 1];
    assert_eq!(at(&mut s, t0, 0, Event::Input(&long), &mut out).0, b"");
    assert_eq!(at(&mut s, t0, 150, Event::Input(b"LIST"), &mut out).0, b"");
    assert_eq!(s.deadline(), Some(t0 + Duration::from_millis(150) + QUIET));
    assert_eq!(at(&mut s, t0, 300, Event::Wake, &mut out).0, b"");
    assert_eq!(at(&mut s, t0, 350, Event::Wake, &mut out).0, FAIL);
    assert_eq!(at(&mut s, t0, 360, Event::Input(b"LIST"), &mut out).0, FAIL);
    // One that never stops closes past max_file_size (10 000 bytes).
    let reads =
        (0..20).position(|_| at(&mut s, t0, 400, Event::Input(&long), &mut out).1 == Flow::Close);
    assert_eq!(reads, Some(9), "the tenth read of 1025 bytes is past it");
    assert!(!s.wants_input());
}

#[test]
fn a_listing_stays_under_one_mib() {
    let root = Scratch::new("many");
    for i in 0..5000 {
        std::fs::write(root.path(&format!("{i:0>250}")), b"").unwrap();
    }
    let s = root.session(1);
    let names = s.listing().unwrap();
    assert!(names.len() < MAX_LISTING && names.len() > MAX_LISTING - 252);
    assert!(!names.ends_with(b"\n"));
}

#[test]
fn a_missing_root_is_a_start_up_error() {
    let text = "[[service]]\nname = \"f\"\nlisten = [\"tcp://127.0.0.1:1\"]\nhandler = \"ftp\"\nroot = \"/nonexistent/forkd-ftp\"\n";
    let config = crate::config::Config::parse(text, Path::new("t.toml")).unwrap();
    let e = Ftp::new(&Context::new(&config.services[0])).unwrap_err();
    assert!(e.to_string().contains("cannot open root"), "{e}");
}

#[test]
fn the_config_asks_for_reads_that_hold_a_whole_request() {
    let parse = |max_line: usize| {
        let text = format!("[[service]]\nname = \"f\"\nlisten = [\"tcp://127.0.0.1:1\"]\nhandler = \"ftp\"\nroot = \"/\"\nmax_line = {max_line}\n");
        crate::config::Config::parse(&text, Path::new("t.toml"))
    };
    assert!(parse(MAX_REQUEST).is_ok());
    assert!(parse(MAX_REQUEST - 1).is_err());
}
