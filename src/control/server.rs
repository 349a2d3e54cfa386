//! forkd's end of the control socket: binding it safely, checking each
//! peer's credentials, and moving bytes for each connection without ever
//! blocking the loop.
//!
//! Syscalls: bind/listen/accept4 (through mio), getsockopt(SO_PEERCRED,
//! SO_PEERGROUPS), chmod/chown, unlink; a stale socket is told from a live
//! one, and a missing run directory made (and removed at exit), by
//! [`crate::socket_file`].
//! Invariants: every socket is non-blocking and edge-triggered, so each
//! readiness event is drained until `WouldBlock`; a connection's input is
//! bounded by [`super::MAX_REQUEST`] plus one read, and reading stops while its
//! unsent output passes [`OUTPUT_HIGH_WATER`], so a client that never reads
//! costs a bounded amount of memory and nothing else. A spare fd on
//! /dev/null is held so that when accept fails with EMFILE or ENFILE the
//! queued connections are still accepted, told, and closed: left queued,
//! they would never raise another edge. This module never
//! interprets a request: it hands each line to the caller's closure.
//!
//! Who is admitted, and as what [`Role`], is decided once at accept: root,
//! forkd's user and `control_group` members as operators,
//! `control_read_group` members as read-only peers (what that allows is
//! [`super::access`]). The socket file lets exactly those groups connect
//! (see `socket_mode`); the credential check at accept is what decides.
//!
//! Slots are shared out so that nobody locks the operator out: each uid
//! holds at most [`MAX_CONNECTIONS_PER_UID`], the last [`OPERATOR_RESERVE`]
//! slots are for root and forkd's user only, and a connection silent for
//! [`super::IDLE_TIMEOUT`] is closed by the loop (see [`Connection::idle_deadline`]).

use std::collections::HashMap;
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Instant;

use mio::net::{UnixListener, UnixStream};
use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
use nix::unistd::{Gid, Group, Uid};

use super::access::Role;
use super::{
    error_reply, reply_line, ErrorKind, MAX_CONNECTIONS, MAX_CONNECTIONS_PER_UID, OPERATOR_RESERVE,
};

pub use super::connection::{Connection, OUTPUT_HIGH_WATER};
use super::peer::peer_groups;
pub use super::peer::Peer;

/// The bound control socket; removes its file when dropped.
#[derive(Debug)]
pub struct ControlServer {
    listener: UnixListener,
    path: PathBuf,
    /// (st_dev, st_ino) of the socket file we created, so that drop never
    /// removes a file someone else put there since.
    identity: (u64, u64),
    /// `control_group`: members are operators.
    group: Option<(String, Gid)>,
    /// `control_read_group`: members may use the read-only verbs.
    read_group: Option<(String, Gid)>,
    own_uid: Uid,
    open: usize,
    /// Open connections by peer uid (absent when none).
    open_by_uid: HashMap<u32, usize>,
    /// Given up to accept (and refuse) a connection when out of fds.
    reserve_fd: Option<std::fs::File>,
    /// The current run of fd exhaustion was logged.
    out_of_fds: bool,
    /// The run directory forkd made for the socket (none when it existed):
    /// removed, if empty, after the socket file.
    _created_dirs: crate::socket_file::CreatedDirs,
}

