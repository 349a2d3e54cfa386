//! The `[[service]]` table: its keys, the defaults that depend on `mode`,
//! and the checks between handler, mode, listeners and the pools defined
//! elsewhere in the file.

use std::time::Duration;

use toml::de::{DeTable, DeValue};

use super::handler_support::{support, Carrier, Support};
use super::section::{describe, Section, Sink, Span};
use super::suggest;
use super::tables::{read_name, Named, DEFAULT_MAX_FRAME, MAX_FRAME_LIMIT};
use super::values;
use super::{HandlerKind, ListenAddr, Mode, PoolConfig, ServiceConfig};

pub(super) const SERVICE_KEYS: &[&str] = &[
    "name",
    "listen",
    "mode",
    "handler",
    "workers",
    "min_spare",
    "max_spare",
    "max_workers",
    "max_requests",
    "max_connections",
    "per_ip",
    "idle_timeout",
    "request_timeout",
    "drain_timeout",
    "backlog",
    "max_line",
    "max_frame",
    "socket_mode",
    "tcp_nodelay",
    "pool",
    "command",
    "root",
    "max_file_size",
    "overwrite",
    "commands",
    "timeout",
    "max_output",
    "pause",
    "upload_quiet",
    "max_members",
    "member_timeout",
    "follow_symlinks",
    "max_requests_per_connection",
    "keepalive_timeout",
];

/// Reads one `[[service]]`; `pools` are the `[[pool]]`s defined anywhere
/// in the file, for `handler = "pool"`.
pub(super) fn service(
    sink: &mut Sink,
    table: &DeTable<'_>,
    header: Span,
    pools: &[&PoolConfig],
) -> Named<ServiceConfig> {
    let mut s = Section::new(sink, table, header, "[[service]]");
    let (name, name_span) = read_name(&mut s, "service");
    s.check_keys(SERVICE_KEYS);
    let listen = listen(&mut s);
    let mode = s.keyword("mode", values::MODE, Mode::Fork);
    let handler = s.optional_keyword("handler", values::HANDLER);
    if !s.has("handler") {
        s.missing("handler", "handler = \"echo\"");
    }
    let workers = s.processes("workers", default_workers(mode), 1);
    let pool = s.string("pool").map(|(p, _)| p.to_string());
    // A pool handler's frames are the pool's jobs: by default as large as
    // the pool takes.
    let forwarded_to = pools
        .iter()
        .find(|p| handler == Some(HandlerKind::Pool) && pool.as_ref() == Some(&p.name));
    let default_max_frame = forwarded_to.map_or(DEFAULT_MAX_FRAME, |p| p.max_frame);
    let config = ServiceConfig {
        name,
        listen,
        mode,
        handler: handler.unwrap_or(HandlerKind::Echo),
        workers,
        min_spare: s.optional_processes("min_spare"),
        max_spare: s.optional_processes("max_spare"),
        max_workers: s
            .int("max_workers", 1, super::MAX_PROCESSES.into())
            .map(|n| n as u32),
        max_requests: s.u64("max_requests", 0),
        max_connections: s.u32("max_connections", default_max_connections(mode, workers), 1),
        // No limit, as xinetd's per_source and systemd's
        // MaxConnectionsPerSource=: behind a proxy, a load balancer or in a
        // load test every connection comes from one address.
        per_ip: s.u32("per_ip", 0, 0),
        idle_timeout: s.duration("idle_timeout", Duration::from_secs(300)),
        request_timeout: s.duration("request_timeout", Duration::from_secs(30)),
        drain_timeout: s.duration("drain_timeout", Duration::from_secs(10)),
        // Linux's own somaxconn default since 5.4; the kernel caps it there.
        backlog: s.u32("backlog", 4096, 1),
        max_line: s.size("max_line", 64 << 10, MAX_FRAME_LIMIT),
        max_frame: s.size("max_frame", default_max_frame, MAX_FRAME_LIMIT),
        socket_mode: s.mode("socket_mode").unwrap_or(0o660),
        tcp_nodelay: s.bool("tcp_nodelay", true),
        pool,
        command: s.command("command"),
        root: s.path("root"),
        max_file_size: s.size("max_file_size", DEFAULT_MAX_FILE_SIZE, MAX_FILE_SIZE_LIMIT),
        // The classic server replaces a file put twice.
        overwrite: s.bool("overwrite", true),
        commands: super::commands::commands(&mut s),
        timeout: s.duration("timeout", Duration::from_secs(10)),
        max_output: s.size("max_output", 1 << 20, MAX_FRAME_LIMIT),
        // The classic ftp server's time.sleep(0.1) around OK and `##`.
        pause: s.duration("pause", Duration::from_millis(100)),
        upload_quiet: s.duration("upload_quiet", Duration::from_millis(200)),
        max_members: s
            .int("max_members", 1, MAX_CHAT_MEMBERS.into())
            .map_or(1024, |n| n as u32),
        // Zero: members never expire, as in the classic room.
        member_timeout: s.duration("member_timeout", Duration::from_secs(600)),
        follow_symlinks: s.bool("follow_symlinks", false),
        // nginx's keepalive_requests.
        max_requests_per_connection: s
            .int("max_requests_per_connection", 1, u64::MAX.into())
            .map_or(1000, |n| n as u64),
        keepalive_timeout: s.duration("keepalive_timeout", default_keepalive_timeout(mode)),
    };
    if let Some(handler) = handler {
        check_handler(&mut s, &config, handler, pools);
    }
    check_worker_counts(&mut s, &config);
    Named { config, name_span }
}

