//! Valid files: the DESIGN.md example parses, and defaults are filled in.

use std::net::SocketAddr;
use std::time::Duration;

use super::parse;
use crate::config::*;

/// The example of DESIGN.md, "Config (forkd.toml) — the user's view".
const DESIGN_EXAMPLE: &str = r#"
[daemon]
control_socket = "/run/forkd/control.sock"
control_group  = "forkd"
stop_timeout   = "10s"

[[program]]
name    = "api"
command = ["/usr/bin/python3", "-m", "http.server", "8081"]
restart = "on-failure"
backoff_initial = "100ms"
backoff_max = "30s"
stable_after = "10s"
start_retries = 5
instances = 2
user = "www-data"
stop_signal = "TERM"
stop_timeout = "5s"
stdout = "log"

[[pool]]
name      = "upper"
workers   = 4
transport = "shm"
worker    = "builtin:upper"
queue     = 1024
retries   = 1

[[service]]
name    = "echo"
listen  = ["tcp://127.0.0.1:7000", "unix:/run/forkd/echo.sock"]
mode    = "fork"
handler = "echo"
max_connections = 256
per_ip = 32
idle_timeout = "60s"

[[service]]
name    = "upper-over-tcp"
listen  = ["tcp://127.0.0.1:7001"]
mode    = "prefork"
workers = 4
handler = "pool"
pool    = "upper"

[[service]]
name    = "cat"
listen  = ["tcp://127.0.0.1:7002"]
handler = "exec"
command = ["/bin/cat"]
"#;

#[test]
fn the_design_example_parses() {
    let c = parse(DESIGN_EXAMPLE);
    assert_eq!(
        c.daemon.control_socket,
        Some("/run/forkd/control.sock".into())
    );
    assert_eq!(c.daemon.control_group.as_deref(), Some("forkd"));
    let api = &c.programs[0];
    assert_eq!(api.name, "api");
    assert_eq!(api.command[0], "/usr/bin/python3");
    assert_eq!(api.instances, 2);
    assert_eq!(api.user.as_deref(), Some("www-data"));
    assert_eq!(api.stop_signal, libc::SIGTERM);
    assert_eq!(api.stop_timeout, Duration::from_secs(5));
    assert_eq!(c.pools[0].transport, Transport::Shm);
    assert_eq!(c.pools[0].worker, WorkerKind::Builtin("upper".into()));
    let echo = &c.services[0];
    let addr: SocketAddr = "127.0.0.1:7000".parse().unwrap();
    assert_eq!(
        echo.listen,
        [
            ListenAddr::Tcp(addr),
            ListenAddr::Unix("/run/forkd/echo.sock".into())
        ]
    );
    assert_eq!(c.services[1].handler, HandlerKind::Pool);
    assert_eq!(c.services[1].pool.as_deref(), Some("upper"));
    assert_eq!(c.services[2].command, Some(vec!["/bin/cat".to_string()]));
}

#[test]
fn a_pool_service_takes_frames_as_large_as_its_pool_by_default() {
    let text = "[[pool]]\nname = \"small\"\nworker = \"builtin:upper\"\nmax_frame = \"4KiB\"\n\n[[service]]\nname = \"s\"\nlisten = [\"tcp://127.0.0.1:7000\"]\nhandler = \"pool\"\npool = \"small\"\n\n[[service]]\nname = \"e\"\nlisten = [\"tcp://127.0.0.1:7001\"]\nhandler = \"echo\"\n";
    let c = parse(text);
    assert_eq!(c.services[0].max_frame, 4 << 10);
    assert_eq!(c.services[1].max_frame, 16 << 20, "others keep 16 MiB");
}

#[test]
fn an_empty_file_is_a_valid_config_with_daemon_defaults() {
    let c = parse("");
    assert_eq!(c.daemon, DaemonConfig::default());
    assert_eq!(c.daemon.stop_timeout, Duration::from_secs(10));
    assert_eq!(c.daemon.log_level, LogLevel::Info);
    assert_eq!(c.daemon.log_lines, 200);
    assert!(c.programs.is_empty() && c.pools.is_empty() && c.services.is_empty());
}

#[test]
fn program_defaults() {
    let c = parse(
        "[daemon]\nstop_timeout = \"7s\"\n[[program]]\nname = \"a\"\ncommand = [\"/bin/a\"]\n",
    );
    let p = &c.programs[0];
    assert_eq!(p.restart, RestartPolicy::OnFailure);
    assert_eq!(p.backoff_initial, Duration::from_millis(100));
    assert_eq!(p.backoff_max, Duration::from_secs(30));
    assert_eq!(p.stable_after, Duration::from_secs(10));
    assert_eq!(p.start_retries, 5);
    assert_eq!(p.instances, 1);
    assert!(p.autostart);
    assert_eq!(p.stop_signal, libc::SIGTERM);
    assert_eq!(
        p.stop_timeout,
        Duration::from_secs(7),
        "inherits [daemon].stop_timeout"
    );
    assert_eq!((&p.stdout, &p.stderr), (&Output::Log, &Output::Log));
    assert_eq!(p.umask, None);
    assert_eq!(p.rlimits, Rlimits::default());
}

