//! `forkctl`'s command line, as one clap definition: the binary parses it,
//! and the man-page test walks it to check that `forkctl(1)` documents
//! every subcommand and option. This module only describes arguments; the
//! commands run in [`super::commands`].

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

/// Control a running forkd over its Unix control socket.
///
/// Exit status: 0 success; 1 the daemon refused (unknown name, bad state) or
/// a wait timed out; 2 usage; 3 the daemon cannot be reached.
#[derive(Debug, Parser)]
#[command(name = "forkctl", version, max_term_width = 100)]
pub struct Cli {
    /// The control socket [default: $RUNTIME_DIRECTORY/control.sock, else
    /// $XDG_RUNTIME_DIR/forkd/control.sock, else /run/forkd/control.sock].
    #[arg(short, long, value_name = "PATH", env = "FORKD_SOCKET", global = true)]
    pub socket: Option<PathBuf>,
    /// Print the daemon's replies as JSON, one object per line.
    #[arg(long, global = true)]
    pub json: bool,
    /// How long start, stop, restart and shutdown wait for the state they
    /// asked for (250ms, 10s, 2m; a bare number is seconds).
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration, global = true)]
    pub timeout: Duration,
    /// Send the request and return without waiting for the state it asks for.
    #[arg(long, global = true)]
    pub no_wait: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show programs, pools and services: state, pid, uptime, restarts, last exit.
    Status {
        /// Only these programs, pools or services.
        #[arg(value_name = "NAME")]
        names: Vec<String>,
    },
    /// Start a program (NAME, NAME:INSTANCE or all) and wait until it runs.
    Start {
        #[arg(value_name = "NAME")]
        name: String,
    },
    /// Stop a program gracefully (stop_signal, then SIGKILL at stop_timeout) and wait.
    Stop {
        #[arg(value_name = "NAME")]
        name: String,
    },
    /// Stop, then start again; wait until each instance runs with a new pid.
    Restart {
        #[arg(value_name = "NAME")]
        name: String,
    },
    /// Send a signal (HUP, USR1, SIGTERM, 10, ...) to each running instance's main process.
    Signal {
        #[arg(value_name = "NAME")]
        name: String,
        #[arg(value_name = "SIGNAL")]
        signal: String,
    },
    /// Set the number of instances of a program, or of workers of a pool.
    Scale {
        #[arg(value_name = "NAME")]
        name: String,
        #[arg(value_name = "N")]
        count: u32,
    },
    /// Re-read the configuration file and apply it (as SIGHUP does); print
    /// the plan it carried out: per program, pool and service, what
    /// changed and what was done.
    Reload {
        /// Print the plan only: change nothing (same pids, same sockets).
        #[arg(long)]
        dry_run: bool,
    },
    /// Stop every program and forkd itself (as SIGTERM does); wait until forkd is gone.
    Shutdown,
    /// Print the recent output lines forkd keeps for a program.
    Log {
        #[arg(value_name = "NAME")]
        name: String,
        /// How many lines, per instance.
        #[arg(short = 'n', long = "lines", value_name = "N", default_value_t = 20)]
        lines: usize,
        /// Keep printing new lines as they arrive (until interrupted).
        #[arg(short, long)]
        follow: bool,
    },
    /// Print what happened, in order: instances started, exited, backing
    /// off or FATAL, reloads applied or rejected; one event per line.
    Events {
        /// Keep printing new events as they happen (until interrupted).
        #[arg(short, long)]
        follow: bool,
    },
    /// Print the versions of forkctl and of the running forkd.
    Version,
    /// Exit 0 when every autostart program runs and is ready, every pool has a
    /// worker and every service listens with its workers; else 1, saying why
    /// (for scripts and container probes).
    Health,
    /// Print forkd's figures (programs, services, pools, forkd itself) in the
    /// Prometheus text exposition format, for a scraper or a textfile collector.
    Metrics,
    /// Run one job on a pool: the payload is read from stdin, the result
    /// written to stdout; a failed job's reason goes to stderr (exit 1).
    Call {
        #[arg(value_name = "POOL")]
        pool: String,
    },
    /// Broadcast TEXT to every member of a chat service, as "管理员消息 : TEXT".
    Chat {
        #[arg(value_name = "SERVICE")]
        service: String,
        #[arg(value_name = "TEXT")]
        text: String,
    },
    /// Print a completion script for SHELL to stdout (forkd is not asked):
    /// forkctl completions bash > /etc/bash_completion.d/forkctl
    Completions {
        #[arg(value_name = "SHELL")]
        shell: CompletionShell,
    },
}

/// The shells `completions` writes a script for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CompletionShell {
    Bash,
    Zsh,
    Fish,
}

/// `250ms`, `10s`, `2m`, `1h`, or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let at = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(at);
    let value: f64 = number
        .parse()
        .map_err(|_| "use a duration like 500ms, 10s or 2m".to_string())?;
    let seconds = match unit {
        "" | "s" => value,
        "ms" => value / 1000.0,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err("use a duration like 500ms, 10s or 2m".into()),
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("soon").is_err());
    }
}