/// `chat`: the most members one room may be set to hold (each datagram
/// looks through them).
const MAX_CHAT_MEMBERS: u32 = 65_536;
/// `http`: how long an idle connection is kept between requests. event:
/// nginx's 75s (an idle connection costs a descriptor); fork and prefork:
/// Apache's 5s, since an idle connection holds a whole process.
fn default_keepalive_timeout(mode: Mode) -> Duration {
    match mode {
        Mode::Event => Duration::from_secs(75),
        Mode::Fork | Mode::Prefork => Duration::from_secs(5),
    }
}

/// `files`: the largest upload stored by default, and the most one may set.
const DEFAULT_MAX_FILE_SIZE: u64 = 1 << 30;
const MAX_FILE_SIZE_LIMIT: u64 = 1 << 40;

/// fork and prefork: every connection has a process of its own, and at the
/// limit new clients wait in the listen backlog (they are not refused), so
/// the cap is a process count a host carries. event: what the workers' file
/// descriptors allow, since each raises its soft RLIMIT_NOFILE to the hard
/// limit at start ([`event_connections_per_worker`]).
const PROCESS_CONNECTIONS: u32 = 1024;

fn default_max_connections(mode: Mode, workers: u32) -> u32 {
    match mode {
        Mode::Fork | Mode::Prefork => PROCESS_CONNECTIONS,
        Mode::Event => event_connections_per_worker().saturating_mul(workers),
    }
}

/// Descriptors an event worker keeps for itself (listeners, epoll,
/// signalfd, the EMFILE reserve, logging).
const EVENT_FD_RESERVE: u64 = 64;
/// Connections per event worker when the hard limit is unlimited.
const EVENT_CONNECTIONS_UNLIMITED: u64 = 1 << 20;

/// Connections one event worker can hold: the hard RLIMIT_NOFILE, less a
/// reserve.
pub(super) fn event_connections_per_worker() -> u32 {
    use nix::sys::resource::{getrlimit, Resource, RLIM_INFINITY};
    let hard = getrlimit(Resource::RLIMIT_NOFILE).map_or(1024, |(_, hard)| hard);
    let fds = if hard == RLIM_INFINITY {
        EVENT_CONNECTIONS_UNLIMITED
    } else {
        hard.min(EVENT_CONNECTIONS_UNLIMITED)
    };
    u32::try_from(fds.saturating_sub(EVENT_FD_RESERVE).max(EVENT_FD_RESERVE)).unwrap_or(u32::MAX)
}

/// prefork: 4; event: one per CPU; fork: 1 (the acceptor).
fn default_workers(mode: Mode) -> u32 {
    match mode {
        Mode::Fork => 1,
        Mode::Prefork => 4,
        Mode::Event => std::thread::available_parallelism()
            .map_or(1, |n| u32::try_from(n.get()).unwrap_or(u32::MAX)),
    }
}

