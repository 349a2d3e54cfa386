//! forkd's own log, key by key: `log_file` (a daemonized forkd's log),
//! `log_lines` (what `forkctl log` keeps per instance), and the syslog
//! priority prefixes it writes when `JOURNAL_STREAM` says stderr is the
//! journal.

mod common;

use std::io::BufRead;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{alive, descendants, forkctl, start_with_control, wait_until, Forkd, Scratch};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const T: Duration = Duration::from_secs(10);

/// Kills a daemonized forkd (not the test's child) and whatever it
/// started, by pid, when dropped: a failing test leaves nothing behind.
struct Daemon(i32);

impl Drop for Daemon {
    fn drop(&mut self) {
        let below = descendants(self.0);
        let _ = kill(Pid::from_raw(self.0), Signal::SIGKILL);
        for pid in below {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

#[test]
fn log_file_receives_a_daemonized_forkds_log() {
    let dir = Scratch::new("log-file");
    let log_file = dir.file("forkd.log");
    let pidfile = dir.file("forkd.pid");
    let config = dir.write(
        "forkd.toml",
        &format!(
            r#"[daemon]
control_socket = "{}"
log_file = "{}"

[[program]]
name = "talk"
command = ["/bin/sh", "-c", "echo hello from talk; exec sleep 1000"]
"#,
            dir.file("control.sock").display(),
            log_file.display()
        ),
    );
    let launcher = Command::new(common::FORKD)
        .args(["--daemon", "--pidfile"])
        .arg(&pidfile)
        .arg("--config")
        .arg(&config)
        .stdin(Stdio::null())
        .output()
        .expect("run forkd --daemon");
    assert!(launcher.status.success(), "{launcher:?}");
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .expect("pidfile")
        .trim()
        .parse()
        .unwrap();
    let _daemon = Daemon(pid);
    let logged = |needle: &str| {
        std::fs::read_to_string(&log_file)
            .unwrap_or_default()
            .contains(needle)
    };
    wait_until("the daemon's start-up in log_file", T, || {
        logged("forkd 0.1.0 started")
    });
    wait_until("the program's output in log_file", T, || {
        logged("talk#0: hello from talk")
    });
    let launcher_stderr = String::from_utf8_lossy(&launcher.stderr);
    assert!(!launcher_stderr.contains("talk#0"), "{launcher_stderr}");

    kill(Pid::from_raw(pid), Signal::SIGTERM).unwrap();
    wait_until("the daemon's last line in log_file", T, || {
        logged("forkd stopped")
    });
    wait_until("the daemon gone", T, || !alive(pid));
}

#[test]
fn log_lines_caps_what_forkctl_log_returns_per_instance() {
    let dir = Scratch::new("log-lines");
    let (forkd, socket) = start_with_control(
        &dir,
        r#"log_lines = 3

[[program]]
name = "chatty"
command = ["/bin/sh", "-c", "for i in 1 2 3 4 5 6 7 8 9 10; do echo line $i of $FORKD_INSTANCE; done; exec sleep 1000"]
instances = 2
"#,
    );
    forkd.log.wait_line("chatty#0: line 10 of 0", T);
    forkd.log.wait_line("chatty#1: line 10 of 1", T);
    // Asking for more than log_lines gets the newest log_lines.
    let all = forkctl(&socket, &["log", "chatty", "-n", "50"]);
    assert_eq!(all.code, 0, "{all:?}");
    let expected: String = (0..2)
        .flat_map(|i| (8..=10).map(move |n| format!("chatty#{i}: line {n} of {i}\n")))
        .collect();
    assert_eq!(all.stdout, expected);
    // Fewer is fewer: log_lines is a bound, not a count.
    let two = forkctl(&socket, &["log", "chatty:1", "-n", "2"]);
    assert_eq!(two.code, 0, "{two:?}");
    assert_eq!(
        two.stdout,
        "chatty#1: line 9 of 1\nchatty#1: line 10 of 1\n"
    );
}

/// The end of a `[daemon]` table and a program that prints, then fails
/// twice (one restart between), leaves an orphan behind and goes FATAL:
/// one line of each priority, with debug on.
const ONE_OF_EACH_LEVEL: &str = r#"log_level = "debug"

[[program]]
name = "crasher"
command = ["/bin/sh", "-c", "(sleep 0 &); echo about to fail; exit 3"]
start_retries = 1
backoff_initial = "10ms"
"#;

#[test]
fn stderr_on_the_journal_gets_priority_prefixes_instead_of_timestamps() {
    let dir = Scratch::new("journal");
    let (config, _socket) = common::control_config(&dir, ONE_OF_EACH_LEVEL);
    // The pipe stands in for journald's stream: JOURNAL_STREAM names its
    // device and inode, as systemd.exec(5) describes. Close-on-exec, so
    // only forkd (through dup2 onto fd 2) holds its write end.
    let (read_end, write_end) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
    let stat = nix::sys::stat::fstat(&write_end).unwrap();
    let journal_stream = format!("{}:{}", stat.st_dev, stat.st_ino);
    let child = Command::new(common::FORKD)
        .arg("--config")
        .arg(&config)
        .env("JOURNAL_STREAM", &journal_stream)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(write_end))
        .spawn()
        .expect("spawn forkd");
    // Killed with its children on drop, like every forkd the tests start.
    let _forkd = Forkd {
        child,
        log: common::LogLines::default(),
        config: config.clone(),
    };
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let collected = Arc::clone(&lines);
    std::thread::spawn(move || {
        let reader = std::io::BufReader::new(std::fs::File::from(read_end));
        for line in reader.lines() {
            let Ok(line) = line else { break };
            collected.lock().unwrap().push(line);
        }
    });
    let wait_for = |line_start: &str| {
        wait_until(&format!("a line starting {line_start:?}"), T, || {
            lines
                .lock()
                .unwrap()
                .iter()
                .any(|l| l.starts_with(line_start))
        })
    };
    wait_for("<6>forkd 0.1.0 started");
    wait_for("<6>crasher#0 started (pid ");
    // The orphaned grandchild forkd reaps as subreaper: a debug line.
    wait_for("<7>reaped orphan pid ");
    wait_for("<6>crasher#0: about to fail");
    wait_for("<4>crasher#0 (pid ");
    wait_for("<3>crasher#0 failed 2 times in a row");
    let lines = lines.lock().unwrap().clone();
    let exit = lines
        .iter()
        .find(|l| l.starts_with("<4>crasher#0"))
        .unwrap();
    assert!(exit.ends_with("exited with code 3"), "{exit}");
    for line in &lines {
        let priority = line
            .strip_prefix('<')
            .and_then(|rest| rest.split_once('>'))
            .map(|(n, _)| n);
        assert!(
            matches!(priority, Some("3" | "4" | "6" | "7")),
            "a line without a syslog priority: {line:?} in {lines:#?}"
        );
        assert!(
            !line.contains(" forkd["),
            "journald stamps lines itself: {line}"
        );
    }
}

#[test]
fn a_journal_stream_naming_another_file_keeps_plain_timestamped_lines() {
    let dir = Scratch::new("not-journal");
    let config = dir.write("forkd.toml", &format!("[daemon]\n{ONE_OF_EACH_LEVEL}"));
    // What a program started by a journald-logged parent inherits, while
    // its own stderr goes elsewhere.
    let null = nix::sys::stat::stat("/dev/null").unwrap();
    let elsewhere = format!("{}:{}", null.st_dev, null.st_ino);
    let forkd = Forkd::start_with(&config, &[], &[("JOURNAL_STREAM", &elsewhere)]);
    let fatal = forkd.log.wait_line("crasher#0 failed 2 times in a row", T);
    assert!(fatal.contains(" forkd["), "{fatal}");
    assert!(fatal.contains("ERROR"), "{fatal}");
    assert!(
        forkd.log.snapshot().iter().all(|l| !l.starts_with('<')),
        "priority prefixes without the journal"
    );
}
