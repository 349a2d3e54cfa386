//! The value formats of `forkd.toml`, parsed from the text the user wrote:
//! durations, sizes, file modes, signal names, listen addresses, output
//! targets, names and the keyword enums.
//!
//! Every function is pure and returns either the typed value or the reason
//! it was refused, phrased so that the caller can append it to
//! `bad duration "10 sec" for stop_timeout: `. Positions and key names are
//! the caller's business (see `section.rs`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::Signal;

use super::suggest;
use super::{HandlerKind, ListenAddr, LogLevel, Mode, Output, RestartPolicy, Transport};

pub(super) const DURATION_HINT: &str = "use a number with a unit: 250ms, 10s, 5m, 1h";
pub(super) const SIZE_HINT: &str =
    "use a number of bytes or a string with a unit: \"512B\", \"64KiB\", \"16MiB\", \"1GiB\"";

/// `restart` keywords.
pub(super) const RESTART: &[(&str, RestartPolicy)] = &[
    ("always", RestartPolicy::Always),
    ("on-failure", RestartPolicy::OnFailure),
    ("never", RestartPolicy::Never),
];

/// `log_level` keywords, most severe first.
pub(super) const LOG_LEVEL: &[(&str, LogLevel)] = &[
    ("error", LogLevel::Error),
    ("warn", LogLevel::Warn),
    ("info", LogLevel::Info),
    ("debug", LogLevel::Debug),
];

/// `transport` keywords.
pub(super) const TRANSPORT: &[(&str, Transport)] = &[
    ("pipe", Transport::Pipe),
    ("mqueue", Transport::Mqueue),
    ("shm", Transport::Shm),
];

/// `mode` keywords.
pub(super) const MODE: &[(&str, Mode)] = &[
    ("fork", Mode::Fork),
    ("prefork", Mode::Prefork),
    ("event", Mode::Event),
];

/// `handler` keywords.
pub(super) const HANDLER: &[(&str, HandlerKind)] = &[
    ("echo", HandlerKind::Echo),
    ("files", HandlerKind::Files),
    ("ftp", HandlerKind::Ftp),
    ("command", HandlerKind::Command),
    ("chat", HandlerKind::Chat),
    ("http", HandlerKind::Http),
    ("exec", HandlerKind::Exec),
    ("pool", HandlerKind::Pool),
];

