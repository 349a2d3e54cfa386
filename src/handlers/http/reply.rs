//! Writing a reply's head and the built-in pages into the output's byte
//! run (no formatting machinery, no allocation), and the Date it carries.

use std::time::SystemTime;

use super::wire::{format_http_date, HTTP_DATE_LEN};

/// The `Date` header's value, formatted again only when the second changes.
#[derive(Debug, Default)]
pub struct DateCache {
    secs: i64,
    text: [u8; HTTP_DATE_LEN],
}

impl DateCache {
    pub fn now(&mut self) -> &[u8] {
        let secs = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        if secs != self.secs || self.text[0] == 0 {
            self.secs = secs;
            self.text = format_http_date(secs);
        }
        &self.text
    }
}

/// A reply's status and what goes with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    Partial,
    MovedPermanently,
    NotModified,
    BadRequest,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    PayloadTooLarge,
    UriTooLong,
    RangeNotSatisfiable,
    HeadersTooLarge,
}

impl Status {
    pub fn line(self) -> &'static str {
        match self {
            Status::Ok => "200 OK",
            Status::Partial => "206 Partial Content",
            Status::MovedPermanently => "301 Moved Permanently",
            Status::NotModified => "304 Not Modified",
            Status::BadRequest => "400 Bad Request",
            Status::Forbidden => "403 Forbidden",
            Status::NotFound => "404 Not Found",
            Status::MethodNotAllowed => "405 Method Not Allowed",
            Status::PayloadTooLarge => "413 Content Too Large",
            Status::UriTooLong => "414 URI Too Long",
            Status::RangeNotSatisfiable => "416 Range Not Satisfiable",
            Status::HeadersTooLarge => "431 Request Header Fields Too Large",
        }
    }
}

/// `Name: value` and its line end.
pub fn field(reply: &mut Vec<u8>, name: &str, value: &[u8]) {
    reply.extend_from_slice(name.as_bytes());
    reply.extend_from_slice(b": ");
    reply.extend_from_slice(value);
    reply.extend_from_slice(b"\r\n");
}

/// A field whose value is `n` in decimal.
pub fn number_field(reply: &mut Vec<u8>, name: &str, n: u64) {
    let mut digits = [0u8; 20];
    let len = decimal(n, &mut digits);
    field(reply, name, &digits[..len]);
}

/// The empty line that ends a head.
pub fn end_head(reply: &mut Vec<u8>) {
    reply.extend_from_slice(b"\r\n");
}

/// `n` in decimal at the start of `out`; returns its length.
fn decimal(mut n: u64, out: &mut [u8]) -> usize {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let len = digits.len() - i;
    out[..len].copy_from_slice(&digits[i..]);
    len
}

/// The built-in page's type, length, end of head and (unless HEAD) body.
pub fn page_body(reply: &mut Vec<u8>, status: Status, head_only: bool) {
    const OPEN: &str = "<!DOCTYPE html>\n<html><head><title>";
    const MIDDLE: &str = "</title></head>\n<body><h1>";
    const CLOSE: &str = "</h1><hr><p>forkd</p></body></html>\n";
    let line = status.line();
    let len = OPEN.len() + MIDDLE.len() + CLOSE.len() + 2 * line.len();
    field(reply, "Content-Type", b"text/html; charset=utf-8");
    number_field(reply, "Content-Length", len as u64);
    end_head(reply);
    if !head_only {
        for part in [OPEN, line, MIDDLE, line, CLOSE] {
            reply.extend_from_slice(part.as_bytes());
        }
    }
}

/// `Content-Range: bytes START-END/SIZE` for `len` bytes from `start`, or
/// `bytes */SIZE` (a 416) for none.
pub fn content_range(reply: &mut Vec<u8>, part: Option<(u64, u64)>, size: u64) {
    let mut text = [0u8; 70];
    text[..6].copy_from_slice(b"bytes ");
    let mut n = 6;
    match part {
        Some((start, len)) => {
            n += decimal(start, &mut text[n..]);
            text[n] = b'-';
            n += 1 + decimal(start + len - 1, &mut text[n + 1..]);
        }
        None => {
            text[n] = b'*';
            n += 1;
        }
    }
    text[n] = b'/';
    n += 1 + decimal(size, &mut text[n + 1..]);
    field(reply, "Content-Range", &text[..n]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_ranges_and_numbers_are_written_in_place() {
        let mut reply = Vec::new();
        content_range(&mut reply, Some((10, 10)), 36);
        content_range(&mut reply, None, 36);
        content_range(&mut reply, Some((0, u64::MAX)), u64::MAX);
        number_field(&mut reply, "Content-Length", 0);
        assert_eq!(
            String::from_utf8(reply).unwrap(),
            "Content-Range: bytes 10-19/36\r\nContent-Range: bytes */36\r\n\
             Content-Range: bytes 0-18446744073709551614/18446744073709551615\r\n\
             Content-Length: 0\r\n"
        );
    }
}
