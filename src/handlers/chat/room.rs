//! The chat room's state machine. Each datagram is parsed into a
//! [`Request`] (or found [`Malformed`]); one match over the request and
//! what the room knows of its sender decides the replies. A member is a
//! name bound to the address it logged in from: `CHAT` and `EXIT` count
//! only from that address, so one client can neither speak nor leave as
//! another. Pure: time comes in as an argument, replies go to a
//! [`Replies`], nothing here does I/O.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::handlers::Replies;

/// The longest name a `LOGIN` may take, in bytes.
pub const MAX_NAME: usize = 64;
/// Names holding this are the operator's (`管理员消息`): refused.
pub const RESERVED: &str = "管理";
/// The largest UDP payload over IPv4: no message of the room is longer.
pub const MAX_DATAGRAM: usize = 65_507;
/// What an operator's broadcast starts with.
pub const OPERATOR: &str = "管理员消息 : ";
/// The longest text an operator may broadcast.
pub const MAX_OPERATOR_TEXT: usize = MAX_DATAGRAM - OPERATOR.len();

const OK: &[u8] = b"OK";
const FAIL: &[u8] = b"FAIL";

/// One well-formed datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request<'a> {
    /// `LOGIN name`: everything after the verb's space is the name asked
    /// for (a name with a space in it is refused, not cut).
    Login(&'a str),
    /// `CHAT name text`: the text is everything after the second space.
    Chat { name: &'a str, text: &'a str },
    /// `EXIT name`.
    Exit(&'a str),
}

/// Why a datagram is not a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Malformed {
    NotUtf8,
    UnknownVerb,
    MissingName,
    /// `CHAT name` with no space after the name.
    MissingText,
}

/// Why a datagram was ignored (and counted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ignored {
    Malformed(Malformed),
    /// `CHAT` or `EXIT` naming no member, or a member logged in from
    /// another address.
    NotTheMember,
}

/// Why a `LOGIN` got `FAIL`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Another address holds the name.
    Taken,
    /// It contains [`RESERVED`].
    Reserved,
    /// Longer than [`MAX_NAME`], or holding a space or a control character.
    BadName,
    /// The room has `max_members`.
    Full,
    /// The sender is logged in already, under another name.
    OtherName,
}

/// What an answered datagram did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Done {
    Joined,
    /// A `LOGIN` of the name the sender already holds: `OK` again (its
    /// first `OK` may have been lost), no second welcome.
    AlreadyIn,
    Refused(Refusal),
    Said,
    Left,
}

/// Parses one datagram. One line ending (`\n` or `\r\n`) at its end is
/// dropped, for clients such as `nc -u`; the classic client sends none.
pub fn parse(datagram: &[u8]) -> Result<Request<'_>, Malformed> {
    let datagram = datagram
        .strip_suffix(b"\n")
        .map_or(datagram, |d| d.strip_suffix(b"\r").unwrap_or(d));
    let text = std::str::from_utf8(datagram).map_err(|_| Malformed::NotUtf8)?;
    let (verb, after) = text.split_once(' ').unwrap_or((text, ""));
    let mut fields = after.splitn(2, ' ');
    let name = fields.next().filter(|n| !n.is_empty());
    match verb {
        "LOGIN" | "CHAT" | "EXIT" if name.is_none() => Err(Malformed::MissingName),
        "LOGIN" => Ok(Request::Login(after)),
        "EXIT" => Ok(Request::Exit(after)),
        "CHAT" => match (name, fields.next()) {
            (Some(name), Some(text)) => Ok(Request::Chat { name, text }),
            _ => Err(Malformed::MissingText),
        },
        _ => Err(Malformed::UnknownVerb),
    }
}

#[derive(Debug)]
struct Member {
    name: String,
    address: SocketAddr,
    heard: Instant,
}

/// The members, in the order they logged in, and what was ignored.
#[derive(Debug)]
pub struct Room {
    members: Vec<Member>,
    max_members: usize,
    /// Zero: members never expire.
    member_timeout: Duration,
    ignored: u64,
}

impl Room {
    pub fn new(max_members: usize, member_timeout: Duration) -> Room {
        Room {
            members: Vec::new(),
            max_members,
            member_timeout,
            ignored: 0,
        }
    }

    /// How many members it has.
    pub fn members(&self) -> usize {
        self.members.len()
    }

    /// Datagrams ignored so far.
    pub fn ignored(&self) -> u64 {
        self.ignored
    }

