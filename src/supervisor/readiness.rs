//! When a program instance is ready, for the programs and pools that list
//! it in `after` (the order itself is `start_order.rs`).
//!
//! Readiness per program (`ready`): `started`, up for `ready_after`;
//! `tcp://…` or `unix:…`, the socket accepts a connection, probed with a
//! non-blocking connect every [`PROBE_INTERVAL`] and looked at again on the
//! next turn, never waited for; `notify`, `READY=1` arrived on the
//! `NOTIFY_SOCKET` forkd bound for that instance (sd_notify(3)), sent by
//! its main process or a member of its process group (SCM_CREDENTIALS).
//! A program is ready when every instance is (or, a one-shot job, exited
//! successfully and stays down: `Instance::counts_as_ready`). Nothing here
//! blocks.

use std::collections::HashMap;
use std::io;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use mio::{Interest, Token};
use nix::unistd::Pid;

use super::instance::State;
use super::{Source, Supervisor};
use crate::config::Ready;

/// How often a `tcp://` or `unix:` readiness probe is tried again.
pub(super) const PROBE_INTERVAL: Duration = Duration::from_millis(100);

/// A datagram bigger than this is not a notification (systemd allows
/// 4 KiB of STATUS text and a little more; sd_notify(3)).
const MAX_NOTIFY: usize = 8192;

/// Probes in flight and the notify sockets' numbering.
#[derive(Debug, Default)]
pub(super) struct ReadinessState {
    /// By the pid of the instance run being probed (a key that costs no
    /// allocation on each turn of the loop).
    probes: HashMap<Pid, Probe>,
    /// Numbers the notify sockets, so an address is never bound twice.
    next_socket: u64,
}

#[derive(Debug)]
struct Probe {
    /// When to look again (connect, or check the pending connect).
    due: Instant,
    connecting: Option<Connecting>,
}

#[derive(Debug)]
enum Connecting {
    Tcp(mio::net::TcpStream),
    Unix(mio::net::UnixStream),
}

/// The `NOTIFY_SOCKET` of one instance: an abstract AF_UNIX datagram socket
/// with SO_PASSCRED, so each message carries its sender's pid.
#[derive(Debug)]
pub(super) struct NotifySocket {
    socket: mio::net::UnixDatagram,
}

/// A program's notify socket for one instance: its token, and the address
/// as `NOTIFY_SOCKET` spells it (`@forkd/…`).
#[derive(Debug, Clone)]
pub(super) struct NotifyAddress {
    pub(super) token: Token,
    pub(super) address: String,
}

impl Supervisor {
    /// Marks instances ready whose probe or `ready_after` says so.
    pub(super) fn check_readiness(&mut self, now: Instant) {
        let mut became_ready = Vec::new();
        for (p, program) in self.programs.iter().enumerate() {
            for (index, inst) in program.instances.iter().enumerate() {
                let (Some(pid), Some((started, _))) = (inst.pid, inst.started) else {
                    continue;
                };
                if inst.state != State::Running || inst.ready {
                    continue;
                }
                let ready = match &program.config.ready {
                    Ready::Started => now >= started + program.config.ready_after,
                    Ready::Notify => false,
                    Ready::Tcp(_) | Ready::Unix(_) => {
                        probe(&mut self.readiness.probes, pid, &program.config.ready, now)
                    }
                };
                if ready {
                    became_ready.push((p, index));
                }
            }
        }
        for (p, index) in became_ready {
            self.mark_ready(p, index);
        }
        if self.readiness.probes.is_empty() {
            return;
        }
        // Probes of runs that are gone or ready.
        let programs = &self.programs;
        self.readiness.probes.retain(|pid, _| {
            programs
                .iter()
                .flat_map(|q| q.instances.iter())
                .any(|i| i.pid == Some(*pid) && !i.ready && i.state == State::Running)
        });
    }

    fn mark_ready(&mut self, p: usize, index: usize) {
        let program = &mut self.programs[p];
        let Some(inst) = program.instances.get_mut(index) else {
            return;
        };
        inst.ready = true;
        let how = match &program.config.ready {
            Ready::Started => format!(
                "up for {}",
                crate::logging::human_duration(program.config.ready_after)
            ),
            Ready::Notify => "READY=1".to_string(),
            Ready::Tcp(addr) => format!("tcp://{addr} accepts"),
            Ready::Unix(path) => format!("unix:{} accepts", path.display()),
        };
        log::info!("{}#{index} is ready ({how})", program.config.name);
    }

