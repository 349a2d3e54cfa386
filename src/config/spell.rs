//! Values spelled back as forkd.toml writes them: TOML literals such as
//! `"5s"`, `["/bin/api", "-v"]`, `{ nofile = 1024 }`, `true`, for the
//! reload plan's `old → new`.
//!
//! The inverse of `values.rs`, up to spelling: two different values never
//! spell the same (durations are written to the microsecond, in the
//! largest unit that keeps them whole, `"1500ms"` rather than `"1.5s"`),
//! so the plan can compare spellings to tell what changed. `None` is a key
//! left unset.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use super::values;
use super::{AllowedCommand, ListenAddr, Output, Rlimits};

pub(super) type Spelled = Option<String>;

/// A TOML basic string: JSON's escapes are all valid TOML ones.
pub(super) fn quoted(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_else(|_| format!("{text:?}"))
}

pub(super) fn string(text: &str) -> Spelled {
    Some(quoted(text))
}

pub(super) fn optional_string(text: &Option<String>) -> Spelled {
    text.as_deref().map(quoted)
}

pub(super) fn path(path: &Path) -> Spelled {
    string(&path.to_string_lossy())
}

pub(super) fn optional_path<P: AsRef<Path>>(path: &Option<P>) -> Spelled {
    path.as_ref().and_then(|p| self::path(p.as_ref()))
}

pub(super) fn number(n: impl std::fmt::Display) -> Spelled {
    Some(n.to_string())
}

pub(super) fn optional_number(n: Option<impl std::fmt::Display>) -> Spelled {
    n.map(|n| n.to_string())
}

pub(super) fn boolean(b: bool) -> Spelled {
    number(b)
}

/// `"250ms"`, `"10s"`, `"5m"`, `"1h"`: the largest unit that keeps it whole.
pub(super) fn duration(d: Duration) -> Spelled {
    let nanos = d.as_nanos();
    let units = [
        (3_600_000_000_000, "h"),
        (60_000_000_000, "m"),
        (1_000_000_000, "s"),
        (1_000_000, "ms"),
        (1_000, "us"),
    ];
    let text = units
        .iter()
        .find(|(per, _)| nanos % per == 0 && nanos > 0)
        .map_or_else(
            || {
                if nanos == 0 {
                    "0s".to_string()
                } else {
                    format!("{}us", d.as_micros())
                }
            },
            |(per, unit)| format!("{}{unit}", nanos / per),
        );
    Some(quoted(&text))
}

/// `"022"`, `"0660"`.
pub(super) fn octal(mode: u32, width: usize) -> Spelled {
    Some(quoted(&format!("{mode:0width$o}")))
}

pub(super) fn optional_octal(mode: Option<u32>) -> Spelled {
    mode.and_then(|m| octal(m, 3))
}

/// `"TERM"`.
pub(super) fn signal(number: i32) -> Spelled {
    let name = nix::sys::signal::Signal::try_from(number)
        .map(|s| s.as_str().trim_start_matches("SIG").to_string())
        .unwrap_or_else(|_| number.to_string());
    Some(quoted(&name))
}

/// A keyword enum value: `"on-failure"`, `"prefork"`.
pub(super) fn keyword<T: PartialEq + Copy>(table: &[(&'static str, T)], value: T) -> Spelled {
    string(values::keyword_of(table, value))
}

pub(super) fn list<S: AsRef<str>>(items: &[S]) -> Spelled {
    let items: Vec<String> = items.iter().map(|s| quoted(s.as_ref())).collect();
    Some(format!("[{}]", items.join(", ")))
}

pub(super) fn optional_list(items: &Option<Vec<String>>) -> Spelled {
    items.as_deref().and_then(list)
}

pub(super) fn output(output: &Output) -> Spelled {
    match output {
        Output::Log => string("log"),
        Output::Null => string("null"),
        Output::Inherit => string("inherit"),
        Output::File(p) => path(p),
    }
}

pub(super) fn listen(addresses: &[ListenAddr]) -> Spelled {
    let text: Vec<String> = addresses.iter().map(address).collect();
    list(&text)
}

/// `tcp://127.0.0.1:7000`, `unix:/run/x.sock`, `systemd:echo` (unquoted).
pub fn address(addr: &ListenAddr) -> String {
    match addr {
        ListenAddr::Tcp(sa) => format!("tcp://{sa}"),
        ListenAddr::Udp(sa) => format!("udp://{sa}"),
        ListenAddr::Unix(p) => format!("unix:{}", p.display()),
        ListenAddr::Systemd(n) => format!("systemd:{n}"),
    }
}

/// `{ KEY = "value", ... }`, keys quoted unless bare.
fn inline_table(entries: impl Iterator<Item = (String, String)>) -> Spelled {
    let bare = |k: &str| {
        !k.is_empty()
            && k.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    };
    let parts: Vec<String> = entries
        .map(|(k, v)| {
            let k = if bare(&k) { k } else { quoted(&k) };
            format!("{k} = {v}")
        })
        .collect();
    Some(if parts.is_empty() {
        "{}".to_string()
    } else {
        format!("{{ {} }}", parts.join(", "))
    })
}

pub(super) fn env(env: &BTreeMap<String, String>) -> Spelled {
    inline_table(env.iter().map(|(k, v)| (k.clone(), quoted(v))))
}

pub(super) fn rlimits(r: &Rlimits) -> Spelled {
    let all = [
        ("nofile", r.nofile),
        ("nproc", r.nproc),
        ("core", r.core),
        ("as", r.address_space),
    ];
    inline_table(
        all.into_iter()
            .filter_map(|(k, v)| v.map(|v| (k.to_string(), v.to_string()))),
    )
}

pub(super) fn commands(commands: &BTreeMap<String, AllowedCommand>) -> Spelled {
    inline_table(commands.iter().map(|(name, c)| {
        let argv = list(&c.argv).unwrap_or_default();
        (
            name.clone(),
            format!("{{ argv = {argv}, args = {} }}", c.args),
        )
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_keep_their_exact_value() {
        let ms = Duration::from_millis;
        assert_eq!(duration(ms(1500)).unwrap(), "\"1500ms\"");
        assert_eq!(duration(ms(10_000)).unwrap(), "\"10s\"");
        assert_eq!(duration(ms(300_000)).unwrap(), "\"5m\"");
        assert_eq!(duration(Duration::ZERO).unwrap(), "\"0s\"");
        assert_eq!(duration(Duration::from_nanos(1500)).unwrap(), "\"1us\"");
    }

    #[test]
    fn strings_tables_and_signals_read_as_toml() {
        assert_eq!(string("a\"b").unwrap(), r#""a\"b""#);
        let env: BTreeMap<String, String> =
            [("A".into(), "1".into()), ("x.y".into(), "2".into())].into();
        assert_eq!(self::env(&env).unwrap(), r#"{ A = "1", "x.y" = "2" }"#);
        assert_eq!(signal(15).unwrap(), "\"TERM\"");
        assert_eq!(octal(0o22, 3).unwrap(), "\"022\"");
        assert_eq!(list(&["/bin/a", "-v"]).unwrap(), r#"["/bin/a", "-v"]"#);
    }
}
