//! The one table of what each handler can do: the connection modes it
//! runs in, and the sockets it serves (streams: `tcp://` and `unix:`;
//! datagrams: `udp://`).
//!
//! Read by the config check (`forkd --check`, a reload, start-up's parse),
//! which turns an unsupported combination into an error at the key's
//! `file:line:col`, and by start-up (`server`), which checks again what
//! the config could not know (the kind of a socket systemd hands over).
//! [`support`] is an exhaustive match, so a new [`HandlerKind`] does not
//! compile without its row; a test in `handlers` holds each handler to
//! what its row claims. It lives in `config`, below `handlers`, so the
//! config check needs nothing of the handlers themselves. Pure data:
//! nothing here opens, forks or logs.

use std::fmt;

use super::{HandlerKind, Mode};

/// What a listener's socket carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Carrier {
    /// Connections: `tcp://`, `unix:`.
    Stream,
    /// Datagrams: `udp://`.
    Datagram,
}

/// One handler's row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Support {
    pub kind: HandlerKind,
    pub modes: &'static [Mode],
    /// Why the modes not listed are refused.
    pub modes_reason: &'static str,
    pub stream: bool,
    pub datagram: bool,
    /// Its datagram state is one for all peers (a chat room): only one
    /// worker of the service reads its `udp://` sockets, or the room
    /// would split between processes.
    pub one_datagram_worker: bool,
}

const ALL_MODES: &[Mode] = &[Mode::Fork, Mode::Prefork, Mode::Event];
const OWN_PROCESS: &[Mode] = &[Mode::Fork, Mode::Prefork];

/// The row of `kind`.
pub fn support(kind: HandlerKind) -> &'static Support {
    const fn row(kind: HandlerKind, stream: bool, datagram: bool) -> Support {
        Support {
            kind,
            modes: ALL_MODES,
            modes_reason: "",
            stream,
            datagram,
            one_datagram_worker: false,
        }
    }
    const ECHO: Support = row(HandlerKind::Echo, true, true);
    const FILES: Support = row(HandlerKind::Files, true, false);
    const FTP: Support = row(HandlerKind::Ftp, true, false);
    const COMMAND: Support = Support {
        modes: OWN_PROCESS,
        modes_reason: "each request waits for the command it runs, in a process of its own",
        ..row(HandlerKind::Command, true, false)
    };
    const CHAT: Support = Support {
        one_datagram_worker: true,
        ..row(HandlerKind::Chat, false, true)
    };
    const HTTP: Support = row(HandlerKind::Http, true, false);
    const EXEC: Support = Support {
        modes: OWN_PROCESS,
        modes_reason: "each connection needs its own process",
        ..row(HandlerKind::Exec, true, false)
    };
    const POOL: Support = row(HandlerKind::Pool, true, false);
    match kind {
        HandlerKind::Echo => &ECHO,
        HandlerKind::Files => &FILES,
        HandlerKind::Ftp => &FTP,
        HandlerKind::Command => &COMMAND,
        HandlerKind::Chat => &CHAT,
        HandlerKind::Http => &HTTP,
        HandlerKind::Exec => &EXEC,
        HandlerKind::Pool => &POOL,
    }
}

/// Every row, in the order of `handler`'s keywords.
pub fn rows() -> impl Iterator<Item = &'static Support> {
    HandlerKind::ALL.iter().map(|&kind| support(kind))
}

impl Support {
    pub fn check_mode(&self, mode: Mode) -> Result<(), Unsupported> {
        if self.modes.contains(&mode) {
            Ok(())
        } else {
            Err(Unsupported::Mode(self.kind, mode))
        }
    }

    pub fn serves(&self, carrier: Carrier) -> bool {
        match carrier {
            Carrier::Stream => self.stream,
            Carrier::Datagram => self.datagram,
        }
    }

    pub fn check_carrier(&self, carrier: Carrier) -> Result<(), Unsupported> {
        if self.serves(carrier) {
            Ok(())
        } else {
            Err(Unsupported::Carrier(self.kind, carrier))
        }
    }
}

/// A combination the table refuses; its text is the config error's (the
/// caller adds where).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unsupported {
    Mode(HandlerKind, Mode),
    Carrier(HandlerKind, Carrier),
}

impl fmt::Display for Unsupported {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Unsupported::Mode(kind, mode) => {
                let row = support(kind);
                let modes: Vec<String> = row
                    .modes
                    .iter()
                    .map(|m| format!("\"{}\"", m.keyword()))
                    .collect();
                write!(
                    f,
                    "handler = \"{}\" cannot run in mode = \"{}\": {}; use mode = {}",
                    kind.keyword(),
                    mode.keyword(),
                    row.modes_reason,
                    or_list(&modes)
                )
            }
            Unsupported::Carrier(kind, Carrier::Datagram) => {
                let speakers: Vec<&str> = rows()
                    .filter(|r| r.datagram)
                    .map(|r| r.kind.keyword())
                    .collect();
                write!(
                    f,
                    "handler = \"{}\" cannot serve udp:// listeners; only {} speak UDP",
                    kind.keyword(),
                    speakers.join(" and ")
                )
            }
            Unsupported::Carrier(kind, Carrier::Stream) => write!(
                f,
                "handler = \"{}\" speaks only UDP and cannot serve a stream listener; use a udp://HOST:PORT listener",
                kind.keyword()
            ),
        }
    }
}

impl std::error::Error for Unsupported {}

/// `"a"`, `"a" or "b"`, `"a", "b" or "c"`.
fn or_list(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [rest @ .., last] => format!("{} or {last}", rest.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_its_own_row_and_every_row_a_mode_and_a_carrier() {
        for kind in HandlerKind::ALL {
            let row = support(*kind);
            assert_eq!(row.kind, *kind);
            assert!(!row.modes.is_empty() && (row.stream || row.datagram));
            assert_eq!(
                row.modes.len() == ALL_MODES.len(),
                row.modes_reason.is_empty()
            );
        }
    }

    #[test]
    fn the_messages_name_what_is_allowed() {
        assert_eq!(
            Unsupported::Mode(HandlerKind::Exec, Mode::Event).to_string(),
            "handler = \"exec\" cannot run in mode = \"event\": each connection needs its own process; use mode = \"fork\" or \"prefork\""
        );
        assert_eq!(
            Unsupported::Carrier(HandlerKind::Pool, Carrier::Datagram).to_string(),
            "handler = \"pool\" cannot serve udp:// listeners; only echo and chat speak UDP"
        );
    }
}
