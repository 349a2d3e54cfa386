//! The control socket: forkd's side (the listener and admission in
//! [`server`], peer credentials in [`peer`], per-connection buffers in
//! [`connection`]), `forkctl`'s side (a blocking client, [`client`], its
//! command line, [`cli`] and [`commands`], and the status table,
//! [`status_table`]), and the protocol both speak, defined here.
//!
//! The protocol is one JSON object per line each way, so `socat -
//! UNIX-CONNECT:PATH` works for debugging: a request names its `command`
//! (`{"command":"stop","name":"api"}`), a reply always carries `ok`, and a
//! refused request has `error` (what went wrong and what to do) and `kind`
//! (`bad_request`, `denied`, `unknown_name`, `bad_state`, `too_large`,
//! `failed`). Both directions are bounded ([`MAX_REQUEST`], [`MAX_REPLY`]).
//! This module never touches supervisor state: the request handling lives
//! in `supervisor::control`, and the forkd side never blocks or starts a
//! thread.

pub mod access;
pub mod cli;
pub mod client;
pub mod commands;
pub mod completions;
pub mod connection;
pub mod exposition;
pub mod peer;
pub mod scrape;
pub mod server;
pub mod status_table;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Longest request line accepted, newline excluded. Longer ones get a
/// `too_large` reply and are skipped up to their newline.
pub const MAX_REQUEST: usize = 64 * 1024;
/// Largest reply forkd sends; a larger one (a huge log) is cut to fit.
pub const MAX_REPLY: usize = 4 * 1024 * 1024;
/// Connections served at once; more are answered "busy" and closed.
pub const MAX_CONNECTIONS: usize = 64;
/// Connections one peer uid may hold at once, so that one user cannot
/// take every slot.
pub const MAX_CONNECTIONS_PER_UID: usize = 16;
/// The last slots of [`MAX_CONNECTIONS`], kept for root and forkd's own
/// user: other users together never lock the operator out.
pub const OPERATOR_RESERVE: usize = 4;
/// A connection that moves no byte either way for this long is closed.
pub const IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// Most log lines one `log` request returns per instance.
pub const MAX_LOG_LINES: usize = 10_000;
/// Most instances `scale` accepts for one program.
pub const MAX_SCALE: u32 = crate::config::MAX_PROCESSES;

/// One request. `name` accepts `NAME`, `NAME:INSTANCE` or `all`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Every program, pool and service, or only the ones named.
    Status {
        #[serde(default)]
        names: Vec<String>,
    },
    Start {
        name: String,
    },
    Stop {
        name: String,
    },
    /// Stop, then start again once stopped.
    Restart {
        name: String,
    },
    /// Send `signal` (`"USR1"`, `"SIGHUP"` or a number) to each running
    /// instance's main process.
    Signal {
        name: String,
        signal: String,
    },
    /// Set a program's instance count.
    Scale {
        name: String,
        count: u32,
    },
    /// Re-read the config file and apply it; the reply carries the plan
    /// it carried out. With `dry_run`, only the plan: nothing changes.
    /// `config` (dry run only) is a configuration the client read, planned
    /// for instead of forkd's own file.
    Reload {
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        dry_run: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        config: Option<ConfigText>,
    },
    /// Reply, then stop everything gracefully (as SIGTERM does).
    Shutdown,
    /// The last `lines` output lines of each instance, or the lines after
    /// the sequence numbers in `after` (instance index → last seq seen).
    Log {
        name: String,
        #[serde(default)]
        lines: Option<usize>,
        #[serde(default)]
        after: Option<std::collections::BTreeMap<String, u64>>,
    },
    Version,
    /// The kept events (`forkctl events`), or those after sequence number
    /// `after`; the reply's `dropped` counts the ones that left the ring
    /// before the cursor got them.
    Events {
        #[serde(default)]
        after: Option<u64>,
    },
    /// Whether everything that should run does (`forkctl health`).
    Health,
    /// Every figure forkd keeps, as `text` in the Prometheus text
    /// exposition format 0.0.4 (`forkctl metrics`).
    Metrics,
    /// Turns the connection into a caller of `pool`: after the reply,
    /// frames each way (one job, one result), as on the pool's endpoint.
    Call {
        pool: String,
    },
    /// Broadcast `text` to the members of chat service `name`, as
    /// `管理员消息 : text`.
    Chat {
        name: String,
        text: String,
    },
}

/// A configuration sent with a dry-run `reload`: its text and the path it
/// was read from (errors name it as `file:line:col`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigText {
    pub path: PathBuf,
    pub text: String,
}