/// `listen`: a required, non-empty array of addresses.
fn listen(s: &mut Section<'_, '_>) -> Vec<ListenAddr> {
    let Some(value) = s.get("listen") else {
        s.missing("listen", "listen = [\"tcp://127.0.0.1:7000\"]");
        return Vec::new();
    };
    let example = "[\"tcp://127.0.0.1:7000\"]";
    let DeValue::Array(items) = value.get_ref() else {
        let message = format!(
            "listen must be an array of addresses, like {example}; found {}",
            describe(value.get_ref())
        );
        s.error(&value.span(), message);
        return Vec::new();
    };
    if items.is_empty() {
        let message = format!("listen must name at least one address, like {example}");
        s.error(&value.span(), message);
    }
    let mut out = Vec::with_capacity(items.len());
    for item in items.iter() {
        let DeValue::String(text) = item.get_ref() else {
            let message = format!(
                "listen addresses are strings, found {}",
                describe(item.get_ref())
            );
            s.error(&item.span(), message);
            continue;
        };
        match values::listen(text) {
            Ok(addr) => out.push(addr),
            Err(reason) => s.error(
                &item.span(),
                format!("bad listen address \"{text}\": {reason}"),
            ),
        }
    }
    out
}

/// What each handler needs from the rest of the service and the file, and
/// whether it runs in this mode on these sockets (the handlers' table).
fn check_handler(
    s: &mut Section<'_, '_>,
    c: &ServiceConfig,
    handler: HandlerKind,
    pools: &[&PoolConfig],
) {
    let at_handler = s.span_of("handler");
    let kind = handler.keyword();
    let support = support(handler);
    if let Err(refused) = support.check_mode(c.mode) {
        let at = s.span_of("mode");
        s.error(&at, refused.to_string());
    }
    check_carriers(s, support);
    check_handler_keys(s, handler);
    match handler {
        HandlerKind::Pool => check_pool(s, c, pools),
        HandlerKind::Exec => {
            if !s.has("command") {
                let message =
                    "handler = \"exec\" needs command = [...], the program run per connection";
                s.error(&at_handler, message);
            }
        }
        HandlerKind::Files | HandlerKind::Ftp | HandlerKind::Http => {
            if !s.has("root") {
                let message =
                    format!("handler = \"{kind}\" needs root = \"/DIR\", the directory it serves");
                s.error(&at_handler, message);
            }
        }
        HandlerKind::Command => {
            if !s.has("commands") {
                let message = "handler = \"command\" needs commands = { NAME = [\"/bin/prog\", ...] }, the commands a client may run";
                s.error(&at_handler, message);
            }
            if c.timeout.is_zero() {
                let at = s.span_of("timeout");
                let message = "timeout must be more than 0s: a command that never ends would hold its connection's process forever";
                s.error(&at, message);
            }
        }
        HandlerKind::Echo | HandlerKind::Chat => {}
    }
    if handler == HandlerKind::Ftp {
        check_ftp(s, c);
    }
}

/// The keys only some handlers read, and which. Any other handler would
/// ignore them, so one written there is a mistake (a copied block, the
/// wrong `handler`) and an error at the key.
const HANDLER_KEYS: &[(&str, &[HandlerKind])] = {
    use HandlerKind::*;
    &[
        ("pool", &[Pool]),
        ("command", &[Exec]),
        ("root", &[Files, Ftp, Http]),
        ("max_file_size", &[Files, Ftp]),
        ("overwrite", &[Files]),
        ("commands", &[Command]),
        ("timeout", &[Command]),
        ("max_output", &[Command]),
        ("pause", &[Ftp]),
        ("upload_quiet", &[Ftp]),
        ("max_members", &[Chat]),
        ("member_timeout", &[Chat]),
        ("follow_symlinks", &[Http]),
        ("max_requests_per_connection", &[Http]),
        ("keepalive_timeout", &[Http]),
    ]
};

fn check_handler_keys(s: &mut Section<'_, '_>, handler: HandlerKind) {
    for (key, readers) in HANDLER_KEYS {
        if !s.has(key) || readers.contains(&handler) {
            continue;
        }
        let names: Vec<String> = readers
            .iter()
            .map(|h| format!("\"{}\"", h.keyword()))
            .collect();
        let readers = match names.split_last() {
            Some((last, [])) => last.clone(),
            Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
            None => String::new(),
        };
        let message = format!(
            "{key} is read only by handler = {readers}; this service's handler = \"{}\" would ignore it",
            handler.keyword()
        );
        let at = s.span_of(key);
        s.error(&at, message);
    }
}

