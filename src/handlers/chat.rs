//! `chat`: the classic UDP chat room. One message per datagram, split on
//! the first two spaces: `LOGIN name` (answered `OK` or `FAIL`, then
//! `欢迎 name 进入聊天室` to the others), `CHAT name text` (`name : text`
//! to everyone but the sender), `EXIT name` (`name 退出聊天室` to those
//! left); the operator's `forkctl chat` reaches every member as
//! `管理员消息 : text`. The rules are the pure state machine of
//! `chat/room.rs`; this file binds it to the handler boundary.
//!
//! The room is one [`Room`] per `udp://` socket in the one worker that
//! reads it (the handlers' table says `one_datagram_worker`, so worker #0
//! only, in every mode), kept for that worker's life: a replacement after
//! a crash starts with an empty room. The operator's messages come through
//! an [`Inbox`] made when the handler is built, in the supervisor, and
//! inherited by every worker. Malformed datagrams and ones naming a
//! member from another address are ignored and counted
//! ([`Datagrams::ignored`]); the worker puts the count in its scoreboard
//! slot, and the supervisor shows it in `forkctl status` and summarises
//! it in its log.

mod room;

use std::net::SocketAddr;
use std::os::fd::BorrowedFd;
use std::time::{Duration, Instant};

use self::room::Room;
pub use self::room::MAX_OPERATOR_TEXT;
use super::{Context, Datagrams, Handler, HandlerError, Inbox, Replies, Session};

/// The chat handler: the room's limits and the operator's inbox.
#[derive(Debug)]
pub struct Chat {
    max_members: usize,
    member_timeout: Duration,
    inbox: Inbox,
}

impl Chat {
    pub fn new(context: &Context<'_>) -> Result<Chat, HandlerError> {
        let config = context.service;
        let inbox = Inbox::new(room::MAX_OPERATOR_TEXT).map_err(|e| {
            HandlerError::Setup(format!(
                "service \"{}\": cannot open the operator's socket pair: {e}",
                config.name
            ))
        })?;
        Ok(Chat {
            max_members: usize::try_from(config.max_members).unwrap_or(usize::MAX),
            member_timeout: config.member_timeout,
            inbox,
        })
    }
}

impl Handler for Chat {
    fn name(&self) -> &'static str {
        "chat"
    }

    fn keep_open(&self, keep: &mut dyn FnMut(BorrowedFd<'_>)) {
        keep(self.inbox.reader());
    }

    /// No streams: the room speaks only UDP.
    fn session(&self) -> Option<Box<dyn Session>> {
        None
    }

    fn datagrams(&self) -> Option<Box<dyn Datagrams>> {
        Some(Box::new(Room::new(self.max_members, self.member_timeout)))
    }

    fn inbox(&self) -> Option<&Inbox> {
        Some(&self.inbox)
    }
}

impl Datagrams for Room {
    fn datagram(&mut self, from: SocketAddr, input: &[u8], out: &mut Replies) {
        // What was done or ignored is the room's to count; the worker
        // reads the counts, not the verdict.
        let _ = Room::datagram(self, from, input, Instant::now(), out);
    }

    fn deadline(&self) -> Option<Instant> {
        Room::deadline(self)
    }

    fn wake(&mut self, now: Instant, out: &mut Replies) {
        self.expire(now, out);
    }

    fn operator(&mut self, text: &[u8], out: &mut Replies) {
        Room::operator(self, text, out);
    }

    fn peers(&self) -> usize {
        self.members()
    }

    fn ignored(&self) -> u64 {
        Room::ignored(self)
    }
}