/// Why a request was refused; the `kind` field of an error reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    BadRequest,
    Denied,
    UnknownName,
    BadState,
    TooLarge,
    Busy,
    Failed,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::BadRequest => "bad_request",
            ErrorKind::Denied => "denied",
            ErrorKind::UnknownName => "unknown_name",
            ErrorKind::BadState => "bad_state",
            ErrorKind::TooLarge => "too_large",
            ErrorKind::Busy => "busy",
            ErrorKind::Failed => "failed",
        }
    }
}

/// A refusal as a reply object.
pub fn error_reply(kind: ErrorKind, message: impl Into<String>) -> serde_json::Value {
    serde_json::json!({ "ok": false, "kind": kind.as_str(), "error": message.into() })
}

/// Serializes a reply as one line, cut down to an error if it would pass
/// [`MAX_REPLY`].
pub fn reply_line(reply: &serde_json::Value) -> Vec<u8> {
    let mut line = serde_json::to_vec(reply).unwrap_or_else(|_| b"{\"ok\":false}".to_vec());
    if line.len() >= MAX_REPLY {
        let message = format!(
            "the reply is {} bytes, more than the {MAX_REPLY} allowed; ask for less (fewer names, log -n)",
            line.len()
        );
        line = serde_json::to_vec(&error_reply(ErrorKind::TooLarge, message)).unwrap_or_default();
    }
    line.push(b'\n');
    line
}

/// Where the control socket is when neither the config, `--socket` nor
/// `FORKD_SOCKET` says: `$RUNTIME_DIRECTORY/control.sock` (systemd's
/// `RuntimeDirectory=`; the first entry if it lists several), else
/// `$XDG_RUNTIME_DIR/forkd/control.sock`, else `/run/forkd/control.sock`.
pub fn default_socket_path() -> PathBuf {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(dirs) = var("RUNTIME_DIRECTORY") {
        let dirs = dirs.to_string_lossy().into_owned();
        let first = dirs.split(':').next().unwrap_or_default();
        return PathBuf::from(first).join("control.sock");
    }
    if let Some(dir) = var("XDG_RUNTIME_DIR") {
        return PathBuf::from(dir).join("forkd/control.sock");
    }
    PathBuf::from("/run/forkd/control.sock")
}

/// Splits `NAME:INSTANCE`; `Err` names the problem.
pub fn split_target(target: &str) -> Result<(&str, Option<usize>), String> {
    match target.split_once(':') {
        None => Ok((target, None)),
        Some((name, index)) => index.parse().map(|i| (name, Some(i))).map_err(|_| {
            format!("bad instance \"{index}\" in \"{target}\": use NAME:INSTANCE with INSTANCE a number from 0, like api:1")
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_one_json_object_with_a_command() {
        let r: Request = serde_json::from_str(r#"{"command":"stop","name":"api"}"#).unwrap();
        assert_eq!(r, Request::Stop { name: "api".into() });
        let r: Request = serde_json::from_str(r#"{"command":"status"}"#).unwrap();
        assert_eq!(r, Request::Status { names: vec![] });
        let r: Request = serde_json::from_str(r#"{"command":"reload"}"#).unwrap();
        assert_eq!(
            r,
            Request::Reload {
                dry_run: false,
                config: None
            }
        );
        let dry = Request::Reload {
            dry_run: true,
            config: None,
        };
        assert_eq!(
            serde_json::to_string(&dry).unwrap(),
            r#"{"command":"reload","dry_run":true}"#
        );
        for bad in [
            r#"{"command":"stop"}"#,
            r#"{"command":"stop","name":3}"#,
            r#"{"command":"launch","name":"api"}"#,
            r#"{"command":"stop","name":"api","force":true}"#,
            r#"{"command":"scale","name":"api","count":-1}"#,
            r#"[1,2]"#,
        ] {
            assert!(serde_json::from_str::<Request>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn targets_split_on_the_colon() {
        assert_eq!(split_target("api"), Ok(("api", None)));
        assert_eq!(split_target("api:2"), Ok(("api", Some(2))));
        assert!(split_target("api:x").unwrap_err().contains("NAME:INSTANCE"));
    }

    #[test]
    fn oversized_replies_become_errors() {
        let big = serde_json::json!({ "ok": true, "text": "x".repeat(MAX_REPLY) });
        let line = reply_line(&big);
        assert!(line.len() < 1024);
        assert!(String::from_utf8_lossy(&line).contains("too_large"));
    }
}
