//! The pure parts of `http`: a request target to a root-relative path,
//! `Range` and HTTP dates, and the Content-Type of a name. No I/O, no
//! allocation beyond the caller's reused buffer.

/// Why a request target names nothing servable (answered 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadTarget {
    /// Not origin-form (`/...`) or absolute-form (`http://host/...`).
    Form,
    /// A `%` not followed by two hex digits.
    Encoding,
    /// A decoded NUL byte.
    Nul,
    /// `..` past the root.
    AboveRoot,
}

/// Decodes the path of `target` (percent-decoding, `.` and `..` and empty
/// segments folded) into `out`, relative to the root: no leading `/`, no
/// `.`/`..` segment left. Returns whether it names a directory (it ends
/// in `/`, `/.` or `/..`, or is the root), whose `index.html` is meant.
/// The opened file is still checked by the kernel (RESOLVE_BENEATH): this
/// only keeps the common cases cheap and the refusals clear.
pub fn resolve_target(target: &[u8], out: &mut Vec<u8>) -> Result<bool, BadTarget> {
    out.clear();
    let path = origin_path(target)?;
    let path = match path.iter().position(|&b| b == b'?' || b == b'#') {
        Some(end) => &path[..end],
        None => path,
    };
    let mut dir = true;
    let mut i = 0;
    // One segment at a time; a decoded `/` (`%2F`) separates too, as
    // the file system would read it.
    let mut segment_start = out.len();
    while i <= path.len() {
        let byte = if i == path.len() {
            b'/'
        } else if path[i] == b'%' {
            let hex = path.get(i + 1..i + 3).ok_or(BadTarget::Encoding)?;
            i += 2;
            (hex_value(hex[0]).ok_or(BadTarget::Encoding)? << 4)
                | hex_value(hex[1]).ok_or(BadTarget::Encoding)?
        } else {
            path[i]
        };
        i += 1;
        match byte {
            0 => return Err(BadTarget::Nul),
            b'/' => {
                let segment = &out[segment_start..];
                dir = matches!(segment, b"" | b"." | b"..");
                match segment {
                    b"" | b"." => out.truncate(segment_start),
                    b".." => {
                        if segment_start == 0 {
                            return Err(BadTarget::AboveRoot);
                        }
                        // Drop this `..` and the segment (and `/`) before it.
                        let parent = &out[..segment_start - 1];
                        let cut = parent.iter().rposition(|&b| b == b'/').map_or(0, |p| p + 1);
                        out.truncate(cut);
                    }
                    _ => out.push(b'/'),
                }
                segment_start = out.len();
            }
            _ => out.push(byte),
        }
    }
    if out.last() == Some(&b'/') {
        out.pop();
    }
    Ok(dir)
}

/// The path of an origin-form or absolute-form target.
fn origin_path(target: &[u8]) -> Result<&[u8], BadTarget> {
    if target.first() == Some(&b'/') {
        return Ok(target);
    }
    let lower = |n: usize| target.get(..n).map(|p| p.to_ascii_lowercase());
    let scheme = if lower(7).as_deref() == Some(b"http://") {
        7
    } else if lower(8).as_deref() == Some(b"https://") {
        8
    } else {
        return Err(BadTarget::Form);
    };
    let rest = &target[scheme..];
    Ok(match rest.iter().position(|&b| b == b'/') {
        Some(slash) => &rest[slash..],
        None => b"/",
    })
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// What a `Range` header asks of a file of `size` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Range {
    /// No usable single byte range (absent, malformed, another unit, or
    /// several ranges): the whole file, 200.
    Whole,
    /// `len` bytes from `start`: 206.
    Part { start: u64, len: u64 },
    /// No byte of the range exists: 416.
    Unsatisfiable,
}

