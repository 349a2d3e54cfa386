//! The built-in pool workers (`worker = "builtin:NAME"`): Rust functions
//! run in a forked child, no exec. Each maps one request payload to one
//! result; a result starting with `ERR ` is a failed job.

use std::time::Duration;

/// A built-in job function.
pub type Job = fn(&[u8]) -> Vec<u8>;

/// The built-ins and what they do, for `--check` and the man page.
pub const BUILTINS: &[(&str, Job, &str)] = &[
    ("upper", upper, "the payload in ASCII upper case"),
    (
        "sha256",
        sha256,
        "the SHA-256 digest of the payload, 64 hex digits",
    ),
    (
        "sleep",
        sleep,
        "sleeps for the payload's number of milliseconds (at most 60000), then returns it",
    ),
    ("echo", echo, "the payload unchanged"),
];

pub fn lookup(name: &str) -> Option<Job> {
    BUILTINS
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|(_, job, _)| *job)
}

pub fn names() -> Vec<&'static str> {
    BUILTINS.iter().map(|(n, _, _)| *n).collect()
}

fn upper(payload: &[u8]) -> Vec<u8> {
    payload.to_ascii_uppercase()
}

fn echo(payload: &[u8]) -> Vec<u8> {
    payload.to_vec()
}

fn sha256(payload: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(payload);
    let mut out = Vec::with_capacity(64);
    for byte in digest {
        out.extend_from_slice(format!("{byte:02x}").as_bytes());
    }
    out
}

fn sleep(payload: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(payload);
    match text.trim().parse::<u64>() {
        Ok(ms) if ms <= 60_000 => {
            std::thread::sleep(Duration::from_millis(ms));
            payload.to_vec()
        }
        _ => format!(
            "ERR sleep wants a number of milliseconds up to 60000, got {:?}",
            text.trim()
        )
        .into_bytes(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_compute_what_they_promise() {
        assert_eq!(lookup("upper").unwrap()(b"abc xyz"), b"ABC XYZ");
        assert_eq!(
            lookup("sha256").unwrap()(b"abc"),
            b"ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(lookup("sleep").unwrap()(b"0"), b"0");
        assert!(lookup("sleep").unwrap()(b"soon").starts_with(b"ERR "));
        assert!(lookup("nope").is_none());
    }
}