impl ControlServer {
    /// Binds `path` with the mode and group of `socket_mode` for
    /// `control_group` (`group`) and `control_read_group` (`read_group`).
    /// Missing directories above it are created (and removed at exit if
    /// empty). A stale socket left by a crashed forkd is replaced; a live
    /// one, or a file that is not a socket, is an error that says what to
    /// do.
    pub fn bind(
        path: &Path,
        group: Option<&str>,
        read_group: Option<&str>,
    ) -> io::Result<ControlServer> {
        let fail =
            |why: String| io::Error::other(format!("control socket {}: {why}", path.display()));
        // sun_path holds 108 bytes including the terminating NUL (unix(7)).
        if path.as_os_str().len() > 107 {
            return Err(fail("the path is longer than the 107 bytes a unix socket path may have; choose a shorter [daemon] control_socket".into()));
        }
        let group = resolve_group("control_group", group).map_err(fail)?;
        let read_group = resolve_group("control_read_group", read_group).map_err(fail)?;
        let created_dirs = crate::socket_file::create_parent(path).map_err(|e| {
            fail(format!(
                "{e}; run forkd as root, set RUNTIME_DIRECTORY or XDG_RUNTIME_DIR, or choose another [daemon] control_socket"
            ))
        })?;
        remove_stale(path).map_err(fail)?;
        let listener = UnixListener::bind(path).map_err(|e| fail(format!("cannot bind: {e}")))?;
        let (mode, owner) = socket_mode(group.as_ref(), read_group.as_ref());
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .map_err(|e| fail(format!("cannot set mode {mode:o}: {e}")))?;
        if let Some((name, gid)) = owner {
            nix::unistd::chown(path, None, Some(*gid))
                .map_err(|e| fail(format!("cannot give the socket to group \"{name}\": {e}")))?;
        }
        let meta = std::fs::symlink_metadata(path).map_err(|e| fail(e.to_string()))?;
        Ok(ControlServer {
            listener,
            path: path.to_path_buf(),
            identity: (meta.dev(), meta.ino()),
            group,
            read_group,
            own_uid: Uid::effective(),
            open: 0,
            open_by_uid: HashMap::new(),
            reserve_fd: Some(
                open_reserve_fd()
                    .map_err(|e| fail(format!("cannot open /dev/null as a spare fd: {e}")))?,
            ),
            out_of_fds: false,
            _created_dirs: created_dirs,
        })
    }