/// Reads `bytes=A-B`, `bytes=A-` and `bytes=-N` (RFC 9110 section 14.1.2);
/// a malformed value is ignored, as the RFC allows.
pub fn parse_range(value: &[u8], size: u64) -> Range {
    let value = value.trim_ascii();
    let Some(spec) = value
        .get(..6)
        .filter(|unit| unit.eq_ignore_ascii_case(b"bytes="))
        .map(|_| value[6..].trim_ascii())
    else {
        return Range::Whole;
    };
    if spec.contains(&b',') {
        return Range::Whole;
    }
    let Some(dash) = spec.iter().position(|&b| b == b'-') else {
        return Range::Whole;
    };
    let (first, last) = (spec[..dash].trim_ascii(), spec[dash + 1..].trim_ascii());
    if first.is_empty() {
        // A suffix: the last N bytes.
        return match digits(last) {
            None => Range::Whole,
            Some(0) => Range::Unsatisfiable,
            Some(_) if size == 0 => Range::Unsatisfiable,
            Some(n) => {
                let len = n.min(size);
                Range::Part {
                    start: size - len,
                    len,
                }
            }
        };
    }
    let Some(start) = digits(first) else {
        return Range::Whole;
    };
    let end = if last.is_empty() {
        u64::MAX
    } else {
        match digits(last) {
            Some(end) if end >= start => end,
            _ => return Range::Whole,
        }
    };
    if start >= size {
        return Range::Unsatisfiable;
    }
    let end = end.min(size - 1);
    Range::Part {
        start,
        len: end - start + 1,
    }
}

/// A decimal number; past u64 it saturates (a range that large is
/// beyond any file anyway).
fn digits(text: &[u8]) -> Option<u64> {
    if text.is_empty() || !text.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(text.iter().fold(0u64, |n, &d| {
        n.saturating_mul(10).saturating_add(u64::from(d - b'0'))
    }))
}

/// The length of an IMF-fixdate, `Sun, 06 Nov 1994 08:49:37 GMT`.
pub const HTTP_DATE_LEN: usize = 29;

const WEEKDAYS: [&[u8; 3]; 7] = [b"Thu", b"Fri", b"Sat", b"Sun", b"Mon", b"Tue", b"Wed"];
const MONTHS: [&[u8; 3]; 12] = [
    b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec",
];

/// `secs` since the epoch as an IMF-fixdate (RFC 9110 section 5.6.7).
pub fn format_http_date(secs: i64) -> [u8; HTTP_DATE_LEN] {
    let days = secs.div_euclid(86_400);
    let of_day = secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    let mut out = *b"Thu, 01 Jan 1970 00:00:00 GMT";
    out[..3].copy_from_slice(WEEKDAYS[days.rem_euclid(7) as usize]);
    two(&mut out[5..7], day);
    out[8..11].copy_from_slice(MONTHS[(month - 1) as usize]);
    let year = year.clamp(0, 9999);
    two(&mut out[12..14], year / 100);
    two(&mut out[14..16], year % 100);
    two(&mut out[17..19], of_day / 3600);
    two(&mut out[20..22], of_day / 60 % 60);
    two(&mut out[23..25], of_day % 60);
    out
}

fn two(out: &mut [u8], n: i64) {
    out[0] = b'0' + (n / 10) as u8;
    out[1] = b'0' + (n % 10) as u8;
}

/// An HTTP date as seconds since the epoch: the IMF-fixdate
/// (`Sun, 06 Nov 1994 08:49:37 GMT`) and, as RFC 9110 section 5.6.7 asks
/// of recipients, the obsolete RFC 850 (`Sunday, 06-Nov-94 08:49:37 GMT`)
/// and asctime (`Sun Nov  6 08:49:37 1994`) forms. `None` for anything
/// else (the full reply is then sent, which is always correct).
pub fn parse_http_date(value: &[u8]) -> Option<i64> {
    let mut tokens = value
        .split(|&b| b == b' ' || b == b',' || b == b'-')
        .filter(|t| !t.is_empty());
    let _weekday = tokens.next()?;
    let first = tokens.next()?;
    let (day, month, year, time) = match month_number(first) {
        // asctime: month, day, time, year.
        Some(month) => {
            let day = tokens.next()?;
            let time = tokens.next()?;
            (day, month, tokens.next()?, time)
        }
        None => {
            let month = month_number(tokens.next()?)?;
            let year = tokens.next()?;
            let time = tokens.next()?;
            if tokens.next()? != b"GMT" {
                return None;
            }
            (first, month, year, time)
        }
    };
    if tokens.next().is_some() || day.len() > 2 || time.len() != 8 {
        return None;
    }
    let number = |text: &[u8]| digits(text).map(|n| n as i64);
    let day = number(day)?;
    let year = match (year.len(), number(year)?) {
        (4, year) => year,
        // RFC 850's two digits: the century that is not in the future.
        (2, year) if year < 70 => 2000 + year,
        (2, year) => 1900 + year,
        _ => return None,
    };
    if time[2] != b':' || time[5] != b':' {
        return None;
    }
    let (hour, minute, second) = (
        number(&time[..2])?,
        number(&time[3..5])?,
        number(&time[6..])?,
    );
    if !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second)
}