#[test]
fn program_with_every_key() {
    let c = parse(
        r#"
[[program]]
name = "full"
command = ["worker", "--x"]
restart = "always"
autostart = false
group = "staff"
cwd = "/srv"
umask = "027"
rlimits = { nofile = 1024, nproc = 64, core = 0, as = "1GiB" }
stop_signal = "sigquit"
stdout = "/var/log/full.log"
stderr = "null"

[program.env]
LANG = "C.UTF-8"
"#,
    );
    let p = &c.programs[0];
    assert_eq!(p.restart, RestartPolicy::Always);
    assert!(!p.autostart);
    assert_eq!(p.umask, Some(0o027));
    assert_eq!(
        p.rlimits,
        Rlimits {
            nofile: Some(1024),
            nproc: Some(64),
            core: Some(0),
            address_space: Some(1 << 30)
        }
    );
    assert_eq!(p.stop_signal, libc::SIGQUIT);
    assert_eq!(p.stdout, Output::File("/var/log/full.log".into()));
    assert_eq!(p.stderr, Output::Null);
    assert_eq!(p.env.get("LANG").map(String::as_str), Some("C.UTF-8"));
}

#[test]
fn unlimited_rlimit_is_u64_max() {
    let c =
        parse("[[program]]\nname = \"a\"\ncommand = [\"a\"]\nrlimits = { core = \"unlimited\" }\n");
    assert_eq!(c.programs[0].rlimits.core, Some(u64::MAX));
}

#[test]
fn pool_defaults_and_command_workers() {
    let c = parse("[[pool]]\nname = \"p\"\ncommand = [\"/bin/w\"]\n");
    let p = &c.pools[0];
    assert_eq!(p.workers, 4);
    assert_eq!(p.transport, Transport::Pipe);
    assert_eq!(p.worker, WorkerKind::Command(vec!["/bin/w".into()]));
    assert_eq!((p.queue, p.retries, p.max_frame), (1024, 1, 16 << 20));
}

#[test]
fn service_defaults_depend_on_mode() {
    let c = parse(
        r#"
[[service]]
name = "f"
listen = ["tcp://127.0.0.1:0"]
handler = "echo"

[[service]]
name = "p"
listen = ["tcp://[::1]:7000"]
mode = "prefork"
handler = "http"
root = "/srv/www"

[[service]]
name = "e"
listen = ["systemd:e", "udp://127.0.0.1:7001"]
mode = "event"
handler = "chat"
socket_mode = 0o600
"#,
    );
    let [f, p, e] = &c.services[..] else { panic!() };
    assert_eq!((f.mode, f.workers), (Mode::Fork, 1));
    assert_eq!((p.mode, p.workers), (Mode::Prefork, 4));
    let cpus = std::thread::available_parallelism().unwrap().get() as u32;
    assert_eq!((e.mode, e.workers), (Mode::Event, cpus));
    assert_eq!((f.max_requests, f.max_connections, f.per_ip), (0, 1024, 0));
    assert_eq!(p.max_connections, 1024);
    let per_worker = crate::config::service::event_connections_per_worker();
    assert!(per_worker >= 64, "{per_worker}");
    assert_eq!(e.max_connections, per_worker * cpus);
    assert_eq!(f.idle_timeout, Duration::from_secs(300));
    assert_eq!(f.request_timeout, Duration::from_secs(30));
    assert_eq!(f.drain_timeout, Duration::from_secs(10));
    assert_eq!(
        (f.backlog, f.max_line, f.max_frame),
        (4096, 64 << 10, 16 << 20)
    );
    assert_eq!((f.socket_mode, f.tcp_nodelay), (0o660, true));
    assert_eq!(e.socket_mode, 0o600);
    assert_eq!(p.root, Some("/srv/www".into()));
}

#[test]
fn the_default_path() {
    assert_eq!(
        default_path(),
        std::path::PathBuf::from("/etc/forkd/forkd.toml")
    );
}

#[test]
fn every_handler_kind_is_listed_once_in_keyword_order() {
    let keywords: Vec<&str> = HandlerKind::ALL.iter().map(|k| k.keyword()).collect();
    let table: Vec<&str> = crate::config::values::HANDLER
        .iter()
        .map(|(k, _)| *k)
        .collect();
    assert_eq!(keywords, table);
}

#[test]
fn a_relative_root_is_taken_from_the_config_files_directory() {
    let text = "[[service]]\nname = \"w\"\nlisten = [\"tcp://127.0.0.1:0\"]\nhandler = \"files\"\nroot = \"../www\"\n";
    let c = Config::parse(text, std::path::Path::new("/etc/forkd/forkd.toml")).unwrap();
    assert_eq!(c.services[0].root, Some("/etc/forkd/../www".into()));
    let c = Config::parse(text, std::path::Path::new("conf/forkd.toml")).unwrap();
    let cwd = std::env::current_dir().unwrap();
    assert_eq!(c.services[0].root, Some(cwd.join("conf/../www")));
    let absolute = text.replace("../www", "/srv/www");
    let c = Config::parse(&absolute, std::path::Path::new("conf/forkd.toml")).unwrap();
    assert_eq!(c.services[0].root, Some("/srv/www".into()));
}

#[test]
fn a_read_only_group_stands_beside_the_control_group() {
    let c = parse("[daemon]\ncontrol_group = \"ops\"\ncontrol_read_group = \"monitoring\"\n");
    assert_eq!(c.daemon.control_group.as_deref(), Some("ops"));
    assert_eq!(c.daemon.control_read_group.as_deref(), Some("monitoring"));
    assert_eq!(DaemonConfig::default().control_read_group, None);
}