    pub fn listener(&mut self) -> &mut UnixListener {
        &mut self.listener
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Accepts every pending connection (edge-triggered: until
    /// `WouldBlock`) and returns the ones to serve. Refused peers get their
    /// one-line answer here and are closed.
    ///
    /// `sweep(uid)` closes that uid's connections whose peer has already
    /// gone ([`Connection::hung_up`]) and says how many: it runs when the
    /// uid is at its limit, before refusing, since a client that just
    /// closed one connection and opened the next must not be refused for
    /// the close forkd has not read yet.
    pub fn accept(&mut self, mut sweep: impl FnMut(u32) -> usize) -> Vec<Connection> {
        let mut accepted = Vec::new();
        loop {
            let mut stream = match self.listener.accept() {
                Ok((stream, _)) => stream,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) => {
                    if self.refuse_one_without_fds(&e) {
                        continue;
                    }
                    break;
                }
                Err(e) => {
                    log::warn!("control socket {}: accept failed: {e}", self.path.display());
                    break;
                }
            };
            self.out_of_fds = false;
            let peer = match getsockopt(&stream, PeerCredentials) {
                Ok(c) => Peer {
                    uid: c.uid(),
                    gid: c.gid(),
                    pid: c.pid(),
                },
                Err(e) => {
                    log::warn!("control socket: cannot read the peer's credentials: {e}");
                    continue;
                }
            };
            let role = match self.authorize(&peer, &stream) {
                Ok(role) => role,
                Err(why) => {
                    log::warn!(
                        "control socket: refused uid {} (pid {}): {why}",
                        peer.uid,
                        peer.pid
                    );
                    let reply = error_reply(
                        ErrorKind::Denied,
                        format!("access denied for uid {}: {why}", peer.uid),
                    );
                    let _ = stream.write(&reply_line(&reply));
                    continue;
                }
            };
            let operator = self.is_operator(peer.uid);
            let mut by_uid = self.open_by_uid.get(&peer.uid).copied().unwrap_or(0);
            if by_uid >= MAX_CONNECTIONS_PER_UID {
                // Those of this very batch too: a client may connect and
                // close before forkd has accepted its connection.
                let before = accepted.len();
                accepted.retain(|c: &Connection| c.peer.uid != peer.uid || !c.hung_up());
                for _ in 0..(before - accepted.len()) + sweep(peer.uid) {
                    self.closed(&peer);
                }
                by_uid = self.open_by_uid.get(&peer.uid).copied().unwrap_or(0);
            }
            if let Err(why) = admission(self.open, by_uid, operator) {
                log::warn!(
                    "control socket: refused uid {} (pid {}): {why}",
                    peer.uid,
                    peer.pid
                );
                let reply = error_reply(ErrorKind::Busy, format!("uid {}: {why}", peer.uid));
                let _ = stream.write(&reply_line(&reply));
                continue;
            }
            self.open += 1;
            *self.open_by_uid.entry(peer.uid).or_default() += 1;
            accepted.push(Connection::new(stream, peer, role, Instant::now()));
        }
        accepted
    }

    /// accept failed for want of an fd: gives up the spare fd, accepts
    /// one queued connection, tells it why, closes it, and takes the spare
    /// back. True when a connection was refused, so the accept loop goes
    /// on; false when nothing was queued or there is no spare (then the
    /// queue waits until an fd is free and a new connection wakes us).
    fn refuse_one_without_fds(&mut self, error: &io::Error) -> bool {
        if !std::mem::replace(&mut self.out_of_fds, true) {
            log::error!(
                "control socket {}: accept failed: {error}; forkd is out of file descriptors and refuses control connections until some are free (raise its limit: LimitNOFILE=, ulimit -n)",
                self.path.display()
            );
        }
        let Some(spare) = self.reserve_fd.take() else {
            return false;
        };
        drop(spare);
        let refused = match self.listener.accept() {
            Ok((mut stream, _)) => {
                let reply = error_reply(
                    ErrorKind::Busy,
                    format!("forkd is out of file descriptors ({error}); try again later"),
                );
                let _ = stream.write(&reply_line(&reply));
                true
            }
            Err(_) => false,
        };
        // The refused stream is closed by now, so its fd is free again.
        self.reserve_fd = open_reserve_fd().ok();
        refused
    }

    /// A connection from [`accept`](Self::accept), from `peer`, was closed.
    pub fn closed(&mut self, peer: &Peer) {
        self.open = self.open.saturating_sub(1);
        if let Some(n) = self.open_by_uid.get_mut(&peer.uid) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.open_by_uid.remove(&peer.uid);
            }
        }
    }

    /// Root and forkd's own user: always served, and they alone may take
    /// the reserved slots.
    fn is_operator(&self, uid: u32) -> bool {
        uid == 0 || uid == self.own_uid.as_raw()
    }

    /// Root, forkd's own user, and members of `control_group` (by the
    /// peer's gid or its supplementary groups) are operators; members of
    /// `control_read_group` are read-only; everyone else is refused.
    fn authorize(&self, peer: &Peer, stream: &UnixStream) -> Result<Role, String> {
        if self.is_operator(peer.uid) {
            return Ok(Role::Operator);
        }
        if self.group.is_none() && self.read_group.is_none() {
            return Err(format!(
                "only root and forkd's user (uid {}) may use this socket; set [daemon] control_group (or control_read_group, for status and log) to admit a group",
                self.own_uid
            ));
        }
        let groups = peer_groups(stream, peer.pid);
        let member = |group: &Option<(String, Gid)>| {
            group
                .as_ref()
                .is_some_and(|(_, gid)| peer.gid == gid.as_raw() || groups.contains(&gid.as_raw()))
        };
        if member(&self.group) {
            return Ok(Role::Operator);
        }
        if member(&self.read_group) {
            return Ok(Role::ReadOnly);
        }
        let named: Vec<String> = [&self.group, &self.read_group]
            .into_iter()
            .flatten()
            .map(|(name, _)| format!("\"{name}\""))
            .collect();
        Err(format!(
            "only root, forkd's user (uid {}) and members of group {} may use this socket",
            self.own_uid,
            named.join(" or ")
        ))
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        let ours = std::fs::symlink_metadata(&self.path)
            .is_ok_and(|m| (m.dev(), m.ino()) == self.identity);
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Looks up the group a `[daemon]` key names; `Err` says what to do.
fn resolve_group(key: &str, name: Option<&str>) -> Result<Option<(String, Gid)>, String> {
    let Some(name) = name else { return Ok(None) };
    match Group::from_name(name) {
        Ok(Some(g)) => Ok(Some((name.to_string(), g.gid))),
        Ok(None) => Err(format!(
            "{key} \"{name}\" does not exist; create it (groupadd {name}) or remove {key}"
        )),
        Err(e) => Err(format!("cannot look up {key} \"{name}\": {e}")),
    }
}

/// The socket file's mode, and the group to give it, for `control_group`
/// and `control_read_group`. connect(2) needs write permission on the
/// file, and a file has one group: with neither key only forkd's user may
/// connect (0600); with one, that group too (0660, owned by it). With
/// both, the file is 0666 and the check at accept (SO_PEERCRED and
/// SO_PEERGROUPS, before a byte of the request is read) is what keeps
/// everyone else out, as the D-Bus system bus socket does; no ACL needed.
fn socket_mode<'g>(
    group: Option<&'g (String, Gid)>,
    read_group: Option<&'g (String, Gid)>,
) -> (u32, Option<&'g (String, Gid)>) {
    match (group, read_group) {
        (None, None) => (0o600, None),
        (Some(only), None) | (None, Some(only)) => (0o660, Some(only)),
        (Some(_), Some(_)) => (0o666, None),
    }
}