/// The config spelling of a keyword enum value (for messages).
pub(super) fn keyword_of<T: PartialEq + Copy>(
    table: &[(&'static str, T)],
    value: T,
) -> &'static str {
    table
        .iter()
        .find(|(_, v)| *v == value)
        .map(|(k, _)| *k)
        .unwrap_or("?")
}

/// `"250ms"`, `"1.5s"`, `"5m"`, `"1h"`, `"0s"`; units us (or µs), ms, s, m, h.
pub(super) fn duration(text: &str) -> Result<Duration, String> {
    let (number, unit) = split_number(text);
    let nanos_per_unit = match unit {
        "us" | "µs" => 1e3,
        "ms" => 1e6,
        "s" => 1e9,
        "m" => 60e9,
        "h" => 3600e9,
        _ => return Err(DURATION_HINT.to_string()),
    };
    let value = decimal(number).ok_or_else(|| DURATION_HINT.to_string())?;
    let nanos = value * nanos_per_unit;
    if nanos >= u64::MAX as f64 {
        return Err("that is longer than forkd can count; use hours".to_string());
    }
    Ok(Duration::from_nanos(nanos.round() as u64))
}

/// A size string: `"512B"`, `"64KiB"`, `"16MiB"`, `"1GiB"`, `"10KB"` (1000-based),
/// or a bare number of bytes. Units are case-insensitive.
pub(super) fn size(text: &str) -> Result<u64, String> {
    let (number, unit) = split_number(text);
    const UNITS: &[(&str, u64)] = &[
        ("", 1),
        ("B", 1),
        ("KB", 1000),
        ("MB", 1000 * 1000),
        ("GB", 1000 * 1000 * 1000),
        ("TB", 1000 * 1000 * 1000 * 1000),
        ("KiB", 1 << 10),
        ("MiB", 1 << 20),
        ("GiB", 1 << 30),
        ("TiB", 1 << 40),
    ];
    let multiplier = UNITS
        .iter()
        .find(|(u, _)| u.eq_ignore_ascii_case(unit))
        .map(|(_, m)| *m)
        .ok_or_else(|| SIZE_HINT.to_string())?;
    let too_big = || "that is more bytes than forkd can count".to_string();
    if let Ok(whole) = number.parse::<u64>() {
        return whole.checked_mul(multiplier).ok_or_else(too_big);
    }
    let value = decimal(number).ok_or_else(|| SIZE_HINT.to_string())?;
    let bytes = value * multiplier as f64;
    if bytes >= u64::MAX as f64 {
        return Err(too_big());
    }
    Ok(bytes as u64)
}

/// An octal file mode written as a string: `"022"`, `"0660"`, `"0o660"`.
pub(super) fn octal_mode(text: &str) -> Result<u32, String> {
    let digits = text.strip_prefix("0o").unwrap_or(text);
    let hint = "use octal digits, like \"022\" or \"0660\"";
    if digits.is_empty() || digits.len() > 4 || !digits.bytes().all(|b| (b'0'..=b'7').contains(&b))
    {
        return Err(hint.to_string());
    }
    u32::from_str_radix(digits, 8).map_err(|_| hint.to_string())
}

/// A signal name, `"TERM"` or `"SIGTERM"`, any case, to its number.
pub(super) fn signal(text: &str) -> Result<i32, String> {
    if let Some(signal) = crate::process::parse_signal(text) {
        return Ok(signal as i32);
    }
    let upper = text.to_ascii_uppercase();
    let names: Vec<&str> = Signal::iterator()
        .map(|s| s.as_str().trim_start_matches("SIG"))
        .collect();
    let short = upper.trim_start_matches("SIG");
    Err(match suggest::closest(short, &names) {
        Some(name) => format!("did you mean \"{name}\"?"),
        None => {
            "use a signal name like \"TERM\", \"INT\", \"HUP\", \"QUIT\" or \"USR1\"".to_string()
        }
    })
}

/// One `listen` entry: `tcp://HOST:PORT`, `udp://HOST:PORT` (HOST an IP
/// literal, IPv6 in brackets), `unix:/abs/path` or `systemd:NAME`.
pub(super) fn listen(text: &str) -> Result<ListenAddr, String> {
    if let Some(rest) = text.strip_prefix("tcp://") {
        return socket_addr(rest, "tcp").map(ListenAddr::Tcp);
    }
    if let Some(rest) = text.strip_prefix("udp://") {
        return socket_addr(rest, "udp").map(ListenAddr::Udp);
    }
    if let Some(rest) = text.strip_prefix("unix:") {
        // Accept the URL-ish `unix:///run/x.sock` too.
        let path = if rest.starts_with("///") {
            &rest[2..]
        } else {
            rest
        };
        if !path.starts_with('/') {
            return Err(
                "a unix socket needs an absolute path, like unix:/run/forkd/echo.sock".into(),
            );
        }
        // sun_path holds 108 bytes including the terminating NUL (unix(7)).
        if path.len() > 107 {
            return Err(format!(
                "the path is {} bytes long; a unix socket path holds at most 107",
                path.len()
            ));
        }
        return Ok(ListenAddr::Unix(PathBuf::from(path)));
    }
    if let Some(name) = text.strip_prefix("systemd:") {
        // FileDescriptorName= allows up to 255 printable ASCII chars except ':'
        // (sd_pid_notify_with_fds(3)).
        let printable = name.bytes().all(|b| b.is_ascii_graphic() && b != b':');
        if name.is_empty() || name.len() > 255 || !printable {
            return Err(
                "systemd:NAME needs the socket's FileDescriptorName=, like systemd:echo".into(),
            );
        }
        return Ok(ListenAddr::Systemd(name.to_string()));
    }
    Err("use tcp://HOST:PORT, udp://HOST:PORT, unix:/ABSOLUTE/PATH or systemd:NAME".into())
}

/// `HOST:PORT` after the scheme, with a reason that names what is wrong.
fn socket_addr(rest: &str, scheme: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = rest.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let Some((host, port)) = rest.rsplit_once(':') else {
        return Err(format!("add a port, like {scheme}://127.0.0.1:7000"));
    };
    if port.parse::<u16>().is_err() {
        return Err(format!(
            "the port \"{port}\" must be a number from 0 to 65535"
        ));
    }
    if host.contains(':') && !host.starts_with('[') {
        return Err(format!(
            "put an IPv6 address in brackets, like {scheme}://[::1]:{port}"
        ));
    }
    Err(format!(
        "the host \"{host}\" must be an IP address like 127.0.0.1 or [::1], not a host name"
    ))
}

/// `stdout`/`stderr`: `"log"`, `"null"`, `"inherit"` or an absolute file path.
pub(super) fn output(text: &str) -> Result<Output, String> {
    match text {
        "log" => Ok(Output::Log),
        "null" => Ok(Output::Null),
        "inherit" => Ok(Output::Inherit),
        path if Path::new(path).is_absolute() => Ok(Output::File(PathBuf::from(path))),
        _ => Err("use \"log\", \"null\", \"inherit\" or an absolute file path".into()),
    }
}

/// A program, pool or service name: 1 to 64 of `A-Z a-z 0-9 _ . -`.
/// No `:`, since forkctl addresses an instance as NAME:INSTANCE.
pub(super) fn name(text: &str) -> Result<(), String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-');
    if text.is_empty() || text.len() > 64 || !text.chars().all(allowed) {
        return Err(
            "a name is 1 to 64 letters, digits, '_', '.' or '-' (forkctl uses NAME:INSTANCE)"
                .into(),
        );
    }
    Ok(())
}

/// Splits `"1.5GiB"` into `("1.5", "GiB")`.
fn split_number(text: &str) -> (&str, &str) {
    let at = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    text.split_at(at)
}