fn month_number(name: &[u8]) -> Option<i64> {
    MONTHS
        .iter()
        .position(|m| m[..] == *name)
        .map(|i| i as i64 + 1)
}

/// Whether a file last modified at `mtime` (seconds) may be answered 304
/// for this `If-Modified-Since`: it was not changed after that date. A
/// date that does not parse never matches (the full reply is sent).
pub fn not_modified(if_modified_since: Option<&[u8]>, mtime: i64) -> bool {
    if_modified_since
        .and_then(parse_http_date)
        .is_some_and(|since| mtime <= since)
}

/// The longest [`etag`]: two quotes, two 16-digit hex numbers and `-`.
pub const ETAG_MAX: usize = 35;

/// A file's entity tag, as nginx makes it: `"MTIME-SIZE"` in hex. Returns
/// the buffer and the tag's length in it.
pub fn etag(mtime: i64, size: u64) -> ([u8; ETAG_MAX], usize) {
    let mut out = [0u8; ETAG_MAX];
    out[0] = b'"';
    let mut n = 1 + hex(mtime as u64, &mut out[1..]);
    out[n] = b'-';
    n += 1 + hex(size, &mut out[n + 1..]);
    out[n] = b'"';
    (out, n + 1)
}

fn hex(mut n: u64, out: &mut [u8]) -> usize {
    let mut digits = [0u8; 16];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b"0123456789abcdef"[(n & 15) as usize];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    let len = digits.len() - i;
    out[..len].copy_from_slice(&digits[i..]);
    len
}

/// Whether an `If-None-Match` list names `tag` (weak comparison, RFC 9110
/// section 13.1.2: a `W/` prefix is ignored) or is `*`.
pub fn none_match_hits(value: &[u8], tag: &[u8]) -> bool {
    let value = value.trim_ascii();
    value == b"*"
        || value.split(|&b| b == b',').any(|candidate| {
            let candidate = candidate.trim_ascii();
            candidate.strip_prefix(b"W/").unwrap_or(candidate) == tag
        })
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
/// `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The inverse of [`days_from_civil`]: (year, month 1..=12, day 1..=31).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let days = days + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// The Content-Type of a file by its name's extension (ASCII case
/// ignored); `application/octet-stream` when unknown.
pub fn content_type(name: &[u8]) -> &'static str {
    let base = name.rsplit(|&b| b == b'/').next().unwrap_or(name);
    let Some(dot) = base.iter().rposition(|&b| b == b'.') else {
        return OCTET_STREAM;
    };
    let ext = &base[dot + 1..];
    TYPES
        .iter()
        .find(|(e, _)| ext.eq_ignore_ascii_case(e.as_bytes()))
        .map_or(OCTET_STREAM, |(_, t)| t)
}

const OCTET_STREAM: &str = "application/octet-stream";