    /// The members' names, in the order they logged in.
    #[cfg(test)]
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.members.iter().map(|m| m.name.as_str())
    }

    /// One datagram from `from`, heard at `now`.
    pub fn datagram(
        &mut self,
        from: SocketAddr,
        input: &[u8],
        now: Instant,
        out: &mut Replies,
    ) -> Result<Done, Ignored> {
        let result = match parse(input) {
            Ok(request) => self.request(from, request, now, out),
            Err(malformed) => Err(Ignored::Malformed(malformed)),
        };
        if result.is_err() {
            self.ignored += 1;
        }
        result
    }

    fn request(
        &mut self,
        from: SocketAddr,
        request: Request<'_>,
        now: Instant,
        out: &mut Replies,
    ) -> Result<Done, Ignored> {
        match request {
            Request::Login(name) => Ok(self.login(from, name, now, out)),
            Request::Chat { name, text } => {
                let i = self.sender(from, name)?;
                self.members[i].heard = now;
                let said = [name, " : ", text].concat();
                out.send_to_all(self.addresses_but(i), said.as_bytes());
                Ok(Done::Said)
            }
            Request::Exit(name) => {
                let i = self.sender(from, name)?;
                self.members.remove(i);
                self.tell_all(&left(name), out);
                Ok(Done::Left)
            }
        }
    }

    fn login(&mut self, from: SocketAddr, name: &str, now: Instant, out: &mut Replies) -> Done {
        let refusal = match self.members.iter().position(|m| m.address == from) {
            Some(i) if self.members[i].name == name => {
                self.members[i].heard = now;
                out.send(from, OK);
                return Done::AlreadyIn;
            }
            Some(_) => Some(Refusal::OtherName),
            None if name.len() > MAX_NAME
                || name.chars().any(|c| c.is_whitespace() || c.is_control()) =>
            {
                Some(Refusal::BadName)
            }
            None if name.contains(RESERVED) => Some(Refusal::Reserved),
            None if self.members.iter().any(|m| m.name == name) => Some(Refusal::Taken),
            None if self.members.len() >= self.max_members => Some(Refusal::Full),
            None => None,
        };
        if let Some(refusal) = refusal {
            out.send(from, FAIL);
            return Done::Refused(refusal);
        }
        out.send(from, OK);
        let welcome = ["欢迎 ", name, " 进入聊天室"].concat();
        out.send_to_all(self.addresses_but(usize::MAX), welcome.as_bytes());
        self.members.push(Member {
            name: name.to_string(),
            address: from,
            heard: now,
        });
        Done::Joined
    }

    /// The member `name`, if `from` is its address.
    fn sender(&self, from: SocketAddr, name: &str) -> Result<usize, Ignored> {
        self.members
            .iter()
            .position(|m| m.name == name && m.address == from)
            .ok_or(Ignored::NotTheMember)
    }

    /// Every member's address but the `i`th's.
    fn addresses_but(&self, i: usize) -> impl Iterator<Item = SocketAddr> + '_ {
        self.members
            .iter()
            .enumerate()
            .filter(move |(j, _)| *j != i)
            .map(|(_, m)| m.address)
    }

    fn tell_all(&self, text: &str, out: &mut Replies) {
        out.send_to_all(self.addresses_but(usize::MAX), text.as_bytes());
    }

    /// The operator's `text` to every member, as `管理员消息 : text`;
    /// returns how many it was sent to.
    pub fn operator(&self, text: &[u8], out: &mut Replies) -> usize {
        let mut message = Vec::with_capacity(OPERATOR.len() + text.len());
        message.extend_from_slice(OPERATOR.as_bytes());
        message.extend_from_slice(text);
        out.send_to_all(self.addresses_but(usize::MAX), &message);
        self.members.len()
    }

    /// When the quietest member expires, if members expire.
    pub fn deadline(&self) -> Option<Instant> {
        if self.member_timeout.is_zero() {
            return None;
        }
        let quietest = self.members.iter().map(|m| m.heard).min()?;
        Some(quietest + self.member_timeout)
    }

    /// Drops the members silent for `member_timeout` at `now`; the others
    /// are told each as if it had sent `EXIT`. Returns how many went.
    pub fn expire(&mut self, now: Instant, out: &mut Replies) -> usize {
        if self.member_timeout.is_zero() {
            return 0;
        }
        let timeout = self.member_timeout;
        let (gone, kept): (Vec<Member>, Vec<Member>) = std::mem::take(&mut self.members)
            .into_iter()
            .partition(|m| now >= m.heard + timeout);
        self.members = kept;
        for member in &gone {
            self.tell_all(&left(&member.name), out);
        }
        gone.len()
    }
}

/// `name 退出聊天室`.
fn left(name: &str) -> String {
    [name, " 退出聊天室"].concat()
}

#[cfg(test)]
#[path = "room_tests.rs"]
mod tests;