    /// The nearest probe or `ready_after` moment.
    pub(super) fn readiness_deadline(&self) -> Option<Instant> {
        let started = self.programs.iter().flat_map(|program| {
            program
                .instances
                .iter()
                .filter(|i| i.state == State::Running && !i.ready)
                .filter(|_| program.config.ready == Ready::Started)
                .filter_map(|i| i.started.map(|(at, _)| at + program.config.ready_after))
        });
        let probes = self.readiness.probes.values().map(|p| p.due);
        started.chain(probes).min()
    }

    /// The `NOTIFY_SOCKET` value for program `p`'s instance `index`, binding
    /// the socket at the first spawn (it lives as long as the instance).
    pub(super) fn notify_address(&mut self, p: usize, index: usize) -> Result<String, String> {
        if let Some(known) = self.programs[p].notify.get(&index) {
            return Ok(known.address.clone());
        }
        let name = format!(
            "forkd/{}/{}#{index}/{}",
            std::process::id(),
            self.programs[p].config.name,
            self.readiness.next_socket
        );
        self.readiness.next_socket += 1;
        let mut socket = bind_notify(&name)
            .map_err(|e| format!("cannot bind its NOTIFY_SOCKET @{name}: {e}"))?;
        let token = self.allocate_token();
        self.poll
            .registry()
            .register(&mut socket, token, Interest::READABLE)
            .map_err(|e| format!("cannot watch its NOTIFY_SOCKET: {e}"))?;
        self.sources
            .insert(token, Source::Notify(NotifySocket { socket }));
        let address = format!("@{name}");
        self.programs[p].notify.insert(
            index,
            NotifyAddress {
                token,
                address: address.clone(),
            },
        );
        Ok(address)
    }

    /// Reads every datagram waiting on a notify socket.
    pub(super) fn notify_ready(&mut self, token: Token) {
        let owner = self.programs.iter().enumerate().find_map(|(p, program)| {
            program
                .notify
                .iter()
                .find(|(_, a)| a.token == token)
                .map(|(&index, _)| (p, index))
        });
        let Some(Source::Notify(notify)) = self.sources.get(&token) else {
            return;
        };
        let mut messages = Vec::new();
        while let Some(message) = receive(&notify.socket) {
            messages.push(message);
        }
        let Some((p, index)) = owner else {
            // The instance is gone (scaled down, or retired by a reload).
            self.close_notify(token);
            return;
        };
        for (sender, text) in messages {
            let inst = &self.programs[p].instances[index];
            let name = &self.programs[p].config.name;
            if !sent_by_instance(sender, inst.pid) {
                log::warn!(
                    "{name}#{index}: ignored a notification from pid {} (not in its process group)",
                    sender.map_or("unknown".to_string(), |s| s.to_string())
                );
                continue;
            }
            if let Some(status) = text.lines().rev().find_map(|l| l.strip_prefix("STATUS=")) {
                // What `systemctl status` shows as "Status:".
                self.programs[p].instances[index].notify_status = Some(status.to_string());
            }
            let inst = &self.programs[p].instances[index];
            if text.lines().any(|l| l == "READY=1") && inst.state == State::Running && !inst.ready {
                self.mark_ready(p, index);
            }
        }
    }

    fn close_notify(&mut self, token: Token) {
        if let Some(Source::Notify(mut notify)) = self.sources.remove(&token) {
            let _ = self.poll.registry().deregister(&mut notify.socket);
        }
    }

    /// Closes notify sockets whose instance no longer exists (after a
    /// reload or a scale-down).
    pub(super) fn close_orphan_notify_sockets(&mut self) {
        let orphans: Vec<Token> = self
            .sources
            .iter()
            .filter(|(_, s)| matches!(s, Source::Notify(_)))
            .map(|(&t, _)| t)
            .filter(|t| {
                !self.programs.iter().any(|p| {
                    p.notify
                        .iter()
                        .any(|(&i, a)| a.token == *t && i < p.instances.len())
                })
            })
            .collect();
        for token in orphans {
            self.close_notify(token);
        }
    }
}

