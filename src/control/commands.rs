//! What each `forkctl` command does: send its request, wait for the state
//! it asked for by polling `status` (start, stop, restart, shutdown), and
//! print the outcome for people (a table, one line per instance) or, with
//! `--json`, the daemon's raw replies. Runs in the forkctl process only;
//! the short sleeps between polls happen here, never in forkd.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::cli::{Cli, Command};
use super::client::{Client, ClientError};
use super::status_table::{print_status, uptime};
use super::{default_socket_path, Request};
use crate::exit;

/// Between two polls of `status` while waiting.
const POLL: Duration = Duration::from_millis(50);
/// Between two polls in `log --follow`.
const FOLLOW_POLL: Duration = Duration::from_millis(200);

/// Runs one forkctl invocation; returns the exit code.
pub fn run(cli: Cli) -> i32 {
    let path = cli.socket.clone().unwrap_or_else(default_socket_path);
    let ctl = Ctl {
        path,
        json: cli.json,
        timeout: cli.timeout,
        wait: !cli.no_wait,
    };
    match ctl.command(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("forkctl: {e}");
            match e {
                ClientError::Unreachable { .. } => exit::UNREACHABLE,
                ClientError::Refused { .. } => exit::FAILURE,
            }
        }
    }
}

struct Ctl {
    path: PathBuf,
    json: bool,
    timeout: Duration,
    wait: bool,
}

/// What a start/stop/restart waits for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Goal {
    Start,
    Stop,
    Restart,
}

impl Ctl {
    fn ask(&self, request: &Request) -> Result<(Value, String), ClientError> {
        Client::connect(&self.path)?.request(request)
    }