/// `"10"` or `"1.5"`: digits first, at most one dot, digits after it.
fn decimal(number: &str) -> Option<f64> {
    let (whole, fraction) = number.split_once('.').unwrap_or((number, "0"));
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(whole) || !digits(fraction) {
        return None;
    }
    number.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    #[test]
    fn durations_take_a_unit() {
        assert_eq!(duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(duration("0.1s"), Ok(Duration::from_millis(100)));
        assert_eq!(duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(duration("0s"), Ok(Duration::ZERO));
        assert_eq!(duration("20us"), Ok(Duration::from_micros(20)));
        for bad in [
            "10", "10 sec", "sec", "", "1.s", ".5s", "1e3s", "-1s", "10S", "1.2.3s",
        ] {
            assert!(duration(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn sizes_take_binary_and_decimal_units() {
        assert_eq!(size("512B"), Ok(512));
        assert_eq!(size("512"), Ok(512));
        assert_eq!(size("64KiB"), Ok(64 * 1024));
        assert_eq!(size("16MiB"), Ok(16 << 20));
        assert_eq!(size("1GiB"), Ok(1 << 30));
        assert_eq!(size("1gib"), Ok(1 << 30));
        assert_eq!(size("10KB"), Ok(10_000));
        assert_eq!(size("2MB"), Ok(2_000_000));
        assert_eq!(size("1.5KiB"), Ok(1536));
        assert!(size("99999999999TiB").is_err());
        for bad in ["", "KiB", "12 KiB", "12Kb/s", "1,5MiB", "-1"] {
            assert!(size(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn modes_are_octal() {
        assert_eq!(octal_mode("022"), Ok(0o022));
        assert_eq!(octal_mode("0660"), Ok(0o660));
        assert_eq!(octal_mode("0o660"), Ok(0o660));
        assert!(octal_mode("0968").is_err());
        assert!(octal_mode("").is_err());
        assert!(octal_mode("066000").is_err());
    }

    #[test]
    fn signals_by_name_in_any_case() {
        assert_eq!(signal("TERM"), Ok(libc::SIGTERM));
        assert_eq!(signal("SIGTERM"), Ok(libc::SIGTERM));
        assert_eq!(signal("sigint"), Ok(libc::SIGINT));
        assert_eq!(signal("Hup"), Ok(libc::SIGHUP));
        assert_eq!(signal("TREM"), Err("did you mean \"TERM\"?".to_string()));
        assert!(signal("NOPE_NOT_A_SIGNAL")
            .unwrap_err()
            .contains("signal name like"));
    }

    #[test]
    fn listen_addresses() {
        let v4 = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 7000);
        let v6 = SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 7000);
        assert_eq!(listen("tcp://127.0.0.1:7000"), Ok(ListenAddr::Tcp(v4)));
        assert_eq!(listen("tcp://[::1]:7000"), Ok(ListenAddr::Tcp(v6)));
        assert_eq!(listen("udp://127.0.0.1:7000"), Ok(ListenAddr::Udp(v4)));
        assert_eq!(
            listen("unix:/run/forkd/echo.sock"),
            Ok(ListenAddr::Unix("/run/forkd/echo.sock".into()))
        );
        assert_eq!(
            listen("unix:///run/x.sock"),
            Ok(ListenAddr::Unix("/run/x.sock".into()))
        );
        assert_eq!(
            listen("systemd:echo"),
            Ok(ListenAddr::Systemd("echo".into()))
        );
        assert!(listen("tcp://localhost:7000")
            .unwrap_err()
            .contains("not a host name"));
        assert!(listen("tcp://127.0.0.1:70000")
            .unwrap_err()
            .contains("0 to 65535"));
        assert!(listen("tcp://127.0.0.1")
            .unwrap_err()
            .contains("add a port"));
        assert!(listen("tcp://::1:7000").unwrap_err().contains("brackets"));
        assert!(listen("unix:run/x.sock").unwrap_err().contains("absolute"));
        assert!(listen(&format!("unix:/{}", "a".repeat(120)))
            .unwrap_err()
            .contains("107"));
        assert!(listen("systemd:").is_err());
        assert!(listen("http://127.0.0.1:80")
            .unwrap_err()
            .contains("tcp://HOST:PORT"));
    }

    #[test]
    fn outputs() {
        assert_eq!(output("log"), Ok(Output::Log));
        assert_eq!(output("null"), Ok(Output::Null));
        assert_eq!(output("inherit"), Ok(Output::Inherit));
        assert_eq!(
            output("/var/log/api.log"),
            Ok(Output::File("/var/log/api.log".into()))
        );
        assert!(output("api.log").is_err());
    }

    #[test]
    fn names() {
        assert!(name("api").is_ok());
        assert!(name("web-2.v1_x").is_ok());
        assert!(name(&"a".repeat(64)).is_ok());
        assert!(name(&"a".repeat(65)).is_err());
        assert!(name("").is_err());
        assert!(name("api:1").is_err());
        assert!(name("my api").is_err());
    }
}