/// One readiness probe step; true once the socket accepted a connection.
fn probe(probes: &mut HashMap<Pid, Probe>, key: Pid, ready: &Ready, now: Instant) -> bool {
    let probe = probes.entry(key).or_insert(Probe {
        due: now,
        connecting: None,
    });
    if now < probe.due {
        return false;
    }
    probe.due = now + PROBE_INTERVAL;
    if probe.connecting.is_none() {
        probe.connecting = match ready {
            Ready::Tcp(addr) => mio::net::TcpStream::connect(*addr)
                .ok()
                .map(Connecting::Tcp),
            Ready::Unix(path) => mio::net::UnixStream::connect(path)
                .ok()
                .map(Connecting::Unix),
            Ready::Started | Ready::Notify => None,
        };
    }
    let verdict = match &probe.connecting {
        None => Some(false),
        Some(Connecting::Tcp(s)) => connected(s.take_error(), s.peer_addr().map(|_| ())),
        Some(Connecting::Unix(s)) => connected(s.take_error(), s.peer_addr().map(|_| ())),
    };
    match verdict {
        Some(true) => true,
        // Refused: try a new connect at the next interval.
        Some(false) => {
            probe.connecting = None;
            false
        }
        // Still connecting: look again next interval.
        None => false,
    }
}

/// Some(true) connected, Some(false) failed, None still in progress.
fn connected(error: io::Result<Option<io::Error>>, peer: io::Result<()>) -> Option<bool> {
    match (error, peer) {
        (Ok(Some(_)) | Err(_), _) => Some(false),
        (Ok(None), Ok(())) => Some(true),
        (Ok(None), Err(e)) if e.raw_os_error() == Some(libc::ENOTCONN) => None,
        (Ok(None), Err(_)) => Some(false),
    }
}

fn bind_notify(name: &str) -> io::Result<mio::net::UnixDatagram> {
    use std::os::linux::net::SocketAddrExt;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
    let socket = std::os::unix::net::UnixDatagram::bind_addr(&addr)?;
    socket.set_nonblocking(true)?;
    nix::sys::socket::setsockopt(&socket, nix::sys::socket::sockopt::PassCred, &true)?;
    Ok(mio::net::UnixDatagram::from_std(socket))
}

/// One datagram and its sender's pid; None when nothing is waiting.
fn receive(socket: &mio::net::UnixDatagram) -> Option<(Option<Pid>, String)> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags, UnixCredentials};
    let mut buf = vec![0u8; MAX_NOTIFY];
    let mut cmsg = nix::cmsg_space!(UnixCredentials);
    let mut iov = [io::IoSliceMut::new(&mut buf)];
    let msg = recvmsg::<()>(
        socket.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .ok()?;
    let len = msg.bytes;
    let sender = msg.cmsgs().ok()?.find_map(|c| match c {
        ControlMessageOwned::ScmCredentials(creds) => Some(Pid::from_raw(creds.pid())),
        _ => None,
    });
    Some((sender, String::from_utf8_lossy(&buf[..len]).into_owned()))
}

/// The sender is the instance's main process or in its process group
/// (a shell's `systemd-notify --ready`, a helper the program forked).
fn sent_by_instance(sender: Option<Pid>, main: Option<Pid>) -> bool {
    match (sender, main) {
        (Some(s), Some(m)) => s == m || nix::unistd::getpgid(Some(s)).is_ok_and(|g| g == m),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_probe_against_a_closed_port_fails_and_an_open_one_succeeds() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let open = Ready::Tcp(listener.local_addr().unwrap());
        let mut probes = HashMap::new();
        let key = Pid::from_raw(1);
        let mut now = Instant::now();
        let mut ok = false;
        for _ in 0..50 {
            ok = probe(&mut probes, key, &open, now);
            if ok {
                break;
            }
            now += PROBE_INTERVAL;
        }
        assert!(ok, "a listening loopback port accepts");
        drop(listener);
        let closed = Ready::Tcp("127.0.0.1:1".parse().unwrap());
        let mut probes = HashMap::new();
        assert!(!probe(&mut probes, key, &closed, Instant::now()));
    }

    #[test]
    fn a_unix_probe_succeeds_once_the_socket_listens() {
        let path = std::env::temp_dir().join(format!("forkd-probe-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let ready = Ready::Unix(path.clone());
        let key = Pid::from_raw(1);
        let mut probes = HashMap::new();
        let now = Instant::now();
        assert!(!probe(&mut probes, key, &ready, now), "no socket yet");
        let _listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        assert!(!probe(&mut probes, key, &ready, now), "not due yet");
        assert!(probe(&mut probes, key, &ready, now + PROBE_INTERVAL));
        let _ = std::fs::remove_file(&path);
    }
}
