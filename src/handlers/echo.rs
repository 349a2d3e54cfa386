//! `echo`: the classic upper-case echo. Every read is answered with the same
//! bytes, ASCII letters upper-cased; EOF ends the session. Over UDP each
//! datagram is answered to its sender the same way. Stateless, so one value
//! serves every connection and every mode.

use std::net::SocketAddr;

use super::{
    serve_in_place, Connection, Datagrams, Flow, Handler, Limits, Outcome, Output, Replies, Session,
};

/// The upper-case echo handler.
#[derive(Debug, Clone, Copy, Default)]
pub struct Echo;

/// Appends `data` upper-cased (ASCII only; other bytes pass unchanged).
fn upper_into(data: &[u8], out: &mut Vec<u8>) {
    out.extend(data.iter().map(u8::to_ascii_uppercase));
}

impl Session for Echo {
    fn input(&mut self, data: &[u8], out: &mut Output) -> Flow {
        upper_into(data, out.bytes());
        Flow::Continue
    }
}

impl Handler for Echo {
    fn name(&self) -> &'static str {
        "echo"
    }

    /// Upper-cases each read in place and writes it back: the same bytes
    /// as the session, without a session or an output buffer to allocate.
    #[link_section = ".text.hot.forkd_child"]
    fn serve(&self, conn: Connection, limits: &Limits) -> Outcome {
        serve_in_place(conn, limits, <[u8]>::make_ascii_uppercase)
    }

    fn session(&self) -> Option<Box<dyn Session>> {
        Some(Box::new(Echo))
    }

    fn datagrams(&self) -> Option<Box<dyn Datagrams>> {
        Some(Box::new(Echo))
    }
}

/// Each datagram answered to its sender; nothing kept.
impl Datagrams for Echo {
    fn datagram(&mut self, from: SocketAddr, input: &[u8], out: &mut Replies) {
        out.send_with(from, |buf| upper_into(input, buf));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upper_cases_ascii_and_keeps_other_bytes() {
        let mut out = Output::new();
        assert_eq!(
            Echo.input("héllo, w0rld\n".as_bytes(), &mut out),
            Flow::Continue
        );
        assert_eq!(*out.bytes(), "HéLLO, W0RLD\n".as_bytes());
        let mut replies = Replies::new();
        let from: SocketAddr = "127.0.0.1:9".parse().unwrap();
        Echo.datagram(from, b"abc", &mut replies);
        assert_eq!(replies.iter().collect::<Vec<_>>(), [(from, &b"ABC"[..])]);
    }
}
