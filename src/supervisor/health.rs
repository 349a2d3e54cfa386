//! The `health` reply: whether everything that should run does, read off
//! the same status the `status` reply shows, for scripts and container
//! probes (`forkctl health` exits 0 or 1 on it).
//!
//! Healthy means: every instance of an `autostart` program is running and
//! has passed its `ready` check (or is a one-shot job that finished, or
//! was stopped by the operator); every pool has a running worker; every
//! service is running (not draining or stopping) and, in prefork and
//! event mode, has a worker up. A service a reload replaced or removed,
//! still draining, is no reason: a load balancer asking `/healthz` must
//! not take the host out for a reload. Each failing part is one short
//! reason.

use serde_json::{json, Value};

use super::Supervisor;

impl Supervisor {
    /// `{ok, healthy, reasons}`.
    pub(super) fn health_reply(&self) -> Value {
        let mut reasons = Vec::new();
        for program in self.programs.iter().filter(|p| p.config.autostart) {
            program_reasons(&self.program_json(program), &mut reasons);
        }
        for pool in self.pools_status(&|_| true) {
            if pool["state"] != "running" {
                reasons.push(format!(
                    "pool {} is {}",
                    text(&pool["name"]),
                    text(&pool["state"])
                ));
            }
        }
        // The services a reload retired drain by design while their
        // successor (if any) serves: no reason.
        for running in self.services.list.iter().filter(|r| r.retired.is_none()) {
            service_reasons(&running.service.status(), &mut reasons);
        }
        json!({ "ok": true, "healthy": reasons.is_empty(), "reasons": reasons })
    }
}

fn text(value: &Value) -> String {
    value
        .as_str()
        .map_or_else(|| value.to_string(), str::to_string)
}

fn program_reasons(program: &Value, reasons: &mut Vec<String>) {
    let name = text(&program["name"]);
    for instance in program["instances"].as_array().into_iter().flatten() {
        let index = &instance["index"];
        let state = text(&instance["state"]);
        // Stopped by the operator, or a one-shot job done (exit 0, down
        // by its restart policy, so ready): nothing is wrong.
        if state == "stopped" || (state != "running" && instance["ready"] == true) {
            continue;
        }
        if state != "running" {
            let why = instance["detail"].as_str().map_or(state, str::to_string);
            reasons.push(format!("{name}#{index} is {why}"));
        } else if instance["ready"] == false {
            reasons.push(format!("{name}#{index} is not ready yet"));
        }
    }
}

fn service_reasons(service: &Value, reasons: &mut Vec<String>) {
    let name = text(&service["name"]);
    let state = text(&service["state"]);
    if state != "running" {
        reasons.push(format!("service {name} is {state}"));
        return;
    }
    let pooled = matches!(service["mode"].as_str(), Some("prefork" | "event"));
    let up = service["workers"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|w| matches!(w["state"].as_str(), Some("idle" | "busy")));
    if pooled && !up {
        reasons.push(format!("service {name} has no worker up"));
    }
}
