//! Reload applies what changed in the file, by program name: added
//! programs start, removed ones stop, changed ones are replaced (new
//! instances first), unchanged ones keep their pids.

mod common;

use std::time::Duration;

use common::{alive, children_running, wait_until, Forkd, Scratch};
use nix::sys::signal::Signal;

const T: Duration = Duration::from_secs(10);

const BEFORE: &str = r#"
[[program]]
name = "keep"
command = ["/bin/sleep", "1001"]

[[program]]
name = "gone"
command = ["/bin/sleep", "1002"]

[[program]]
name = "change"
command = ["/bin/sleep", "1003"]
instances = 2
"#;

const AFTER: &str = r#"
[[program]]
name = "fresh"
command = ["/bin/sleep", "1005"]

[[program]]
name = "keep"
command = ["/bin/sleep", "1001"]

[[program]]
name = "change"
command = ["/bin/sleep", "1004"]
instances = 2
"#;

#[test]
fn reload_starts_added_stops_removed_replaces_changed_and_keeps_unchanged_pids() {
    let dir = Scratch::new("reload-apply");
    let config = dir.write("forkd.toml", BEFORE);
    let forkd = Forkd::start_with(&config, &["--log-level", "debug"], &[]);
    let pid = forkd.pid();
    wait_until("4 programs up", T, || {
        children_running(pid, "/bin/sleep 1001").len() == 1
            && children_running(pid, "/bin/sleep 1002").len() == 1
            && children_running(pid, "/bin/sleep 1003").len() == 2
    });
    let keep = children_running(pid, "/bin/sleep 1001");
    let gone = children_running(pid, "/bin/sleep 1002");
    let old_change = children_running(pid, "/bin/sleep 1003");

    dir.write("forkd.toml", AFTER);
    forkd.signal(Signal::SIGHUP);
    let summary = forkd.log.wait_line("reloaded ", T);
    assert!(
        summary.contains("programs: 1 added, 1 removed, 1 changed, 1 unchanged"),
        "{summary}"
    );
    wait_until("the new set of programs", T, || {
        children_running(pid, "/bin/sleep 1005").len() == 1
            && children_running(pid, "/bin/sleep 1004").len() == 2
            && children_running(pid, "/bin/sleep 1003").is_empty()
            && children_running(pid, "/bin/sleep 1002").is_empty()
    });
    assert_eq!(
        children_running(pid, "/bin/sleep 1001"),
        keep,
        "unchanged pid"
    );
    for old in gone.iter().chain(&old_change) {
        wait_until("old instance reaped", T, || !alive(*old));
    }
    forkd
        .log
        .wait_line("change (replaced): every old instance is down", T);

    let log = forkd.log.snapshot();
    let has = |needle: &str| log.iter().any(|l| l.contains(needle));
    assert!(has(
        "reload: change changed (command), replacing 2 instances"
    ));
    assert!(has("reload: gone removed, stopping 1 instance"));
    assert!(has("reload: fresh added, starting 1 instance"));
    assert!(!has("keep#0 (pid"), "keep was touched: {log:#?}");
    // nginx's order: both new instances exist before an old one is told to stop.
    let position = |needle: &str| {
        log.iter()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no line with {needle:?}: {log:#?}"))
    };
    // The replacement's start: the last "change#1 started" line.
    let last_spawn = log
        .iter()
        .rposition(|l| l.contains("change#1 started (pid"))
        .unwrap_or_else(|| panic!("no new change#1: {log:#?}"));
    let first_stop = position("(replaced, pid");
    assert!(
        last_spawn < first_stop,
        "old instances were stopped before the new ones started: {log:#?}"
    );
    assert!(has("(replaced, pid") && has("killed by SIGTERM"));
}

#[test]
fn a_changed_log_level_applies_on_reload_unless_given_on_the_command_line() {
    for pinned in [false, true] {
        let dir = Scratch::new("reload-level");
        let config = dir.write(
            "forkd.toml",
            "[[program]]\nname = \"a\"\ncommand = [\"/bin/sleep\", \"1001\"]\n",
        );
        let args: &[&str] = if pinned {
            &["--log-level", "info"]
        } else {
            &[]
        };
        let forkd = Forkd::start_with(&config, args, &[]);
        forkd.log.wait_line("started", T);
        dir.write(
            "forkd.toml",
            // b leaves an orphan behind for forkd (the subreaper) to reap.
            "[daemon]\nlog_level = \"debug\"\n\n[[program]]\nname = \"a\"\ncommand = [\"/bin/sleep\", \"1001\"]\n\n[[program]]\nname = \"b\"\ncommand = [\"/bin/sh\", \"-c\", \"(/bin/true &); exec /bin/sleep 1002\"]\n",
        );
        forkd.signal(Signal::SIGHUP);
        forkd.log.wait_line("reloaded ", T);
        wait_until("b running", T, || {
            children_running(forkd.pid(), "/bin/sleep 1002").len() == 1
        });
        // "reaped orphan pid" is a debug record: it shows only at the new level.
        if pinned {
            forkd.log.wait_line("ignored: --log-level was given", T);
            assert_eq!(forkd.log.count("reaped orphan pid"), 0);
        } else {
            forkd.log.wait_line("reload: log_level Info -> Debug", T);
            forkd.log.wait_line("reaped orphan pid", T);
        }
    }
}

#[test]
fn a_program_replaced_twice_quickly_still_has_every_old_instance_reaped() {
    let dir = Scratch::new("reload-twice");
    let stubborn = |n: u32| {
        format!(
            "[[program]]\nname = \"s\"\ncommand = [\"/bin/sh\", \"-c\", \"trap '' TERM; exec sleep {n}\"]\nstop_timeout = \"300ms\"\n"
        )
    };
    let config = dir.write("forkd.toml", &stubborn(1001));
    let forkd = Forkd::start(&config);
    let pid = forkd.pid();
    wait_until("first", T, || {
        children_running(pid, "sleep 1001").len() == 1
    });
    let first = children_running(pid, "sleep 1001")[0];
    dir.write("forkd.toml", &stubborn(1002));
    forkd.signal(Signal::SIGHUP);
    wait_until("second", T, || {
        children_running(pid, "sleep 1002").len() == 1
    });
    let second = children_running(pid, "sleep 1002")[0];
    dir.write("forkd.toml", &stubborn(1003));
    forkd.signal(Signal::SIGHUP);
    wait_until("third", T, || {
        children_running(pid, "sleep 1003").len() == 1
    });
    // Both old generations ignore SIGTERM: SIGKILL at their stop_timeout.
    wait_until("old generations killed", T, || {
        !alive(first) && !alive(second)
    });
    assert!(forkd.log.count("(replaced, pid") >= 4);
    wait_until("both old generations reaped", T, || {
        common::proc_stat(first).is_none()
            && common::proc_stat(second).is_none()
            && common::zombies_below(pid).is_empty()
    });
}

/// A config with a control socket and one echo service per `(name, mode)`,
/// each on its own free port.
fn services_config(socket: &std::path::Path, services: &[(&str, &str, u16)]) -> String {
    let mut text = format!("[daemon]\ncontrol_socket = \"{}\"\n", socket.display());
    for (name, mode, port) in services {
        text.push_str(&format!(
            "\n[[service]]\nname = \"{name}\"\nlisten = [\"tcp://127.0.0.1:{port}\"]\nmode = \"{mode}\"\nhandler = \"echo\"\nworkers = 2\n"
        ));
    }
    text
}

fn answers(addr: &str) -> bool {
    let Ok(mut stream) = std::net::TcpStream::connect(addr) else {
        return false;
    };
    stream.set_read_timeout(Some(T)).unwrap();
    common::echo_exchange(&mut stream, b"are you there\n");
    true
}

fn refused(addr: &str) -> bool {
    matches!(
        std::net::TcpStream::connect(addr),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused
    )
}

#[test]
fn a_service_added_by_reload_answers_and_a_removed_one_stops_listening_and_is_reaped() {
    let dir = Scratch::new("reload-services");
    let socket = dir.file("control.sock");
    let (stay, gone, fresh) = (
        common::free_port(),
        common::free_port(),
        common::free_port(),
    );
    let config = dir.write(
        "forkd.toml",
        &services_config(
            &socket,
            &[("stay", "prefork", stay), ("gone", "prefork", gone)],
        ),
    );
    let forkd = Forkd::start(&config);
    let pid = forkd.pid();
    let (stay, gone, fresh) = (
        format!("127.0.0.1:{stay}"),
        format!("127.0.0.1:{gone}"),
        format!("127.0.0.1:{fresh}"),
    );
    wait_until("both services answer", T, || {
        answers(&stay) && answers(&gone)
    });
    let worker_pids = |name: &str| -> Vec<i64> {
        let status = common::status_json(&socket);
        status["services"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["name"] == name)
            .flat_map(|s| s["workers"].as_array().unwrap().clone())
            .filter_map(|w| w["pid"].as_i64())
            .collect()
    };
    wait_until("2 workers each", T, || {
        worker_pids("stay").len() == 2 && worker_pids("gone").len() == 2
    });
    let stay_workers = worker_pids("stay");
    let gone_workers = worker_pids("gone");

    dir.write(
        "forkd.toml",
        &services_config(
            &socket,
            &[
                ("stay", "prefork", port(&stay)),
                ("fresh", "fork", port(&fresh)),
            ],
        ),
    );
    forkd.signal(Signal::SIGHUP);
    forkd.log.wait_line("reloaded ", T);
    forkd.log.wait_line("reload: fresh added", T);
    forkd
        .log
        .wait_line("reload: gone removed, closing its listeners", T);
    assert!(answers(&fresh), "the added service answers");
    assert!(refused(&gone), "the removed service still listens");
    assert!(answers(&stay));
    for worker in &gone_workers {
        wait_until("removed service's worker reaped", T, || {
            common::proc_stat(*worker as i32).is_none()
        });
    }
    forkd
        .log
        .wait_line("reload: gone (removed): every old process is down", T);
    assert_eq!(
        worker_pids("stay"),
        stay_workers,
        "unchanged service touched"
    );
    let status = common::status_json(&socket);
    let names: Vec<&str> = status["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["stay", "fresh"]);
    wait_until("no zombies", T, || common::zombies_below(pid).is_empty());
}

#[test]
fn a_reload_whose_new_service_cannot_listen_is_rejected_and_the_old_services_keep_answering() {
    let dir = Scratch::new("reload-bad-service");
    let socket = dir.file("control.sock");
    let (web, taken) = (common::free_port(), common::free_port());
    let config = dir.write(
        "forkd.toml",
        &services_config(&socket, &[("web", "fork", web)]),
    );
    let mut forkd = Forkd::start(&config);
    let web = format!("127.0.0.1:{web}");
    wait_until("web answers", T, || answers(&web));
    // The test holds the port the new config asks for.
    let holder = std::net::TcpListener::bind(("127.0.0.1", taken)).expect("hold a port");

    dir.write(
        "forkd.toml",
        &services_config(
            &socket,
            &[("web", "prefork", port(&web)), ("blocked", "fork", taken)],
        ),
    );
    let out = common::forkctl(&socket, &["reload"]);
    assert_ne!(out.code, 0, "{out:?}");
    let said = format!("{}{}", out.stdout, out.stderr);
    assert!(
        said.contains(&format!(
            "service \"blocked\": cannot listen on tcp://127.0.0.1:{taken}"
        )),
        "{out:?}"
    );
    forkd
        .log
        .wait_line("still running the previous configuration", T);
    assert!(answers(&web), "the old service stopped answering");
    let status = common::status_json(&socket);
    let services = status["services"].as_array().unwrap();
    assert_eq!(services.len(), 1, "{status}");
    assert_eq!(services[0]["mode"], "fork", "web was replaced: {status}");
    assert_eq!(forkd.log.count("reload: web changed"), 0);
    drop(holder);
    // Each error is logged once, however the reload was asked for: count
    // once forkd has written its last line.
    forkd.signal(Signal::SIGTERM);
    assert_eq!(forkd.wait_exit(T), Some(0));
    forkd.log.wait_line("forkd stopped", T);
    let error =
        format!("reload rejected: service \"blocked\": cannot listen on tcp://127.0.0.1:{taken}");
    assert_eq!(forkd.log.count(&error), 1, "{:#?}", forkd.log.snapshot());
}

#[test]
fn a_reload_that_replaces_a_services_workers_says_so_in_its_summary() {
    let dir = Scratch::new("reload-summary");
    let socket = dir.file("control.sock");
    let web = common::free_port();
    let config = dir.write(
        "forkd.toml",
        &services_config(&socket, &[("web", "prefork", web)]),
    );
    let forkd = Forkd::start(&config);
    let web = format!("127.0.0.1:{web}");
    wait_until("web answers", T, || answers(&web));

    let out = common::forkctl(&socket, &["reload"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains(": nothing changed"), "{out:?}");

    dir.write(
        "forkd.toml",
        &services_config(&socket, &[("web", "prefork", port(&web))])
            .replace("workers = 2", "workers = 3"),
    );
    let out = common::forkctl(&socket, &["reload"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout
            .contains("services: 0 added, 0 removed, 1 changed, 0 unchanged"),
        "forkctl reload: {out:?}"
    );
    assert!(
        !out.stdout.contains("programs:"),
        "no programs to count: {out:?}"
    );
    forkd.log.wait_count("reloaded ", 2, T);
    let lines = forkd.log.snapshot();
    let line = lines.iter().rfind(|l| l.contains("reloaded ")).unwrap();
    assert!(
        line.contains("services: 0 added, 0 removed, 1 changed"),
        "{line}"
    );
    forkd
        .log
        .wait_line("reload: web changed (workers), replacing 2 workers", T);
    assert!(answers(&web), "web answers after the reload");
}

fn port(addr: &str) -> u16 {
    addr.rsplit(':').next().unwrap().parse().unwrap()
}

#[test]
fn a_replaced_unix_service_keeps_its_socket_file_and_shows_the_old_one_draining() {
    let dir = Scratch::new("reload-unix");
    let socket = dir.file("control.sock");
    let path = dir.file("echo.sock");
    let config = |idle: &str| {
        format!(
            "[daemon]\ncontrol_socket = \"{}\"\n\n[[service]]\nname = \"echo\"\nlisten = [\"unix:{}\"]\nmode = \"fork\"\nhandler = \"echo\"\nidle_timeout = \"{idle}\"\ndrain_timeout = \"30s\"\n",
            socket.display(),
            path.display()
        )
    };
    let file = dir.write("forkd.toml", &config("30s"));
    let forkd = Forkd::start(&file);
    let unix_path = path.to_str().unwrap();
    wait_until("the unix socket answers", T, || {
        std::os::unix::net::UnixStream::connect(&path).is_ok()
    });
    let mut open = common::unix(unix_path);
    common::echo_exchange(&mut open, b"before\n");

    dir.write("forkd.toml", &config("31s"));
    forkd.signal(Signal::SIGHUP);
    forkd.log.wait_line("reloaded ", T);
    forkd.log.wait_line(
        "reload: echo changed (idle_timeout), replacing it; the old one finishes",
        T,
    );
    assert!(path.exists(), "the reused socket file was unlinked");
    common::echo_exchange(&mut common::unix(unix_path), b"new service\n");
    let states = || -> Vec<String> {
        common::status_json(&socket)["services"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                format!(
                    "{} {}",
                    s["name"].as_str().unwrap(),
                    s["state"].as_str().unwrap()
                )
            })
            .collect()
    };
    assert_eq!(states(), ["echo running", "echo draining"]);
    // The old service still serves what it had, then goes.
    common::echo_exchange(&mut open, b"old connection\n");
    drop(open);
    forkd
        .log
        .wait_line("reload: echo (replaced): every old process is down", T);
    assert_eq!(states(), ["echo running"]);
    assert!(path.exists());
    common::echo_exchange(&mut common::unix(unix_path), b"still\n");
}
