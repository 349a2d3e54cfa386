//! systemd integration: readiness and status notifications (`sd_notify`),
//! the watchdog, and sockets handed over by socket activation.
//!
//! Owns the three protocols of sd_notify(3), sd_watchdog_enabled(3) and
//! sd_listen_fds(3), written by hand (a datagram per message, a few
//! environment variables): `NOTIFY_SOCKET`, `WATCHDOG_USEC`/`WATCHDOG_PID`
//! and `LISTEN_PID`/`LISTEN_FDS`/`LISTEN_FDNAMES`. Syscalls: socket(2) and
//! sendto(2) on an `AF_UNIX` datagram socket, fcntl(2) for `FD_CLOEXEC`,
//! clock_gettime(2) for `MONOTONIC_USEC`.
//!
//! Invariants: the variables are read once, in `main`, before any other
//! thread or child exists, and removed from forkd's environment so no child
//! sees them (`process::exec::child_environment` strips them too). Only the
//! process that read them ever sends a notification: a forked worker that
//! does not exec inherits the socket but [`notify::Notifier`] checks the pid
//! and stays silent (systemd would drop its messages anyway, see
//! `NotifyAccess=`). This module never decides *when* to notify: the
//! supervisor's loop does (READY after start-up and after each reload,
//! WATCHDOG from its timer phase so that a stuck loop stops petting).

pub mod activation;
pub mod notify;
pub mod watchdog;

use std::time::Instant;

pub use activation::Inherited;
pub use notify::Notifier;
pub use watchdog::Watchdog;

/// Everything systemd handed to this forkd, read once at start.
#[derive(Debug, Default)]
pub struct Systemd {
    /// `NOTIFY_SOCKET`, when forkd runs as `Type=notify`.
    pub notifier: Option<Notifier>,
    /// `WATCHDOG_USEC`, when `WatchdogSec=` is set for forkd's own pid.
    pub watchdog: Option<Watchdog>,
    /// Sockets passed by socket activation (empty when there are none).
    pub inherited: Inherited,
    /// Set after `--daemon`: READY also carries `MAINPID=`.
    daemonized: bool,
    /// The last `STATUS=` sent, so an unchanged status is not repeated.
    last_status: String,
}

impl Systemd {
    /// Reads and removes systemd's variables from the environment.
    ///
    /// Must run in `main` before any thread exists (it calls
    /// `std::env::remove_var`). Problems (a malformed variable, an unusable
    /// socket) are returned as warnings to log once the logger is up; forkd
    /// then runs without that feature rather than not at all.
    pub fn from_env() -> (Systemd, Vec<String>) {
        let mut warnings = Vec::new();
        // Inherited fds first: until forkd opens its own (the notify socket
        // here), fd 3 and up can only be systemd's.
        let inherited = Inherited::from_env().unwrap_or_else(|e| {
            warnings.push(e);
            Inherited::default()
        });
        let notifier = Notifier::from_env().unwrap_or_else(|e| {
            warnings.push(e);
            None
        });
        let watchdog = Watchdog::from_env().unwrap_or_else(|e| {
            warnings.push(e);
            None
        });
        let systemd = Systemd {
            notifier,
            watchdog,
            inherited,
            daemonized: false,
            last_status: String::new(),
        };
        (systemd, warnings)
    }

    /// After the double fork: this process is the one that notifies now,
    /// and READY tells systemd its new main pid.
    pub fn daemonized(&mut self) {
        self.daemonized = true;
        if let Some(n) = self.notifier.as_mut() {
            n.adopt_current_process();
        }
    }

    /// `READY=1` with the status line (and `MAINPID=` when daemonized).
    pub fn ready(&mut self, status: &str) {
        let mut message = format!("READY=1\nSTATUS={status}");
        if self.daemonized {
            message.push_str(&format!("\nMAINPID={}", std::process::id()));
        }
        self.last_status = status.to_string();
        self.send(&message);
    }

    /// `RELOADING=1` with `MONOTONIC_USEC=`, as `Type=notify-reload` wants.
    pub fn reloading(&mut self) {
        self.send(&format!(
            "RELOADING=1\nMONOTONIC_USEC={}\nSTATUS=reloading",
            monotonic_usec()
        ));
    }

    /// `STOPPING=1` at the start of shutdown.
    pub fn stopping(&mut self) {
        self.send("STOPPING=1\nSTATUS=stopping");
    }

    /// `STATUS=`, only when it differs from the last one sent.
    pub fn status(&mut self, status: &str) {
        if self.notifier.is_some() && self.last_status != status {
            self.last_status = status.to_string();
            self.send(&format!("STATUS={status}"));
        }
    }

    /// Start-up failed: `STATUS=` says why, `ERRNO=` classifies it.
    pub fn failed(&mut self, errno: i32, why: &str) {
        self.send(&format!("STATUS={why}\nERRNO={errno}"));
    }

    /// Called from the loop's timer phase: pets the watchdog when due.
    pub fn on_timer(&mut self, now: Instant) {
        if self.watchdog.as_mut().is_some_and(|w| w.due(now)) {
            self.send("WATCHDOG=1");
        }
    }

    /// When the loop must wake up next for the watchdog.
    pub fn deadline(&self) -> Option<Instant> {
        self.watchdog.as_ref().map(Watchdog::deadline)
    }

    fn send(&self, message: &str) {
        if let Some(n) = &self.notifier {
            if let Err(e) = n.send(message) {
                log::warn!(
                    "sd_notify: cannot send {:?} to {}: {e}",
                    message.lines().next().unwrap_or(""),
                    n.address()
                );
            }
        }
    }
}

/// CLOCK_MONOTONIC in microseconds, the clock systemd compares
/// `MONOTONIC_USEC=` against (sd_notify(3)).
pub fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always
    // exists on Linux, so the call cannot fail with these arguments.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000
}
