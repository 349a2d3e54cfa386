//! `files`: the classic length-prefixed JSON-header drop box under `root`.
//!
//! A frame is `HLEN | HEADER | BODY`: HLEN a signed 32-bit little-endian
//! length (Python's `struct.pack('i')`), HEADER that many bytes of a JSON
//! object, BODY as many bytes as the header says. `put` stores its body as
//! `root/NAME` and answers nothing; `get` answers a header frame with the
//! file's size, then the file, queued as a file range (sendfile), never
//! read whole; a missing or refused file gets `"filesize": -1` and an
//! `"error"`. Anything else (HLEN <= 0 or over the limit, a header that is
//! not a JSON object, another `cmd`, a bad put) closes the session, since
//! the length of what follows is unknown.
//!
//! Invariants: names and uploads follow `root.rs` (basenames opened under
//! the root's descriptor with `O_NOFOLLOW`; an upload renamed into place
//! only once complete, so an early EOF, a timeout or a refusal leaves
//! nothing behind); a body is counted to the byte, so the next frame is
//! never eaten. Never blocks on the socket; writes to the file system in
//! place.

use std::os::fd::{AsFd, BorrowedFd};

use super::root::{check_name, Root, Upload};
use super::{Context, Flow, Handler, HandlerError, Output, Session};

/// The largest header accepted: the classic limit (64 KiB).
pub const MAX_HEADER: usize = 64 << 10;

/// The `files` handler: the root directory, opened once when built.
#[derive(Debug)]
pub struct Files {
    root: Root,
    max_file_size: u64,
    overwrite: bool,
}

impl Files {
    pub fn new(context: &Context<'_>) -> Result<Files, HandlerError> {
        let config = context.service;
        Ok(Files {
            root: Root::of(context, "files")?,
            max_file_size: config.max_file_size,
            overwrite: config.overwrite,
        })
    }
}

impl Handler for Files {
    fn name(&self) -> &'static str {
        "files"
    }

    fn keep_open(&self, keep: &mut dyn FnMut(BorrowedFd<'_>)) {
        keep(self.root.as_fd());
    }

    fn session(&self) -> Option<Box<dyn Session>> {
        Some(Box::new(FilesSession {
            root: self.root.clone(),
            max_file_size: self.max_file_size,
            overwrite: self.overwrite,
            state: State::Length(Vec::with_capacity(4)),
        }))
    }
}

/// What one header asks.
#[derive(Debug, PartialEq, Eq)]
pub enum Request {
    Put { name: String, size: u64 },
    Get { name: String },
}

/// Why a frame closes the session.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("header length {0} is not in 1..={MAX_HEADER}")]
    HeaderLength(i32),
    #[error("the header is not a JSON object")]
    NotJson,
    #[error("unknown cmd {0:?}")]
    UnknownCmd(String),
    #[error("put needs a non-negative integer filesize")]
    BadSize,
    #[error("put of a file over max_file_size")]
    TooLarge,
    #[error("bad file name: {0}")]
    BadName(&'static str),
    #[error("the upload could not be written (a full disk?)")]
    Write,
}

/// HLEN's four bytes (little-endian, signed) as a header length.
pub fn header_length(bytes: [u8; 4]) -> Result<usize, Refusal> {
    let n = i32::from_le_bytes(bytes);
    match usize::try_from(n) {
        Ok(len) if (1..=MAX_HEADER).contains(&len) => Ok(len),
        _ => Err(Refusal::HeaderLength(n)),
    }
}

/// Reads a header. A `get` with a bad name is still a request (it is
/// answered with a refusal); a `put` with one is not.
pub fn parse_header(header: &[u8], max_file_size: u64) -> Result<Request, Refusal> {
    let value: serde_json::Value = serde_json::from_slice(header).map_err(|_| Refusal::NotJson)?;
    let object = value.as_object().ok_or(Refusal::NotJson)?;
    let name = object
        .get("filename")
        .and_then(|n| n.as_str())
        .unwrap_or("")
        .to_string();
    match object.get("cmd").and_then(|c| c.as_str()) {
        Some("get") => Ok(Request::Get { name }),
        Some("put") => {
            check_name(&name).map_err(Refusal::BadName)?;
            let size = object
                .get("filesize")
                .and_then(|s| s.as_u64())
                .ok_or(Refusal::BadSize)?;
            if size > max_file_size {
                return Err(Refusal::TooLarge);
            }
            Ok(Request::Put { name, size })
        }
        Some(other) => Err(Refusal::UnknownCmd(other.to_string())),
        None => Err(Refusal::UnknownCmd(String::new())),
    }
}

/// The `get` reply header as Python's `json.dumps` writes it (`", "` and
/// `": "` separators, non-ASCII as `\uXXXX`), framed with its HLEN.
pub fn get_reply(name: &str, size: i64, error: Option<&str>, out: &mut Vec<u8>) {
    let mut header = String::from("{\"cmd\": \"get\", \"filename\": ");
    python_string(name, &mut header);
    header.push_str(&format!(", \"filesize\": {size}"));
    if let Some(error) = error {
        header.push_str(", \"error\": ");
        python_string(error, &mut header);
    }
    header.push('}');
    let len = i32::try_from(header.len()).unwrap_or(i32::MAX);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(header.as_bytes());
}