    fn command(&self, command: Command) -> Result<i32, ClientError> {
        match command {
            Command::Status { names } => {
                let (reply, raw) = self.ask(&Request::Status { names })?;
                if self.json {
                    println!("{raw}");
                } else {
                    print_status(&reply);
                }
                Ok(exit::OK)
            }
            Command::Start { name } => self.change(Request::Start { name }, Goal::Start),
            Command::Stop { name } => self.change(Request::Stop { name }, Goal::Stop),
            Command::Restart { name } => self.change(Request::Restart { name }, Goal::Restart),
            Command::Signal { name, signal } => {
                let (reply, raw) = self.ask(&Request::Signal { name, signal })?;
                self.say(&raw, || {
                    for t in reply["signalled"].as_array().into_iter().flatten() {
                        println!(
                            "{}#{} (pid {}): sent {}",
                            t["name"].as_str().unwrap_or("?"),
                            t["index"],
                            t["pid"],
                            reply["signal"].as_str().unwrap_or("?")
                        );
                    }
                });
                Ok(exit::OK)
            }
            Command::Scale { name, count } => {
                let (reply, raw) = self.ask(&Request::Scale {
                    name: name.clone(),
                    count,
                })?;
                self.say(&raw, || {
                    let what = if reply["kind"] == "pool" {
                        "worker(s)"
                    } else {
                        "instance(s)"
                    };
                    println!("{name}: {} → {} {what}", reply["from"], reply["to"])
                });
                Ok(exit::OK)
            }
            Command::Reload { dry_run } => {
                let (reply, raw) = self.ask(&Request::Reload {
                    dry_run,
                    config: None,
                })?;
                self.say(&raw, || print_reload(&reply));
                Ok(exit::OK)
            }
            Command::Shutdown => self.shutdown(),
            Command::Log {
                name,
                lines,
                follow,
            } => self.log(&name, lines, follow),
            Command::Events { follow } => self.events(follow),
            Command::Call { pool } => self.call(pool),
            Command::Chat { service, text } => self.chat(service, text),
            Command::Completions { shell } => Ok(super::completions::print(shell)),
            Command::Health => {
                let (reply, raw) = self.ask(&Request::Health)?;
                let healthy = reply["healthy"] == true;
                self.say(&raw, || {
                    if healthy {
                        println!("healthy");
                    } else {
                        let reasons: Vec<&str> = reply["reasons"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(|r| r.as_str())
                            .collect();
                        println!("unhealthy: {}", reasons.join("; "));
                    }
                });
                Ok(if healthy { 0 } else { 1 })
            }
            Command::Metrics => {
                let (reply, raw) = self.ask(&Request::Metrics)?;
                self.say(&raw, || {
                    // A closed stdout (`| head`) ends quietly.
                    let text = reply["text"].as_str().unwrap_or_default();
                    let mut out = std::io::stdout().lock();
                    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
                });
                Ok(exit::OK)
            }
            Command::Version => {
                let (reply, raw) = self.ask(&Request::Version)?;
                self.say(&raw, || {
                    println!("forkctl {}", env!("CARGO_PKG_VERSION"));
                    println!(
                        "forkd {} (pid {}, up {}, socket {})",
                        reply["version"].as_str().unwrap_or("?"),
                        reply["pid"],
                        uptime(reply["uptime_secs"].as_u64()),
                        reply["control_socket"].as_str().unwrap_or("?")
                    );
                });
                Ok(exit::OK)
            }
        }
    }

    /// `forkctl call POOL`: stdin is the job, stdout its result; an `ERR`
    /// result goes to stderr and exits 1.
    fn call(&self, pool: String) -> Result<i32, ClientError> {
        let mut payload = Vec::new();
        if let Err(e) = std::io::stdin().read_to_end(&mut payload) {
            eprintln!("forkctl: cannot read the job from stdin: {e}");
            return Ok(exit::FAILURE);
        }
        let mut client = Client::connect(&self.path)?;
        client.request(&Request::Call { pool })?;
        match client.job(&payload, self.timeout) {
            Ok(result) if result.starts_with(b"ERR ") => {
                let reason = String::from_utf8_lossy(&result[4..]);
                eprintln!("forkctl: {}", reason.trim_end());
                Ok(exit::FAILURE)
            }
            Ok(result) => {
                let mut out = std::io::stdout().lock();
                if out.write_all(&result).and_then(|()| out.flush()).is_err() {
                    return Ok(exit::FAILURE);
                }
                Ok(exit::OK)
            }
            Err(e) => {
                eprintln!("forkctl: {e}");
                Ok(exit::FAILURE)
            }
        }
    }

    /// `forkctl chat SERVICE TEXT`: a text too long for one datagram is
    /// refused here, before forkd is asked.
    fn chat(&self, service: String, text: String) -> Result<i32, ClientError> {
        let max = crate::handlers::MAX_OPERATOR_TEXT;
        if text.len() > max {
            eprintln!(
                "forkctl: the text is {} bytes; one datagram carries at most {max} bytes of it",
                text.len()
            );
            return Ok(exit::FAILURE);
        }
        let (reply, raw) = self.ask(&Request::Chat {
            name: service.clone(),
            text,
        })?;
        self.say(&raw, || {
            println!("{service}: sent to {} member(s)", reply["members"])
        });
        Ok(exit::OK)
    }

    /// Prints the raw reply with --json, else runs `human`.
    fn say(&self, raw: &str, human: impl FnOnce()) {
        if self.json {
            println!("{raw}");
        } else {
            human();
        }
    }

    /// start/stop/restart: send, then poll status until each instance
    /// reaches the goal (or a final state that misses it, or the timeout).
    fn change(&self, request: Request, goal: Goal) -> Result<i32, ClientError> {
        let (reply, raw) = self.ask(&request)?;
        if self.json {
            println!("{raw}");
        }
        let targets: Vec<Value> = reply["targets"].as_array().cloned().unwrap_or_default();
        if !self.wait {
            if !self.json {
                println!("{} instance(s): request sent", targets.len());
            }
            return Ok(exit::OK);
        }
        let mut pending: Vec<Value> = targets;
        let deadline = Instant::now() + self.timeout;
        let mut failed = false;
        loop {
            let names: Vec<String> = pending
                .iter()
                .filter_map(|t| t["name"].as_str().map(String::from))
                .collect();
            let (status, _) = self.ask(&Request::Status {
                names: dedup(names),
            })?;
            pending.retain(|t| {
                let now = find_instance(&status, t);
                match judge(goal, t, now.as_ref()) {
                    None => true,
                    Some((ok, text)) => {
                        failed |= !ok;
                        if !self.json {
                            println!(
                                "{}#{}: {text}",
                                t["name"].as_str().unwrap_or("?"),
                                t["index"]
                            );
                        }
                        false
                    }
                }
            });
            if pending.is_empty() {
                return Ok(if failed { exit::FAILURE } else { exit::OK });
            }
            if Instant::now() >= deadline {
                for t in &pending {
                    let now = find_instance(&status, t);
                    let state = now
                        .as_ref()
                        .and_then(|i| i["state"].as_str())
                        .unwrap_or("gone");
                    eprintln!(
                        "forkctl: {}#{} is still {state} after {:?} (--timeout)",
                        t["name"].as_str().unwrap_or("?"),
                        t["index"],
                        self.timeout
                    );
                }
                return Ok(exit::FAILURE);
            }
            std::thread::sleep(POLL);
        }
    }

    fn shutdown(&self) -> Result<i32, ClientError> {
        let (reply, raw) = self.ask(&Request::Shutdown)?;
        self.say(&raw, || {
            println!("forkd (pid {}) is stopping every program", reply["pid"])
        });
        if !self.wait {
            return Ok(exit::OK);
        }
        let deadline = Instant::now() + self.timeout;
        while super::client::answers(&self.path) {
            if Instant::now() >= deadline {
                eprintln!(
                    "forkctl: forkd still answers after {:?} (--timeout)",
                    self.timeout
                );
                return Ok(exit::FAILURE);
            }
            std::thread::sleep(POLL);
        }
        if !self.json {
            println!("forkd stopped");
        }
        Ok(exit::OK)
    }

    /// `events [-f]`: the ring, then (following) the events after the
    /// last seq seen, polled as `log -f` does.
    fn events(&self, follow: bool) -> Result<i32, ClientError> {
        let mut after: Option<u64> = None;
        self.poll(follow, |ctl| {
            let (reply, _) = ctl.ask(&Request::Events { after })?;
            let mut text = String::new();
            if let Some(dropped) = reply["dropped"].as_u64().filter(|&d| d > 0) {
                if self.json {
                    text.push_str(&format!("{}\n", serde_json::json!({ "dropped": dropped })));
                } else {
                    text.push_str(&format!("dropped {dropped} events\n"));
                }
            }
            for e in reply["events"].as_array().into_iter().flatten() {
                if self.json {
                    text.push_str(&format!("{e}\n"));
                } else {
                    text.push_str(&format!(
                        "{} {} {} {} {}\n",
                        e["seq"],
                        e["time"].as_str().unwrap_or("?"),
                        e["kind"].as_str().unwrap_or("?"),
                        e["subject"].as_str().unwrap_or("?"),
                        e["detail"].as_str().unwrap_or("")
                    ));
                }
            }
            after = Some(reply["last_seq"].as_u64().unwrap_or(0));
            Ok(text)
        })
    }

    fn log(&self, name: &str, lines: usize, follow: bool) -> Result<i32, ClientError> {
        let mut after: Option<std::collections::BTreeMap<String, u64>> = None;
        self.poll(follow, |ctl| {
            let request = Request::Log {
                name: name.to_string(),
                lines: Some(lines),
                after: after.clone(),
            };
            let (reply, raw) = ctl.ask(&request)?;
            let instances = reply["instances"].as_array().cloned().unwrap_or_default();
            // Bare output only for a bare name with one instance: NAME:N
            // and `all` say which instance each line is from, as forkd's log does.
            let prefix = instances.len() > 1 || name.contains(':') || name == "all";
            let cursor = after.get_or_insert_with(Default::default);
            let mut text = String::new();
            if self.json {
                text = format!("{raw}\n");
            }
            for inst in &instances {
                let index = inst["index"].as_u64().unwrap_or(0);
                cursor.insert(index.to_string(), inst["last_seq"].as_u64().unwrap_or(0));
                if self.json {
                    continue;
                }
                let tag = format!("{}#{index}", inst["name"].as_str().unwrap_or(name));
                if let Some(missed) = inst["missed"].as_u64().filter(|&m| m > 0) {
                    eprintln!("forkctl: {tag}: {missed} line(s) went by faster than this poll; the ring kept the newest");
                }
                for line in inst["lines"].as_array().into_iter().flatten() {
                    let line = line["text"].as_str().unwrap_or("");
                    if prefix {
                        text.push_str(&format!("{tag}: {line}\n"));
                    } else {
                        text.push_str(line);
                        text.push('\n');
                    }
                }
            }
            Ok(text)
        })
    }

    /// Runs `step` (one request, the text to print) once, or, following,
    /// again every [`FOLLOW_POLL`].
    /// forkd going away after the first answer ends a follow with 0, as
    /// does a closed stdout (`| head`).
    fn poll(
        &self,
        follow: bool,
        mut step: impl FnMut(&Self) -> Result<String, ClientError>,
    ) -> Result<i32, ClientError> {
        let mut out = std::io::stdout();
        let mut first = true;
        loop {
            let text = match step(self) {
                Ok(text) => text,
                Err(ClientError::Unreachable { .. }) if !first => {
                    eprintln!("forkctl: forkd is gone; stopped following");
                    return Ok(exit::OK);
                }
                Err(e) => return Err(e),
            };
            first = false;
            if out
                .write_all(text.as_bytes())
                .and_then(|_| out.flush())
                .is_err()
            {
                return Ok(exit::OK);
            }
            if !follow {
                return Ok(exit::OK);
            }
            std::thread::sleep(FOLLOW_POLL);
        }
    }
}

/// A `reload` reply for people: the plan, entry by entry, then the
/// summary line (`reloaded PATH: ...`, or `dry run of PATH: ...`).
pub fn print_reload(reply: &Value) {
    match serde_json::from_value::<crate::config::Plan>(reply["plan"].clone()) {
        Ok(plan) => print!("{plan}"),
        Err(e) => eprintln!("forkctl: the reply carries no plan this forkctl can read ({e})"),
    }
    println!("{}", reply["message"].as_str().unwrap_or("reloaded"));
}

/// `forkd --check --diff`: asks the forkd listening at `socket` for the
/// plan of a reload to the configuration `text` (read from `path` by the
/// caller, already valid here) and prints it, or the errors forkd found.
/// Returns the exit code: 0 planned, 1 rejected, 3 forkd unreachable.
pub fn diff_against_daemon(socket: &Path, path: &Path, text: String, json: bool) -> i32 {
    let request = Request::Reload {
        dry_run: true,
        config: Some(super::ConfigText {
            path: path.to_path_buf(),
            text,
        }),
    };
    let size = serde_json::to_vec(&request).map_or(0, |line| line.len());
    if size > super::MAX_REQUEST {
        eprintln!(
            "forkd: {} is too large to send to forkd: the request would be {size} bytes, a control request holds at most {}",
            path.display(),
            super::MAX_REQUEST
        );
        return exit::FAILURE;
    }
    let answer = Client::connect(socket).and_then(|mut c| c.request(&request));
    match answer {
        Ok((_, raw)) if json => {
            println!("{raw}");
            exit::OK
        }
        Ok((reply, _)) => {
            print_reload(&reply);
            exit::OK
        }
        Err(e) => {
            eprintln!("forkd: {e}");
            match e {
                ClientError::Unreachable { .. } => exit::UNREACHABLE,
                ClientError::Refused { .. } => exit::FAILURE,
            }
        }
    }
}

fn dedup(mut names: Vec<String>) -> Vec<String> {
    names.sort();
    names.dedup();
    names
}

/// The instance object for target `t` in a status reply.
fn find_instance(status: &Value, t: &Value) -> Option<Value> {
    let program = status["programs"]
        .as_array()?
        .iter()
        .find(|p| p["name"] == t["name"])?;
    program["instances"]
        .as_array()?
        .iter()
        .find(|i| i["index"] == t["index"])
        .cloned()
}

/// Whether target `t` (as it was when asked) reached `goal`: None while
/// still on its way, Some((success, what to print)) once settled.
fn judge(goal: Goal, t: &Value, now: Option<&Value>) -> Option<(bool, String)> {
    let Some(now) = now else {
        return Some((true, "removed (scaled down)".into()));
    };
    let state = now["state"].as_str().unwrap_or("?");
    let pid = &now["pid"];
    let was = t["state"].as_str().unwrap_or("?");
    let old_pid = &t["pid"];
    match (goal, state) {
        (Goal::Start, "running") if was == "running" => {
            Some((true, format!("already running (pid {pid})")))
        }
        (Goal::Start, "running") => Some((true, format!("started (pid {pid})"))),
        (Goal::Restart, "running") if pid != old_pid => {
            if old_pid.is_null() {
                Some((true, format!("started (pid {pid})")))
            } else {
                Some((true, format!("restarted (pid {old_pid} → {pid})")))
            }
        }
        (Goal::Start | Goal::Restart, "fatal" | "exited") => {
            let last = now["last_exit"]["text"].as_str().unwrap_or("exited");
            Some((
                false,
                format!(
                    "did not stay up: {state} ({last}); see forkctl log {}",
                    t["name"].as_str().unwrap_or("NAME")
                ),
            ))
        }
        (Goal::Stop, "stopped" | "exited" | "fatal") if was == state && old_pid.is_null() => {
            Some((true, format!("already {state}")))
        }
        (Goal::Stop, "stopped" | "exited" | "fatal") => Some((true, "stopped".into())),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn restart_waits_for_a_new_pid() {
        let t = json!({"name":"api","index":0,"state":"running","pid":10});
        assert!(judge(
            Goal::Restart,
            &t,
            Some(&json!({"state":"running","pid":10}))
        )
        .is_none());
        assert!(judge(
            Goal::Restart,
            &t,
            Some(&json!({"state":"stopping","pid":10}))
        )
        .is_none());
        let (ok, text) = judge(
            Goal::Restart,
            &t,
            Some(&json!({"state":"running","pid":11})),
        )
        .unwrap();
        assert!(ok && text.contains("10 → 11"), "{text}");
        let (ok, _) = judge(Goal::Start, &t, Some(&json!({"state":"fatal","pid":null}))).unwrap();
        assert!(!ok);
    }
}