/// `handler = "ftp"`: each read is one request of up to 1024 bytes (the
/// classic client's `recv(1024)`), so reads must not be shorter.
fn check_ftp(s: &mut Section<'_, '_>, c: &ServiceConfig) {
    if c.max_line < FTP_REQUEST {
        let at = s.span_of("max_line");
        let message = format!(
            "handler = \"ftp\" reads each request of up to {FTP_REQUEST} bytes at once: max_line must be at least \"1KiB\""
        );
        s.error(&at, message);
    }
}

/// The longest `ftp` request (the handler's own `MAX_REQUEST`).
const FTP_REQUEST: u64 = 1024;

/// `handler = "pool"`: the pool exists, and takes every frame the service
/// lets through. A frame over the pool's own max_frame would make the pool
/// close the connection, which an event worker shares among its clients.
fn check_pool(s: &mut Section<'_, '_>, c: &ServiceConfig, pools: &[&PoolConfig]) {
    let Some(at) = s.get("pool").map(|v| v.span()) else {
        let at_handler = s.span_of("handler");
        let message = "handler = \"pool\" needs pool = \"NAME\" naming a [[pool]]";
        s.error(&at_handler, message);
        return;
    };
    let Some(name) = &c.pool else {
        return;
    };
    let Some(pool) = pools.iter().find(|p| &p.name == name) else {
        let names: Vec<&str> = pools.iter().map(|p| p.name.as_str()).collect();
        let hint = match suggest::closest(name, &names) {
            Some(close) => format!(" (did you mean \"{close}\"?)"),
            None if names.is_empty() => "; define it with [[pool]]".to_string(),
            None => format!("; defined pools: {}", suggest::quoted_list(&names)),
        };
        s.error(&at, format!("no [[pool]] named \"{name}\"{hint}"));
        return;
    };
    if c.max_frame > pool.max_frame {
        let at = s.span_of("max_frame");
        let message = format!(
            "max_frame ({} bytes) is over the max_frame of [[pool]] \"{name}\" ({} bytes), which refuses larger jobs by closing the connection; lower this one or raise the pool's",
            c.max_frame, pool.max_frame
        );
        s.error(&at, message);
    }
}

/// Every listener the handler cannot serve, at its address. A
/// `systemd:` socket's kind is known only at start-up, which checks again.
fn check_carriers(s: &mut Section<'_, '_>, support: &Support) {
    let Some(DeValue::Array(items)) = s.get("listen").map(|v| v.get_ref()) else {
        return;
    };
    for item in items.iter() {
        let DeValue::String(text) = item.get_ref() else {
            continue;
        };
        let carrier = match values::listen(text) {
            Ok(ListenAddr::Udp(_)) => Carrier::Datagram,
            Ok(ListenAddr::Tcp(_) | ListenAddr::Unix(_)) => Carrier::Stream,
            Ok(ListenAddr::Systemd(_)) | Err(_) => continue,
        };
        if let Err(refused) = support.check_carrier(carrier) {
            s.error(&item.span(), refused.to_string());
        }
    }
}

/// min_spare <= max_spare <= max_workers, and workers <= max_workers, when given.
fn check_worker_counts(s: &mut Section<'_, '_>, c: &ServiceConfig) {
    if let (Some(min), Some(max)) = (c.min_spare, c.max_spare) {
        if min > max {
            let at = s.span_of("max_spare");
            s.error(
                &at,
                format!("max_spare ({max}) is less than min_spare ({min})"),
            );
        }
    }
    let Some(max_workers) = c.max_workers else {
        return;
    };
    let checks = [
        ("max_spare", c.max_spare),
        ("min_spare", c.min_spare.filter(|_| c.max_spare.is_none())),
        ("workers", s.has("workers").then_some(c.workers)),
    ];
    for (key, value) in checks {
        if let Some(n) = value.filter(|n| *n > max_workers) {
            let at = s.span_of(key);
            s.error(
                &at,
                format!("{key} ({n}) is more than max_workers ({max_workers})"),
            );
        }
    }
}