/// A JSON string with `ensure_ascii`, as Python's `json.dumps`.
fn python_string(text: &str, out: &mut String) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            ' '..='~' => out.push(c),
            _ => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
        }
    }
    out.push('"');
}

/// Where a connection is in its frame.
#[derive(Debug)]
enum State {
    /// Collecting HLEN's four bytes.
    Length(Vec<u8>),
    /// Collecting `len` header bytes.
    Header { len: usize, bytes: Vec<u8> },
    /// Storing (or, when refused, skipping) `left` body bytes.
    Body { upload: Option<Upload>, left: u64 },
    /// Refused: nothing more is read.
    Closed,
}

/// One connection of the drop box.
#[derive(Debug)]
struct FilesSession {
    root: Root,
    max_file_size: u64,
    overwrite: bool,
    state: State,
}

impl FilesSession {
    /// Consumes what `data` holds of the current step; returns how many
    /// bytes it took.
    fn step(&mut self, data: &[u8], out: &mut Output) -> Result<usize, Refusal> {
        match &mut self.state {
            State::Length(bytes) => {
                let take = (4 - bytes.len()).min(data.len());
                bytes.extend_from_slice(&data[..take]);
                if let Ok(hlen) = <[u8; 4]>::try_from(bytes.as_slice()) {
                    let len = header_length(hlen)?;
                    self.state = State::Header {
                        len,
                        bytes: Vec::with_capacity(len),
                    };
                }
                Ok(take)
            }
            State::Header { len, bytes } => {
                let take = (*len - bytes.len()).min(data.len());
                bytes.extend_from_slice(&data[..take]);
                if bytes.len() == *len {
                    let header = std::mem::take(bytes);
                    let request = parse_header(&header, self.max_file_size)?;
                    self.state = self.begin(request, out);
                }
                Ok(take)
            }
            State::Body { upload, left } => {
                let take = usize::try_from(*left).map_or(data.len(), |l| l.min(data.len()));
                if let Some(file) = upload.as_mut() {
                    if file.write(&data[..take]).is_err() {
                        // What was sent is lost; the client learns it by
                        // the close.
                        return Err(Refusal::Write);
                    }
                }
                *left -= take as u64;
                if *left == 0 {
                    if let State::Body {
                        upload: Some(upload),
                        ..
                    } = std::mem::replace(&mut self.state, State::Length(Vec::with_capacity(4)))
                    {
                        upload.finish(self.overwrite);
                    }
                }
                Ok(take)
            }
            State::Closed => Ok(data.len()),
        }
    }

    /// What a parsed header starts.
    fn begin(&self, request: Request, out: &mut Output) -> State {
        match request {
            Request::Get { name } => {
                self.get(&name, out);
                State::Length(Vec::with_capacity(4))
            }
            Request::Put { name, size } => {
                let upload = self.may_store(&name).then(|| self.root.upload(name));
                let state = State::Body {
                    upload: upload.flatten(),
                    left: size,
                };
                if size == 0 {
                    if let State::Body {
                        upload: Some(upload),
                        ..
                    } = state
                    {
                        upload.finish(self.overwrite);
                    }
                    return State::Length(Vec::with_capacity(4));
                }
                state
            }
        }
    }

    /// Whether a put of `name` may go ahead: with `overwrite = false`, an
    /// existing name keeps its file and the body is read and dropped.
    fn may_store(&self, name: &str) -> bool {
        self.overwrite || !self.root.exists(name)
    }

    /// Queues the reply to a get: the header, then the file as a range.
    fn get(&self, name: &str, out: &mut Output) {
        match self.root.open_regular(name) {
            Ok((file, size)) => {
                get_reply(
                    name,
                    i64::try_from(size).unwrap_or(i64::MAX),
                    None,
                    out.bytes(),
                );
                out.send_file(file, 0, size);
            }
            Err(why) => get_reply(name, -1, Some(why), out.bytes()),
        }
    }
}

impl Session for FilesSession {
    fn input(&mut self, mut data: &[u8], out: &mut Output) -> Flow {
        while !data.is_empty() {
            match self.step(data, out) {
                Ok(taken) => data = &data[taken..],
                Err(_) => {
                    // Dropping an upload in progress removes its file.
                    self.state = State::Closed;
                    return Flow::Close;
                }
            }
        }
        Flow::Continue
    }

