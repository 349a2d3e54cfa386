//! Who may do what over the control socket. A peer admitted at accept
//! (by [`super::server`], from its SO_PEERCRED uid and gid and its
//! SO_PEERGROUPS) has a [`Role`]: root, forkd's own user and members of
//! `[daemon] control_group` may do everything; members of
//! `control_read_group` only what leaves forkd as it was.
//!
//! [`Request::access`] is the one table of which verb changes state. It is
//! an exhaustive match, so a new verb does not compile until it is
//! classified here. A verb that starts work, even work that looks
//! harmless, counts as a change: `call` runs a job on a pool's workers
//! (which may do anything a worker command does) and `chat` sends to a
//! room's members. This module never touches sockets or supervisor state.

use serde_json::Value;

use super::{error_reply, ErrorKind, Request};

/// What an admitted peer may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Root, forkd's user, `control_group`: every verb.
    Operator,
    /// `control_read_group`: only [`Access::Read`] verbs.
    ReadOnly,
}

/// Whether a verb leaves forkd and what it runs as they were.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Looks only: `status`, `log`, `version`, `health`, `metrics`, `events`.
    Read,
    /// Starts, stops, signals, reconfigures or runs something.
    Change,
}

impl Request {
    /// The verb's wire name (its `command`) and its [`Access`].
    pub fn access(&self) -> (&'static str, Access) {
        match self {
            Request::Status { .. } => ("status", Access::Read),
            Request::Log { .. } => ("log", Access::Read),
            Request::Version => ("version", Access::Read),
            Request::Health => ("health", Access::Read),
            Request::Metrics => ("metrics", Access::Read),
            Request::Events { .. } => ("events", Access::Read),
            Request::Start { .. } => ("start", Access::Change),
            Request::Stop { .. } => ("stop", Access::Change),
            Request::Restart { .. } => ("restart", Access::Change),
            Request::Signal { .. } => ("signal", Access::Change),
            Request::Scale { .. } => ("scale", Access::Change),
            Request::Reload { .. } => ("reload", Access::Change),
            Request::Shutdown => ("shutdown", Access::Change),
            Request::Call { .. } => ("call", Access::Change),
            Request::Chat { .. } => ("chat", Access::Change),
        }
    }
}

/// The verbs a [`Role::ReadOnly`] peer may use, for messages and docs.
pub const READ_ONLY_VERBS: &[&str] = &["status", "log", "version", "health", "metrics", "events"];

/// `Ok` when `role` may send `request`; else the `denied` reply, naming
/// the verb.
pub fn permit(role: Role, request: &Request) -> Result<(), Value> {
    match (role, request.access()) {
        (Role::Operator, _) | (Role::ReadOnly, (_, Access::Read)) => Ok(()),
        (Role::ReadOnly, (verb, Access::Change)) => Err(error_reply(
            ErrorKind::Denied,
            format!(
                "access denied: read-only: \"{verb}\" changes state; members of control_read_group may use {} (ask root, forkd's user or a member of control_group)",
                READ_ONLY_VERBS.join(", ")
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One request of each verb. The match makes a new verb fail to
    /// compile here until it has a sample below.
    fn samples() -> Vec<Request> {
        let name = || "api".to_string();
        let all = vec![
            Request::Status { names: vec![] },
            Request::Log {
                name: name(),
                lines: None,
                after: None,
            },
            Request::Version,
            Request::Health,
            Request::Metrics,
            Request::Events { after: None },
            Request::Start { name: name() },
            Request::Stop { name: name() },
            Request::Restart { name: name() },
            Request::Signal {
                name: name(),
                signal: "HUP".into(),
            },
            Request::Scale {
                name: name(),
                count: 2,
            },
            Request::Reload {
                dry_run: false,
                config: None,
            },
            Request::Shutdown,
            Request::Call { pool: name() },
            Request::Chat {
                name: name(),
                text: "hi".into(),
            },
        ];
        for request in &all {
            match request {
                Request::Status { .. }
                | Request::Log { .. }
                | Request::Version
                | Request::Health
                | Request::Metrics
                | Request::Events { .. }
                | Request::Start { .. }
                | Request::Stop { .. }
                | Request::Restart { .. }
                | Request::Signal { .. }
                | Request::Scale { .. }
                | Request::Reload { .. }
                | Request::Shutdown
                | Request::Call { .. }
                | Request::Chat { .. } => {}
            }
        }
        all
    }

    #[test]
    fn each_verb_is_named_as_on_the_wire() {
        for request in samples() {
            let wire = serde_json::to_value(&request).unwrap();
            assert_eq!(wire["command"], request.access().0, "{request:?}");
        }
    }

    #[test]
    fn only_status_log_and_version_are_read_only() {
        let read: Vec<&str> = samples()
            .iter()
            .map(Request::access)
            .filter(|(_, access)| *access == Access::Read)
            .map(|(verb, _)| verb)
            .collect();
        assert_eq!(read, READ_ONLY_VERBS);
    }

    #[test]
    fn a_read_only_peer_is_refused_every_change_naming_the_verb() {
        for request in samples() {
            let (verb, access) = request.access();
            assert!(permit(Role::Operator, &request).is_ok(), "{verb}");
            match (access, permit(Role::ReadOnly, &request)) {
                (Access::Read, Ok(())) => {}
                (Access::Change, Err(reply)) => {
                    assert_eq!(reply["kind"], "denied");
                    let text = reply["error"].as_str().unwrap();
                    let expected = format!("access denied: read-only: \"{verb}\" changes state");
                    assert!(text.starts_with(&expected), "{text}");
                }
                (access, outcome) => panic!("{verb} is {access:?} but got {outcome:?}"),
            }
        }
    }
}
