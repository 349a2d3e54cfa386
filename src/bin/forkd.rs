//! `forkd`: parse the command line, load the config, run the supervisor.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

use forkd::config::{Config, LogLevel};
use forkd::exit;
use forkd::systemd::Systemd;

/// A Unix process supervisor and forking front end: supervises programs
/// and serves network clients with forked, pre-forked or exec'd workers.
#[derive(Debug, Parser)]
#[command(name = "forkd", version, max_term_width = 100)]
struct Args {
    /// The configuration file.
    #[arg(
        short,
        long,
        value_name = "PATH",
        default_value = "/etc/forkd/forkd.toml"
    )]
    config: PathBuf,
    /// Validate the configuration, print every error (and warnings, such as a
    /// command that does not exist), and exit 0 or 1.
    #[arg(long)]
    check: bool,
    /// With --check, ask the running forkd what a reload to this
    /// configuration would do, and print its plan (nothing changes). The
    /// socket is $FORKD_SOCKET, else the file's [daemon] control_socket,
    /// else the default.
    #[arg(long, requires = "check")]
    diff: bool,
    /// With --check --diff, print forkd's reply as JSON.
    #[arg(long, requires = "diff")]
    json: bool,
    /// Detach with the double fork; return once the daemon is up.
    #[arg(long, requires = "pidfile")]
    daemon: bool,
    /// Write (and lock) this pidfile; with --daemon.
    #[arg(long, value_name = "PATH")]
    pidfile: Option<PathBuf>,
    /// Override [daemon] log_level: error, warn, info or debug.
    #[arg(long, value_name = "LEVEL", value_parser = parse_level)]
    log_level: Option<LogLevel>,
}

/// `--check --diff`: the running forkd's plan for a reload to `config`.
fn diff(path: &std::path::Path, config: &Config, json: bool) -> i32 {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) => {
            eprintln!("forkd: cannot read {}: {e}", path.display());
            return exit::FAILURE;
        }
    };
    let socket = std::env::var_os("FORKD_SOCKET")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| config.daemon.control_socket.clone())
        .unwrap_or_else(forkd::control::default_socket_path);
    forkd::control::commands::diff_against_daemon(&socket, path, text, json)
}

fn parse_level(s: &str) -> Result<LogLevel, String> {
    match s {
        "error" => Ok(LogLevel::Error),
        "warn" => Ok(LogLevel::Warn),
        "info" => Ok(LogLevel::Info),
        "debug" => Ok(LogLevel::Debug),
        _ => Err("use error, warn, info or debug".into()),
    }
}

fn main() -> ExitCode {
    if let Err(e) = forkd::process::ensure_standard_fds() {
        eprintln!("forkd: cannot open /dev/null: {e}");
        return ExitCode::from(exit::FAILURE as u8);
    }
    let args = Args::parse();
    let code = run(args);
    ExitCode::from(code as u8)
}

fn run(args: Args) -> i32 {
    // systemd's variables first: before forkd opens any fd of its own
    // (inherited sockets are fds 3 and up) and while single-threaded.
    let (mut systemd, systemd_warnings) = Systemd::from_env();
    // Reload re-reads the file after `--daemon` has changed directory to /.
    let path = std::path::absolute(&args.config).unwrap_or(args.config.clone());
    let config = match Config::load(&path) {
        Ok(config) => config,
        Err(errors) => {
            eprintln!("{errors}");
            eprintln!("forkd: {} error(s) in {}", errors.0.len(), path.display());
            if !args.check {
                let first = errors.0.first().map(|e| e.to_string()).unwrap_or_default();
                systemd.failed(libc::EINVAL, &format!("invalid configuration: {first}"));
            }
            return exit::FAILURE;
        }
    };
    if args.check {
        // Valid, so exit 0 whatever the warnings say.
        let warnings = forkd::preflight::warnings(&config);
        for warning in &warnings {
            eprintln!("{}: warning: {warning}", path.display());
        }
        let verdict = match warnings.len() {
            0 => format!("{}: OK", path.display()),
            n => format!(
                "{}: OK, {}",
                path.display(),
                forkd::logging::count(n, "warning", "warnings")
            ),
        };
        // stdout is the JSON reply alone with --json.
        if args.json {
            eprintln!("{verdict}");
        } else {
            println!("{verdict}");
        }
        if args.diff {
            return diff(&path, &config, args.json);
        }
        return exit::OK;
    }
    forkd::logging::init(args.log_level.unwrap_or(config.daemon.log_level));
    for warning in systemd_warnings {
        log::warn!("{warning}");
    }
    let mut daemon = None;
    if args.daemon {
        let pidfile = args.pidfile.as_deref().expect("clap requires --pidfile");
        match forkd::process::daemonize::daemonize(pidfile, config.daemon.log_file.as_deref()) {
            Ok(d) => {
                systemd.daemonized();
                daemon = Some(d);
            }
            Err(e) => {
                eprintln!("forkd: {e}");
                systemd.failed(libc::EIO, &e);
                return exit::FAILURE;
            }
        }
    }
    let (mut readiness, _pidfile) = match daemon {
        Some((r, p)) => (Some(r), Some(p)),
        None => (None, None),
    };
    // Only with pools: memory kept after large frames would be page tables
    // that every fork-mode connection's fork copies.
    if !config.pools.is_empty() {
        forkd::ipc::tune_allocator_for_frames();
    }
    let mut supervisor = match forkd::supervisor::Supervisor::new(config) {
        Ok(s) => s,
        Err(e) => {
            let why = format!("cannot start the supervisor: {e}");
            log::error!("{why}");
            systemd.failed(e.raw_os_error().unwrap_or(libc::EIO), &why);
            if let Some(r) = readiness.as_mut() {
                r.failed(&why);
            }
            return exit::FAILURE;
        }
    };
    if args.log_level.is_some() {
        supervisor.pin_log_level();
    }
    supervisor.set_systemd(systemd);
    match supervisor.run(readiness) {
        Ok(code) => code,
        Err(e) => {
            log::error!("event loop failed: {e}");
            exit::FAILURE
        }
    }
}