/// Extensions and their types: the common web set (nginx's mime.types).
const TYPES: &[(&str, &str)] = &[
    ("html", "text/html; charset=utf-8"),
    ("htm", "text/html; charset=utf-8"),
    ("css", "text/css; charset=utf-8"),
    ("js", "text/javascript; charset=utf-8"),
    ("mjs", "text/javascript; charset=utf-8"),
    ("json", "application/json"),
    ("txt", "text/plain; charset=utf-8"),
    ("md", "text/markdown; charset=utf-8"),
    ("csv", "text/csv; charset=utf-8"),
    ("xml", "application/xml"),
    ("svg", "image/svg+xml"),
    ("png", "image/png"),
    ("jpg", "image/jpeg"),
    ("jpeg", "image/jpeg"),
    ("gif", "image/gif"),
    ("webp", "image/webp"),
    ("avif", "image/avif"),
    ("ico", "image/x-icon"),
    ("wasm", "application/wasm"),
    ("pdf", "application/pdf"),
    ("zip", "application/zip"),
    ("gz", "application/gzip"),
    ("tar", "application/x-tar"),
    ("woff", "font/woff"),
    ("woff2", "font/woff2"),
    ("ttf", "font/ttf"),
    ("otf", "font/otf"),
    ("mp3", "audio/mpeg"),
    ("ogg", "audio/ogg"),
    ("wav", "audio/wav"),
    ("mp4", "video/mp4"),
    ("webm", "video/webm"),
];

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(target: &str) -> Result<(String, bool), BadTarget> {
        let mut out = Vec::new();
        let dir = resolve_target(target.as_bytes(), &mut out)?;
        Ok((String::from_utf8(out).unwrap(), dir))
    }

    #[test]
    fn targets_resolve_to_root_relative_paths() {
        let ok = |path: &str, dir| Ok((path.to_string(), dir));
        assert_eq!(resolve("/"), ok("", true));
        assert_eq!(resolve("/index.html"), ok("index.html", false));
        assert_eq!(resolve("/dir/"), ok("dir", true));
        assert_eq!(resolve("/a%20b.txt?x=1#f"), ok("a b.txt", false));
        assert_eq!(resolve("//a/./b//c"), ok("a/b/c", false));
        assert_eq!(resolve("/a/b/../c"), ok("a/c", false));
        assert_eq!(resolve("/a/.."), ok("", true));
        assert_eq!(resolve("/a%2Fb"), ok("a/b", false));
        assert_eq!(resolve("http://host/x.css"), ok("x.css", false));
        assert_eq!(resolve("HTTP://host"), ok("", true));
        assert_eq!(resolve("/%C3%A9"), ok("é", false));
    }

    #[test]
    fn targets_that_would_leave_the_root_or_are_malformed_are_refused() {
        for target in [
            "/..",
            "/../etc/passwd",
            "/a/../../b",
            "/%2e%2e/x",
            "/..%2F..%2Fetc",
        ] {
            assert_eq!(resolve(target), Err(BadTarget::AboveRoot), "{target}");
        }
        assert_eq!(
            resolve("http://evil/../../etc/passwd"),
            Err(BadTarget::AboveRoot)
        );
        assert_eq!(resolve("/a%00b"), Err(BadTarget::Nul));
        assert_eq!(resolve("/a%zz"), Err(BadTarget::Encoding));
        assert_eq!(resolve("/a%4"), Err(BadTarget::Encoding));
        assert_eq!(resolve("*"), Err(BadTarget::Form));
        assert_eq!(resolve("index.html"), Err(BadTarget::Form));
    }

    #[test]
    fn single_byte_ranges_are_read_and_others_ignored() {
        let part = |start, len| Range::Part { start, len };
        assert_eq!(parse_range(b"bytes=10-19", 100), part(10, 10));
        assert_eq!(parse_range(b"bytes=10-", 100), part(10, 90));
        assert_eq!(parse_range(b"bytes=90-200", 100), part(90, 10));
        assert_eq!(parse_range(b"bytes=-10", 100), part(90, 10));
        assert_eq!(parse_range(b"bytes=-500", 100), part(0, 100));
        assert_eq!(parse_range(b"Bytes=0-0", 100), part(0, 1));
        assert_eq!(parse_range(b"bytes=100-", 100), Range::Unsatisfiable);
        assert_eq!(parse_range(b"bytes=-0", 100), Range::Unsatisfiable);
        assert_eq!(parse_range(b"bytes=0-", 0), Range::Unsatisfiable);
        assert_eq!(
            parse_range(b"bytes=99999999999999999999999-", 100),
            Range::Unsatisfiable
        );
        for ignored in [
            "bytes=0-1,5-6",
            "items=0-1",
            "bytes=5-1",
            "bytes=a-b",
            "bytes=",
            "",
        ] {
            assert_eq!(
                parse_range(ignored.as_bytes(), 100),
                Range::Whole,
                "{ignored}"
            );
        }
    }

    #[test]
    fn http_dates_format_and_parse_both_ways() {
        assert_eq!(&format_http_date(0), b"Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(
            &format_http_date(784_111_777),
            b"Sun, 06 Nov 1994 08:49:37 GMT"
        );
        assert_eq!(
            &format_http_date(951_782_400),
            b"Tue, 29 Feb 2000 00:00:00 GMT"
        );
        for secs in [0, 784_111_777, 951_782_400, 1_700_000_000, 4_102_444_799] {
            assert_eq!(parse_http_date(&format_http_date(secs)), Some(secs));
        }
        // The obsolete forms a recipient must still read.
        assert_eq!(
            parse_http_date(b"Sunday, 06-Nov-94 08:49:37 GMT"),
            Some(784_111_777)
        );
        assert_eq!(
            parse_http_date(b"Sun Nov  6 08:49:37 1994"),
            Some(784_111_777)
        );
        assert_eq!(parse_http_date(b"Sun, 06 Nov 1994 08:49:37 PST"), None);
        assert_eq!(parse_http_date(b"Sun, 06 Nov 1994 08:49 GMT"), None);
        assert_eq!(parse_http_date(b"Sun, 06 Nov 1994 08:49:37 GMT x"), None);
        assert_eq!(parse_http_date(b""), None);
        assert_eq!(parse_http_date(b"Sun, 06 Nov 1994 25:49:37 GMT"), None);
        assert_eq!(parse_http_date(b"Sun, 06 Foo 1994 08:49:37 GMT"), None);
    }

    #[test]
    fn if_modified_since_matches_only_a_date_at_or_after_the_mtime() {
        let date = format_http_date(1_700_000_000);
        assert!(not_modified(Some(&date), 1_700_000_000));
        assert!(not_modified(Some(&date), 1_699_999_999));
        assert!(!not_modified(Some(&date), 1_700_000_001));
        assert!(!not_modified(Some(b"yesterday"), 0));
        assert!(!not_modified(None, 0));
    }

    #[test]
    fn entity_tags_are_mtime_and_size_in_hex_and_match_weakly() {
        let (tag, len) = etag(1_700_000_000, 1024);
        let tag = &tag[..len];
        assert_eq!(tag, b"\"6553f100-400\"");
        let (max, len) = etag(-1, u64::MAX);
        assert_eq!(len, ETAG_MAX, "{:?}", std::str::from_utf8(&max));
        assert!(none_match_hits(b"\"6553f100-400\"", tag));
        assert!(none_match_hits(b"\"x\", W/\"6553f100-400\"", tag));
        assert!(none_match_hits(b" * ", tag));
        assert!(!none_match_hits(b"\"6553f100-401\"", tag));
        assert!(!none_match_hits(b"6553f100-400", tag));
    }

    #[test]
    fn content_types_follow_the_extension() {
        let cases = [
            ("index.html", "text/html; charset=utf-8"),
            ("a/STYLE.CSS", "text/css; charset=utf-8"),
            ("app.js", "text/javascript; charset=utf-8"),
            ("x.png", "image/png"),
            ("x.jpg", "image/jpeg"),
            ("notes.txt", "text/plain; charset=utf-8"),
            ("d.json", "application/json"),
            ("i.svg", "image/svg+xml"),
            ("m.wasm", "application/wasm"),
            ("blob.xyz", "application/octet-stream"),
            ("Makefile", "application/octet-stream"),
            ("dir.d/noext", "application/octet-stream"),
        ];
        for (name, want) in cases {
            assert_eq!(content_type(name.as_bytes()), want, "{name}");
        }
    }
}
