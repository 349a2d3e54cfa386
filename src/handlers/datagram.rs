//! The datagram side of the handler boundary: [`Datagrams`], one value per
//! `udp://` socket per worker process, fed every datagram with its sender
//! and kept across them (a chat room's members), and [`Replies`], where it
//! queues what to send to whom: an answer to the sender, or one message to
//! many peers (stored once). The worker sends each reply on the socket the
//! datagram came in on and goes on past a peer that cannot be reached, so
//! one bad address never stops a broadcast. Like a session, it may ask to
//! be woken (expiring idle members), hear the operator, and tells the
//! worker how many peers it keeps and how many datagrams it ignored. No
//! I/O here.

use std::net::SocketAddr;
use std::ops::Range;
use std::time::Instant;

/// A datagram service's state in one process, for one socket.
pub trait Datagrams {
    /// One datagram from `from`; queue replies on `out`.
    fn datagram(&mut self, from: SocketAddr, input: &[u8], out: &mut Replies);

    /// When it wants [`Datagrams::wake`].
    fn deadline(&self) -> Option<Instant> {
        None
    }

    fn wake(&mut self, _now: Instant, _out: &mut Replies) {}

    /// A message from the operator, read from the handler's
    /// [`super::Inbox`] (`forkctl chat`): a chat room broadcasts it.
    fn operator(&mut self, _text: &[u8], _out: &mut Replies) {}

    /// Peers it keeps now (a chat room's members), for status.
    fn peers(&self) -> usize {
        0
    }

    /// Datagrams ignored so far (malformed, or from a sender it refuses
    /// to hear), for status and the supervisor's summarised log.
    fn ignored(&self) -> u64 {
        0
    }
}

/// Datagrams to send: each a peer and a range of one shared buffer.
#[derive(Debug, Default)]
pub struct Replies {
    bytes: Vec<u8>,
    sends: Vec<(SocketAddr, Range<usize>)>,
}

impl Replies {
    pub fn new() -> Replies {
        Replies::default()
    }

    /// One datagram to `to`, written by `fill`.
    pub fn send_with(&mut self, to: SocketAddr, fill: impl FnOnce(&mut Vec<u8>)) {
        let start = self.bytes.len();
        fill(&mut self.bytes);
        self.sends.push((to, start..self.bytes.len()));
    }

    pub fn send(&mut self, to: SocketAddr, data: &[u8]) {
        self.send_with(to, |buf| buf.extend_from_slice(data));
    }

    /// The same datagram to every peer in `to` (its bytes stored once).
    pub fn send_to_all(&mut self, to: impl IntoIterator<Item = SocketAddr>, data: &[u8]) {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(data);
        let range = start..self.bytes.len();
        self.sends
            .extend(to.into_iter().map(|peer| (peer, range.clone())));
    }

    /// What to send, in the order queued.
    pub fn iter(&self) -> impl Iterator<Item = (SocketAddr, &[u8])> {
        self.sends
            .iter()
            .map(|(peer, range)| (*peer, &self.bytes[range.clone()]))
    }

    pub fn is_empty(&self) -> bool {
        self.sends.is_empty()
    }

    pub fn clear(&mut self) {
        self.bytes.clear();
        self.sends.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A room for tests: remembers who spoke and tells everyone else.
    struct Room(Vec<SocketAddr>);

    impl Datagrams for Room {
        fn datagram(&mut self, from: SocketAddr, input: &[u8], out: &mut Replies) {
            if !self.0.contains(&from) {
                self.0.push(from);
                out.send(from, b"OK");
            }
            let others: Vec<SocketAddr> = self.0.iter().copied().filter(|p| *p != from).collect();
            out.send_to_all(others, input);
        }
    }

    #[test]
    fn state_is_kept_across_datagrams_and_one_message_reaches_many_peers() {
        let peers: Vec<SocketAddr> = (1..=3)
            .map(|p| format!("127.0.0.1:{p}").parse().unwrap())
            .collect();
        let mut room = Room(Vec::new());
        let mut out = Replies::new();
        for peer in &peers {
            room.datagram(*peer, b"hi", &mut out);
        }
        out.clear();
        room.datagram(peers[0], b"all of you", &mut out);
        let sent: Vec<(SocketAddr, &[u8])> = out.iter().collect();
        assert_eq!(
            sent,
            [
                (peers[1], &b"all of you"[..]),
                (peers[2], &b"all of you"[..])
            ]
        );
        assert_eq!(out.bytes.len(), b"all of you".len(), "stored once");
    }
}
