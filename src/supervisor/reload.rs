//! Reload (SIGHUP, `forkctl reload`, `systemctl reload`): re-read the
//! config file and apply what changed, or keep the old config running when
//! the new one is invalid.
//!
//! The whole new configuration is read and validated before anything is
//! touched, and the plan (`config::plan`) computed from the two configs:
//! `forkctl reload --dry-run` stops there and returns it. Then, by name:
//! new programs start; removed ones are stopped gracefully; changed ones
//! whose change is policy only (restart, back-off, stop) get the new policy
//! in place, same pids (a new `instances` scales them, as `forkctl scale`); other changed ones are replaced, new instances
//! first and only then the old ones stopped (nginx's order, so capacity
//! never drops); unchanged ones are not touched (same pids). Old instances
//! are tracked until reaped (`retiring.rs`). Services follow the same
//! rules, keeping every open listening socket whose address stays
//! (`services_reload.rs`); pools as `reload_pools` in `pools.rs` says.
//! `[daemon] log_level` is applied unless `--log-level`
//! pinned it. systemd hears `RELOADING=1` at the start and `READY=1` at the
//! end, whatever the outcome, with a `STATUS=` that names a failure.

use std::path::Path;

use super::events::Event;
use super::retiring::Retiring;
use super::{Program, Supervisor};
use crate::config::{self, Action, Config, ConfigDiff, Plan, ProgramConfig};

/// What a reload did (or, dry, would do): the one-line summary and the plan.
#[derive(Debug, Clone)]
pub struct Reloaded {
    pub summary: String,
    pub plan: Plan,
}

/// Reload's own state in the supervisor.
#[derive(Debug, Default)]
pub(super) struct ReloadState {
    /// Old programs still stopping.
    pub(super) retiring: Vec<Retiring>,
    pub(super) next_retiring_key: u64,
    /// `--log-level` was given: it wins over `log_level` on every reload.
    log_level_pinned: bool,
    /// The last failed reload's first error, shown in `STATUS=` until a
    /// reload succeeds.
    pub(super) last_error: Option<String>,
    /// Reloads applied and rejected since start, and when the last one
    /// of either ended (`forkctl metrics`).
    pub(super) applied: u64,
    pub(super) rejected: u64,
    pub(super) last_at: Option<std::time::SystemTime>,
}

impl Supervisor {
    /// `--log-level` was given on the command line: reload keeps it.
    pub fn pin_log_level(&mut self) {
        self.reload.log_level_pinned = true;
    }

    /// The plan a reload would carry out; changes nothing. It plans for
    /// forkd's own file, read again, or for `text`, which a client read
    /// (`forkd --check --diff`), with the path it came from for
    /// `file:line:col`: forkd never opens a path a client names. An
    /// invalid configuration returns every error, as [`Self::reload`].
    pub fn plan_reload(&self, text: Option<(&Path, &str)>) -> Result<Reloaded, Vec<String>> {
        let new = match text {
            Some((path, text)) => Config::parse(text, path),
            None => Config::load(&self.config.path),
        }
        .map_err(|errors| errors.0.iter().map(|e| e.to_string()).collect::<Vec<_>>())?;
        Ok(Reloaded {
            summary: format!(
                "dry run of {}: {}; nothing was changed",
                new.path.display(),
                config::diff(&self.config, &new).summary()
            ),
            plan: config::plan(&self.config, &new),
        })
    }

    /// Re-reads the config file. An invalid file changes nothing and returns
    /// every error (`file:line:col: ...`). A valid one is applied; the
    /// returned summary says what changed, and the plan how.
    pub fn reload(&mut self) -> Result<Reloaded, Vec<String>> {
        if self.shutdown.is_some() {
            // Starting programs now would race the shutdown that stops them.
            let why = "reload refused: forkd is shutting down".to_string();
            log::warn!("{why}");
            return Err(vec![why]);
        }
        self.systemd.reloading();
        let result = self.apply_config_file();
        self.reload.last_at = Some(std::time::SystemTime::now());
        match &result {
            Ok(done) => {
                self.reload.applied += 1;
                self.reload.last_error = None;
                log::info!("{}", done.summary);
                self.events.push(Event::ReloadApplied {
                    summary: done.summary.clone(),
                });
            }
            Err(errors) => {
                self.reload.rejected += 1;
                for e in errors {
                    log::error!("reload rejected: {e}");
                }
                log::error!(
                    "reload rejected ({} error(s)): still running the previous configuration",
                    errors.len()
                );
                let first = errors.first().cloned().unwrap_or_default();
                self.events.push(Event::ReloadRejected {
                    errors: errors.len(),
                    first: first.clone(),
                });
                self.reload.last_error = Some(if errors.len() > 1 {
                    format!("{first} (and {} more)", errors.len() - 1)
                } else {
                    first
                });
            }
        }
        let status = self.status_line();
        self.systemd.ready(&status);
        result
    }

    fn apply_config_file(&mut self) -> Result<Reloaded, Vec<String>> {
        let new = Config::load(&self.config.path)
            .map_err(|errors| errors.0.iter().map(|e| e.to_string()).collect::<Vec<_>>())?;
        let diff = config::diff(&self.config, &new);
        let plan = config::plan(&self.config, &new);
        let old = self.config.clone();
        let mut lines = self.reload_services(&old, &new, &diff)?;
        self.config = new;
        lines.extend(self.reload_daemon(&old, &diff));
        lines.extend(self.reload_pools(&diff, &plan));
        for line in &lines {
            log::info!("{line}");
        }
        self.reload_programs(&old, &diff, &plan);
        Ok(Reloaded {
            summary: format!(
                "reloaded {}: {}",
                self.config.path.display(),
                diff.summary()
            ),
            plan,
        })
    }

