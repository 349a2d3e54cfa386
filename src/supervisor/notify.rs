//! What the loop tells systemd, and when: READY once start-up is done,
//! STATUS when the summary changes, WATCHDOG from the timer phase (so a
//! stuck loop stops petting), STOPPING at shutdown. Reload sends its own
//! RELOADING/READY pair (`reload.rs`). The protocols themselves live in
//! `crate::systemd`; this file only decides the moments and the words.

use std::time::Instant;

use super::{State, Supervisor};
use crate::systemd::{Inherited, Systemd};

impl Supervisor {
    /// Hands over what `main` read from systemd's environment.
    pub fn set_systemd(&mut self, systemd: Systemd) {
        self.systemd = systemd;
    }

    /// Sockets inherited by socket activation, for opening listeners
    /// (`inherited_sockets().take(name)`).
    pub fn inherited_sockets(&mut self) -> &mut Inherited {
        &mut self.systemd.inherited
    }

    /// `3 programs, 2 pools, 4 services; 0 failing`, plus the last reload
    /// error until a reload succeeds.
    pub fn status_line(&self) -> String {
        let failing = self
            .programs
            .iter()
            .filter(|p| {
                p.instances
                    .iter()
                    .any(|i| matches!(i.state, State::Backoff | State::Fatal))
            })
            .count();
        let mut line = format!(
            "{} programs, {} pools, {} services; {failing} failing",
            self.programs.len(),
            self.config.pools.len(),
            self.config.services.len()
        );
        if let Some(e) = &self.reload.last_error {
            line.push_str(&format!("; last reload failed: {e}"));
        }
        line
    }

    /// Start-up is done (every autostart program spawned, every listener
    /// bound): report inherited sockets and tell systemd.
    pub(super) fn announce_ready(&mut self) {
        if let Some(summary) = self.systemd.inherited.summary() {
            log::info!("{summary}");
        }
        for warning in self.systemd.inherited.unused() {
            log::warn!("{warning}");
        }
        if let Some(w) = &self.systemd.watchdog {
            log::info!(
                "systemd watchdog: petting every {}",
                crate::logging::human_duration(w.interval())
            );
        }
        let status = self.status_line();
        self.systemd.ready(&status);
    }

    /// The timer phase's systemd work: pet the watchdog when due, refresh
    /// STATUS when the summary changed.
    pub(super) fn systemd_timers(&mut self, now: Instant) {
        self.systemd.on_timer(now);
        if self.systemd.notifier.is_some() {
            let status = self.status_line();
            self.systemd.status(&status);
        }
    }
}