/// The spare fd (close-on-exec, like every fd std opens).
fn open_reserve_fd() -> io::Result<std::fs::File> {
    std::fs::File::open("/dev/null")
}

/// Whether one more connection fits, given the connections open in all
/// (`open`) and from the peer's uid (`by_uid`); `Err` says why not.
fn admission(open: usize, by_uid: usize, operator: bool) -> Result<(), String> {
    if by_uid >= MAX_CONNECTIONS_PER_UID {
        return Err(format!(
            "this user already holds {MAX_CONNECTIONS_PER_UID} control connections, the most one user may; close some and try again"
        ));
    }
    if open >= MAX_CONNECTIONS {
        return Err(format!(
            "forkd already serves {MAX_CONNECTIONS} control connections; close some and try again"
        ));
    }
    if !operator && open >= MAX_CONNECTIONS - OPERATOR_RESERVE {
        return Err(format!(
            "the last {OPERATOR_RESERVE} of forkd's {MAX_CONNECTIONS} control connections are kept for root and forkd's user; close some and try again"
        ));
    }
    Ok(())
}

/// Removes a control socket left by a crashed forkd (see
/// [`crate::socket_file`]); a live one or another kind of file is an error
/// that says what to do.
fn remove_stale(path: &Path) -> Result<(), String> {
    use crate::socket_file::{Stale, StaleError};
    match crate::socket_file::remove_stale(path) {
        Ok(Stale::Absent) => Ok(()),
        Ok(Stale::Removed) => {
            log::info!(
                "removed a stale control socket {} (nothing answered on it)",
                path.display()
            );
            Ok(())
        }
        Err(StaleError::NotASocket) => Err("the path exists and is not a socket; remove it or choose another [daemon] control_socket".into()),
        Err(StaleError::Live { pid }) => Err(format!(
            "another forkd{} is already serving this socket; stop it first, or give this one another [daemon] control_socket",
            pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
        )),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_socket_file_admits_exactly_the_configured_groups() {
        let ops = ("ops".to_string(), Gid::from_raw(10));
        let view = ("view".to_string(), Gid::from_raw(11));
        assert_eq!(socket_mode(None, None), (0o600, None));
        assert_eq!(socket_mode(Some(&ops), None), (0o660, Some(&ops)));
        assert_eq!(socket_mode(None, Some(&view)), (0o660, Some(&view)));
        assert_eq!(socket_mode(Some(&ops), Some(&view)), (0o666, None));
    }

    #[test]
    fn each_uid_gets_a_bounded_share() {
        assert!(admission(0, 0, false).is_ok());
        let full = admission(10, MAX_CONNECTIONS_PER_UID, false).unwrap_err();
        assert!(full.contains("already holds 16"), "{full}");
        assert!(admission(10, MAX_CONNECTIONS_PER_UID, true).is_err());
    }

    #[test]
    fn the_last_slots_are_kept_for_the_operator() {
        let general = MAX_CONNECTIONS - OPERATOR_RESERVE;
        assert!(admission(general - 1, 0, false).is_ok());
        let kept = admission(general, 0, false).unwrap_err();
        assert!(kept.contains("kept for root"), "{kept}");
        for open in general..MAX_CONNECTIONS {
            assert!(admission(open, 0, true).is_ok(), "{open}");
        }
        let busy = admission(MAX_CONNECTIONS, 0, true).unwrap_err();
        assert!(busy.contains("already serves 64"), "{busy}");
    }
}