    /// It closes only on a refused frame, whose rest may still arrive.
    fn unread_input(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_lengths_outside_one_to_64_kib_are_refused() {
        assert_eq!(header_length(5i32.to_le_bytes()), Ok(5));
        assert_eq!(header_length((64i32 << 10).to_le_bytes()), Ok(64 << 10));
        for bad in [0, -1, i32::MIN, (64 << 10) + 1, i32::MAX] {
            assert_eq!(
                header_length(bad.to_le_bytes()),
                Err(Refusal::HeaderLength(bad))
            );
        }
    }

    #[test]
    fn headers_parse_into_requests_or_refusals() {
        let parse = |text: &str| parse_header(text.as_bytes(), 100);
        assert_eq!(
            parse(r#"{"cmd": "put", "filename": "a.bin", "filesize": 3}"#),
            Ok(Request::Put {
                name: "a.bin".into(),
                size: 3
            })
        );
        assert_eq!(
            parse(r#"{"cmd": "get", "filename": "\u00e9"}"#),
            Ok(Request::Get { name: "é".into() })
        );
        assert_eq!(parse("not json"), Err(Refusal::NotJson));
        assert_eq!(parse("[1]"), Err(Refusal::NotJson));
        assert_eq!(
            parse(r#"{"cmd": "del", "filename": "a"}"#),
            Err(Refusal::UnknownCmd("del".into()))
        );
        let put = |name: &str, size: &str| {
            parse(&format!(
                r#"{{"cmd": "put", "filename": {}, "filesize": {size}}}"#,
                serde_json::to_string(name).unwrap()
            ))
        };
        assert_eq!(put("a", "-1"), Err(Refusal::BadSize));
        assert_eq!(put("a", "101"), Err(Refusal::TooLarge));
        for name in [
            "",
            ".",
            "..",
            "../x",
            "a/b",
            "/etc",
            "a\0b",
            ".forkd-partial-1-2",
        ] {
            assert!(
                matches!(put(name, "1"), Err(Refusal::BadName(_))),
                "{name:?}"
            );
        }
    }

    /// A session over a scratch root, fed `input` in pieces of `step` bytes.
    fn feed(root: &std::path::Path, input: &[u8], step: usize) -> (Flow, Vec<u8>) {
        let handler = Files {
            root: Root::open(root).unwrap(),
            max_file_size: 1 << 20,
            overwrite: true,
        };
        let mut session = handler.session().unwrap();
        let mut out = Output::new();
        let mut flow = Flow::Continue;
        for piece in input.chunks(step) {
            flow = session.input(piece, &mut out);
            if flow == Flow::Close {
                break;
            }
        }
        drop(session);
        let (near, mut far) = std::os::unix::net::UnixStream::pair().unwrap();
        while !out.write_to(near.as_fd()).unwrap().drained {}
        drop(near);
        let mut sent = Vec::new();
        std::io::Read::read_to_end(&mut far, &mut sent).unwrap();
        (flow, sent)
    }

    fn frame(header: &str, body: &[u8]) -> Vec<u8> {
        let mut out = (header.len() as i32).to_le_bytes().to_vec();
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(body);
        out
    }

    #[test]
    fn frames_split_anywhere_store_exactly_their_bodies() {
        let root = std::env::temp_dir().join(format!("forkd-files-{}", std::process::id()));
        std::fs::create_dir_all(&root).unwrap();
        let mut input = frame(r#"{"cmd": "put", "filename": "a", "filesize": 3}"#, b"abc");
        input.extend(frame(
            r#"{"cmd": "put", "filename": "e", "filesize": 0}"#,
            b"",
        ));
        input.extend(frame(r#"{"cmd": "get", "filename": "a"}"#, b""));
        input.extend(frame(
            r#"{"cmd": "put", "filename": "cut", "filesize": 9}"#,
            b"1234",
        ));
        let mut want = Vec::new();
        get_reply("a", 3, None, &mut want);
        want.extend_from_slice(b"abc");
        for step in [1, 2, 5, input.len()] {
            assert_eq!(feed(&root, &input, step), (Flow::Continue, want.clone()));
            assert_eq!(std::fs::read(root.join("a")).unwrap(), b"abc");
            assert_eq!(std::fs::read(root.join("e")).unwrap(), b"");
            let mut names: Vec<_> = std::fs::read_dir(&root)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            names.sort();
            assert_eq!(names, ["a", "e"], "the cut upload left nothing");
        }
        let bad = frame(r#"{"cmd": "put", "filename": "../x", "filesize": 1}"#, b"x");
        assert_eq!(feed(&root, &bad, 3), (Flow::Close, Vec::new()));
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn the_get_reply_is_framed_as_python_dumps_it() {
        let mut out = Vec::new();
        get_reply("é\"x", 7, None, &mut out);
        let header = br#"{"cmd": "get", "filename": "\u00e9\"x", "filesize": 7}"#;
        assert_eq!(out[..4], (header.len() as i32).to_le_bytes());
        assert_eq!(&out[4..], header);
        out.clear();
        get_reply("😀", -1, Some("no such file"), &mut out);
        assert!(out.ends_with(br#""\ud83d\ude00", "filesize": -1, "error": "no such file"}"#));
    }
}