    /// The front end's part of a reload: apply `[[service]]` changes.
    ///
    /// Called after the new config has been validated and before anything
    /// else changes, with `self.config` still the old configuration. On
    /// `Ok`, the returned lines (one per service, `reload: echo changed
    /// (listen), ...`) are logged and the reload goes on. On `Err`, the
    /// services must be left exactly as they were: the whole reload is then
    /// rejected, the errors are reported (log, `STATUS=`, `forkctl
    /// reload`), and the old configuration keeps running. Listeners whose
    /// address is in both configs keep their open socket (no connection
    /// is refused during a reload); `systemd:NAME` addresses are taken from
    /// `self.systemd.inherited` (crate::systemd::activation::Inherited).
    ///
    /// How: `services_reload.rs` (build every new service first, then
    /// start it, then retire the old one).
    pub(super) fn reload_services(
        &mut self,
        old: &Config,
        new: &Config,
        diff: &ConfigDiff,
    ) -> Result<Vec<String>, Vec<String>> {
        self.apply_service_changes(old, new, diff)
    }

    /// `[daemon]`: the log level (unless pinned); the rest at next start.
    fn reload_daemon(&mut self, old: &Config, diff: &ConfigDiff) -> Vec<String> {
        let mut lines = Vec::new();
        if !diff.daemon_changed {
            return lines;
        }
        let (was, now) = (&old.daemon, &self.config.daemon);
        if was.log_level != now.log_level {
            if self.reload.log_level_pinned {
                lines.push(format!(
                    "reload: log_level {:?} ignored: --log-level was given on the command line",
                    now.log_level
                ));
            } else {
                crate::logging::set_level(now.log_level);
                lines.push(format!(
                    "reload: log_level {:?} -> {:?}",
                    was.log_level, now.log_level
                ));
            }
        }
        if was.log_file != now.log_file {
            lines.push("reload: log_file takes effect when forkd restarts".into());
        }
        // The socket keeps the path, mode and group it was bound with.
        if (
            &was.control_socket,
            &was.control_group,
            &was.control_read_group,
        ) != (
            &now.control_socket,
            &now.control_group,
            &now.control_read_group,
        ) {
            lines.push("reload: control_socket, control_group and control_read_group take effect when forkd restarts".into());
        }
        lines
    }

    /// Starts, stops and replaces programs, or gives them their new policy
    /// in place, as `plan` says, saying what it does for each before doing it.
    fn reload_programs(&mut self, old: &Config, diff: &ConfigDiff, plan: &Plan) {
        for name in &diff.programs.removed {
            let Some(pos) = self.programs.iter().position(|p| &p.config.name == name) else {
                continue;
            };
            let program = self.programs.remove(pos);
            log::info!(
                "reload: {name} removed, stopping {}",
                crate::logging::count(live(&program), "instance", "instances")
            );
            let key = self.retire(program, "removed");
            self.stop_retiring(key);
        }
        for name in &diff.programs.changed {
            let (Some(before), Some(after)) = (
                find(&old.programs, name),
                find(&self.config.programs, name).cloned(),
            ) else {
                continue;
            };
            let Some(pos) = self.programs.iter().position(|p| &p.config.name == name) else {
                continue;
            };
            let running = live(&self.programs[pos]);
            let fields = config::program_changes(before, &after).join(", ");
            if plan.program(name).map(|e| e.action) == Some(Action::ApplyInPlace) {
                log::info!(
                    "reload: {name} changed ({fields}), applied in place; {} keep running",
                    crate::logging::count(running, "instance", "instances")
                );
                self.programs[pos].apply_policy(&after);
                if before.instances != after.instances {
                    let (was, _) = self.scale_program(pos, after.instances);
                    log::info!(
                        "reload: {name} scaling from {was} to {} instance(s)",
                        after.instances
                    );
                }
                continue;
            }
            let start = after.autostart || running > 0;
            let wanted = after.instances as usize;
            if !start {
                log::info!("reload: {name} changed ({fields}); it stays stopped");
            } else if running == wanted {
                log::info!(
                    "reload: {name} changed ({fields}), replacing {}",
                    crate::logging::count(running, "instance", "instances")
                );
            } else {
                log::info!(
                    "reload: {name} changed ({fields}), replacing {} with {wanted}",
                    crate::logging::count(running, "instance", "instances")
                );
            }
            // Old pids are re-keyed before any new one with the same name
            // exists; new instances start before the old ones are stopped.
            let replaced = std::mem::replace(&mut self.programs[pos], Program::new(&after));
            let key = self.retire(replaced, "replaced");
            if start {
                self.start_program(name, None);
            }
            self.stop_retiring(key);
        }
        for name in &diff.programs.added {
            let Some(config) = find(&self.config.programs, name).cloned() else {
                continue;
            };
            self.programs.push(Program::new(&config));
            if config.autostart {
                log::info!(
                    "reload: {name} added, starting {}",
                    crate::logging::count(config.instances as usize, "instance", "instances")
                );
                self.start_program(name, None);
            } else {
                log::info!("reload: {name} added (autostart = false)");
            }
        }
        let order: Vec<String> = self
            .config
            .programs
            .iter()
            .map(|p| p.name.clone())
            .collect();
        self.programs
            .sort_by_key(|p| order.iter().position(|n| *n == p.config.name));
        self.close_orphan_notify_sockets();
    }
}

fn find<'a>(programs: &'a [ProgramConfig], name: &str) -> Option<&'a ProgramConfig> {
    programs.iter().find(|p| p.name == name)
}

/// Instances that have a process or will soon (not down).
fn live(program: &Program) -> usize {
    program
        .instances
        .iter()
        .filter(|i| !i.state.is_down())
        .count()
}
