//! The `status` reply: every program's instances as JSON, beside the
//! services (from `services_status`) and the pools (`pools_status`).

use std::time::SystemTime;

use nix::unistd::Pid;
use serde_json::{json, Value};

use super::instance::{Ended, Instance, State};
use super::{Program, Supervisor};
use crate::control::{error_reply, ErrorKind};
use crate::process::ExitKind;

impl Supervisor {
    /// `{ok, programs, pools, services}`, all of them or the `names` asked for.
    pub(super) fn status_reply(&self, names: &[String]) -> Value {
        let services = self.services_status();
        let wanted = |name: &str| names.is_empty() || names.iter().any(|n| n == name || n == "all");
        for name in names.iter().filter(|n| n.as_str() != "all") {
            let known = self.programs.iter().any(|p| &p.config.name == name)
                || self.config.pools.iter().any(|p| &p.name == name)
                || services.iter().any(|s| s["name"].as_str() == Some(name));
            if !known {
                return error_reply(
                    ErrorKind::UnknownName,
                    format!("no program, pool or service named \"{name}\" (`forkctl status` lists them)"),
                );
            }
        }
        let programs: Vec<Value> = self
            .programs
            .iter()
            .filter(|p| wanted(&p.config.name))
            .map(|p| self.program_json(p))
            .collect();
        let services: Vec<Value> = services
            .into_iter()
            .filter(|s| s["name"].as_str().is_some_and(wanted))
            .map(|mut s| {
                if s.get("kind").is_none() {
                    s["kind"] = json!("service");
                }
                s
            })
            .collect();
        let pools = self.pools_status(&wanted);
        if programs.is_empty() && services.is_empty() && pools.is_empty() && !names.is_empty() {
            return error_reply(ErrorKind::UnknownName, "nothing matched the names given");
        }
        json!({ "ok": true, "programs": programs, "pools": pools, "services": services })
    }

    pub(super) fn program_json(&self, program: &Program) -> Value {
        let now = std::time::Instant::now();
        let instances: Vec<Value> = program
            .instances
            .iter()
            .enumerate()
            .map(|(index, inst)| {
                let mut entry = instance_json(index, inst);
                let waiting_for = if inst.state == State::Waiting {
                    self.unready_dependencies_of(program)
                        .into_iter()
                        .map(|name| {
                            let state = self.dependency_state(&name);
                            (name, state)
                        })
                        .collect()
                } else {
                    Vec::new()
                };
                let extra = super::status_detail::fields(
                    inst,
                    program.config.start_retries,
                    &waiting_for,
                    now,
                );
                if let (Some(entry), Value::Object(extra)) = (entry.as_object_mut(), extra) {
                    entry.extend(extra);
                }
                if let Some(cgroup) = program.cgroups.get(&index) {
                    entry["cgroup"] = json!(cgroup.dir());
                    entry["cgroup_processes"] = json!(cgroup.members());
                }
                entry
            })
            .collect();
        let first = program
            .instances
            .first()
            .map_or(State::Stopped, |i| i.state);
        let state = if program.instances.iter().all(|i| i.state == first) {
            first.as_str()
        } else {
            "mixed"
        };
        json!({
            "name": program.config.name,
            "kind": "program",
            "state": state,
            "instances": instances,
        })
    }
}

fn instance_json(index: usize, inst: &Instance) -> Value {
    let running = matches!(inst.state, State::Running | State::Stopping);
    let uptime = inst
        .started
        .filter(|_| running)
        .map(|(at, _)| at.elapsed().as_secs());
    let last_exit = inst.last_exit.as_ref().map(|(ended, at)| {
        let ago = SystemTime::now()
            .duration_since(*at)
            .unwrap_or_default()
            .as_secs();
        let (code, signal, error, text) = match ended {
            Ended::Exit(exit @ ExitKind::Code(c)) => (Some(*c), None, None, exit.to_string()),
            Ended::Exit(exit @ ExitKind::Signal(s)) => {
                let name = crate::process::signal_name(*s);
                (None, Some(name), None, exit.to_string())
            }
            // No process ran: the reason is the whole story.
            Ended::SpawnFailed(why) => (None, None, Some(why), why.clone()),
        };
        json!({ "code": code, "signal": signal, "error": error, "text": text, "secs_ago": ago })
    });
    json!({
        "index": index,
        "state": inst.state.as_str(),
        "pid": inst.pid.map(Pid::as_raw),
        "uptime_secs": uptime,
        "restarts": inst.restarts,
        "failures": inst.failures,
        "last_exit": last_exit,
        "next_restart_secs": inst.next_delay.filter(|_| inst.state == State::Backoff).map(|d| d.as_secs_f64()),
    })
}
