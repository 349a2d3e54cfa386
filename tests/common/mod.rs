//! Helpers shared by the integration tests: run the real `forkd` on a config
//! written by the test, follow its log, wait on conditions with deadlines,
//! inspect `/proc`, and clean up by PID even when a test fails.
#![allow(dead_code)]

pub mod follower;
pub mod group;
pub mod pool;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

pub const FORKD: &str = env!("CARGO_BIN_EXE_forkd");
pub const FORKCTL: &str = env!("CARGO_BIN_EXE_forkctl");

/// A scratch directory removed on drop.
pub struct Scratch {
    pub path: PathBuf,
}

impl Scratch {
    pub fn new(tag: &str) -> Scratch {
        let path = std::env::temp_dir().join(format!(
            "forkd-test-{tag}-{}-{}",
            std::process::id(),
            rand_u64()
        ));
        std::fs::create_dir_all(&path).expect("scratch dir");
        Scratch { path }
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.file(name);
        std::fs::write(&p, text).expect("write scratch file");
        p
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    h.write_u64(COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    h.finish()
}

/// Lines a child wrote to a pipe, collected by a reader thread (in the test
/// process, never in forkd) so tests can wait for a line without sleeping.
#[derive(Clone, Default)]
pub struct LogLines {
    inner: Arc<(Mutex<Collected>, Condvar)>,
}

/// The lines so far, and whether the stream has ended.
type Collected = (Vec<String>, bool);

impl LogLines {
    fn follow(&self, stream: impl std::io::Read + Send + 'static) {
        let me = self.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { break };
                let (lock, cond) = &*me.inner;
                lock.lock().unwrap().0.push(line);
                cond.notify_all();
            }
            let (lock, cond) = &*me.inner;
            lock.lock().unwrap().1 = true;
            cond.notify_all();
        });
    }

    pub fn snapshot(&self) -> Vec<String> {
        self.inner.0.lock().unwrap().0.clone()
    }

    pub fn count(&self, needle: &str) -> usize {
        self.snapshot()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }

    /// Waits until `pred` holds for the lines so far; panics with the log at
    /// the deadline.
    pub fn wait_for(&self, what: &str, timeout: Duration, pred: impl Fn(&[String]) -> bool) {
        let deadline = Instant::now() + timeout;
        let (lock, cond) = &*self.inner;
        let mut guard = lock.lock().unwrap();
        loop {
            if pred(&guard.0) {
                return;
            }
            let now = Instant::now();
            if now >= deadline || guard.1 {
                let log = guard.0.join("\n");
                drop(guard);
                panic!("timed out waiting for {what}; log so far:\n{log}");
            }
            guard = cond.wait_timeout(guard, deadline - now).unwrap().0;
        }
    }

    /// Waits for a line containing `needle` and returns it.
    pub fn wait_line(&self, needle: &str, timeout: Duration) -> String {
        self.wait_count(needle, 1, timeout);
        self.snapshot()
            .into_iter()
            .find(|l| l.contains(needle))
            .unwrap()
    }

    /// Waits until `n` lines contain `needle`.
    pub fn wait_count(&self, needle: &str, n: usize, timeout: Duration) {
        self.wait_for(
            &format!("{n} line(s) containing {needle:?}"),
            timeout,
            |lines| lines.iter().filter(|l| l.contains(needle)).count() >= n,
        );
    }
}

/// A running forkd, killed by PID when dropped.
pub struct Forkd {
    pub child: Child,
    pub log: LogLines,
    pub config: PathBuf,
}

impl Forkd {
    /// Starts `forkd --config PATH` with the log on a pipe.
    pub fn start(config: &Path) -> Forkd {
        Forkd::start_with(config, &[], &[])
    }

    pub fn start_with(config: &Path, args: &[&str], env: &[(&str, &str)]) -> Forkd {
        let mut cmd = Command::new(FORKD);
        cmd.arg("--config").arg(config).args(args);
        // Each config gets its own default control socket (beside it, in
        // NAME.run/) so that forkds running in parallel never meet.
        cmd.env("RUNTIME_DIRECTORY", config.with_extension("run"));
        for (k, v) in env {
            cmd.env(k, v);
        }
        Forkd::spawn(cmd, config)
    }

    /// Starts `forkd --config PATH` as a user would from a shell: without
    /// systemd's `RUNTIME_DIRECTORY` and with `XDG_RUNTIME_DIR` set to
    /// `runtime_dir` (a test's own), so its default control socket is
    /// `runtime_dir/forkd/control.sock`, where [`forkctl_from_shell`] looks.
    pub fn start_from_shell(config: &Path, runtime_dir: &Path) -> Forkd {
        let mut cmd = Command::new(FORKD);
        cmd.arg("--config").arg(config);
        from_shell(&mut cmd, runtime_dir);
        Forkd::spawn(cmd, config)
    }

    /// Spawns `cmd` (forkd, or a launcher that execs it in its own pid)
    /// with its log on a pipe.
    fn spawn(mut cmd: Command, config: &Path) -> Forkd {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {:?}: {e}", cmd.get_program()));
        let log = LogLines::default();
        log.follow(child.stderr.take().unwrap());
        Forkd {
            child,
            log,
            config: config.to_path_buf(),
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig).expect("signal forkd");
    }

    /// Waits for forkd to exit; returns its exit code (None if killed).
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status.code();
            }
            assert!(
                Instant::now() < deadline,
                "forkd did not exit within {timeout:?}"
            );
            pause();
        }
    }
}

impl Drop for Forkd {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // What forkd said, for the failure's report.
            let lines = self.log.snapshot();
            let tail = &lines[lines.len().saturating_sub(40)..];
            eprintln!("--- forkd's last log lines ---\n{}", tail.join("\n"));
        }
        if let Ok(None) = self.child.try_wait() {
            let pid = self.pid();
            // SIGTERM first: forkd removes its message queues, shared
            // memory and sockets on the way out, which SIGKILL would leave.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
            let deadline = Instant::now() + Duration::from_secs(3);
            while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
                pause();
            }
        }
        if let Ok(None) = self.child.try_wait() {
            let pid = self.pid();
            let children = descendants(pid);
            let _ = self.child.kill();
            let _ = self.child.wait();
            for c in children {
                let pid = nix::unistd::Pid::from_raw(c);
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
                // Each program leads its own process group: its group takes
                // along a child it forked after the snapshot above (`sh -c
                // "echo; sleep"` between the two). ESRCH when not a leader.
                let _ = nix::sys::signal::killpg(pid, nix::sys::signal::Signal::SIGKILL);
            }
        }
        self.remove_ipc_leftovers();
    }
}

impl Forkd {
    /// Unlinks the message queues and shared-memory segments a killed
    /// forkd left, as the next forkd of its control socket would: they
    /// outlive it and count against the user's RLIMIT_MSGQUEUE (twelve
    /// mqueue workers; src/ipc/mqueue.rs), so tests that end forkd with
    /// SIGKILL would starve the next run. The names are in the ledger
    /// beside the control socket (src/ipc/names.rs), which a forkd that
    /// stopped cleanly has removed.
    fn remove_ipc_leftovers(&self) {
        let lines = self.log.snapshot();
        let Some(socket) = lines
            .iter()
            .find_map(|l| l.split_once("control socket: ").map(|(_, p)| p.trim()))
        else {
            return;
        };
        let Ok(ledger) = std::fs::read_to_string(format!("{socket}.ipc")) else {
            return;
        };
        for line in ledger.lines() {
            match line.split_once(' ') {
                Some(("mq", name)) if name.starts_with("/forkd.") => {
                    let _ = nix::mqueue::mq_unlink(name);
                }
                Some(("shm", name)) if name.starts_with("/forkd.") => {
                    let _ = nix::sys::mman::shm_unlink(name);
                }
                _ => {}
            }
        }
    }
}

/// The polling interval of [`wait_until`]: a condition check rate, not a
/// synchronisation delay.
pub fn pause() {
    std::thread::sleep(Duration::from_millis(10));
}

/// Polls `cond` until it holds or `timeout` passes; panics naming `what`.
pub fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        pause();
    }
}

/// Fields of /proc/PID/stat: (state, ppid), or None if the pid is gone.
pub fn proc_stat(pid: i32) -> Option<(char, i32)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 2..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

/// True if the pid exists and is not a zombie.
pub fn alive(pid: i32) -> bool {
    matches!(proc_stat(pid), Some((s, _)) if s != 'Z')
}

/// Direct children of `pid` (from /proc/PID/task/*/children).
pub fn children(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for task in tasks.flatten() {
            if let Ok(text) = std::fs::read_to_string(task.path().join("children")) {
                out.extend(
                    text.split_whitespace()
                        .filter_map(|s| s.parse::<i32>().ok()),
                );
            }
        }
    }
    out
}

/// Every process below `pid`.
pub fn descendants(pid: i32) -> Vec<i32> {
    let mut all = Vec::new();
    let mut todo = children(pid);
    while let Some(p) = todo.pop() {
        all.push(p);
        todo.extend(children(p));
    }
    all
}

/// Zombies among the descendants of `pid`.
pub fn zombies_below(pid: i32) -> Vec<i32> {
    descendants(pid)
        .into_iter()
        .filter(|&p| matches!(proc_stat(p), Some(('Z', _))))
        .collect()
}

/// Sets the soft RLIMIT_NOFILE of another process; returns the old one.
pub fn set_open_files_limit(pid: i32, soft: u64) -> u64 {
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: a null new limit only reads; `old` is a live rlimit to fill.
    let rc = unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, std::ptr::null(), &mut old) };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
    let new = libc::rlimit {
        rlim_cur: soft,
        rlim_max: old.rlim_max,
    };
    // SAFETY: `new` is a live rlimit the kernel only reads.
    let rc = unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, &new, std::ptr::null_mut()) };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
    old.rlim_cur
}

/// Number of open fds of `pid`.
pub fn fd_count(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// The text after "NAME#I: " in a program output log line.
pub fn output_of(line: &str, instance: &str) -> String {
    let tag = format!("{instance}: ");
    line[line.find(&tag).expect("output line") + tag.len()..].to_string()
}

/// The `command = [...]` line of a program that daemonizes itself the
/// classic way: a subshell starts the daemon in a session of its own and
/// exits, the process forkd started exits 0, and the daemon writes its pid
/// to `pidfile` (through a rename, so never half-written).
pub fn daemonizing_command(pidfile: &Path) -> String {
    let p = pidfile.display();
    format!(
        r#"command = ["/bin/sh", "-c", '''
( setsid sh -c "echo \$\$ > {p}.tmp; mv {p}.tmp {p}; exec sleep 1000" & )
exit 0
''']"#
    )
}

/// What one `forkctl` run printed, and how it exited.
#[derive(Debug)]
pub struct CtlOutput {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs the real `forkctl --socket SOCKET ARGS...` (optionally prefixed by
/// `wrapper`, like setpriv) and collects its output.
pub fn forkctl_as(wrapper: &[&str], socket: &Path, args: &[&str]) -> CtlOutput {
    let mut cmd = match wrapper.split_first() {
        Some((program, rest)) => {
            let mut c = Command::new(program);
            c.args(rest).arg(FORKCTL);
            c
        }
        None => Command::new(FORKCTL),
    };
    cmd.arg("--socket")
        .arg(socket)
        .args(args)
        .env_remove("FORKD_SOCKET");
    run_forkctl(cmd)
}

/// `forkctl ARGS...` with no `--socket` and no `FORKD_SOCKET`, in the
/// environment of [`Forkd::start_from_shell`]: it must find the socket itself.
pub fn forkctl_from_shell(runtime_dir: &Path, args: &[&str]) -> CtlOutput {
    let mut cmd = Command::new(FORKCTL);
    cmd.args(args).env_remove("FORKD_SOCKET");
    from_shell(&mut cmd, runtime_dir);
    run_forkctl(cmd)
}

/// A shell user's environment: `XDG_RUNTIME_DIR`, no `RUNTIME_DIRECTORY`.
fn from_shell(cmd: &mut Command, runtime_dir: &Path) {
    cmd.env_remove("RUNTIME_DIRECTORY")
        .env("XDG_RUNTIME_DIR", runtime_dir);
}

fn run_forkctl(mut cmd: Command) -> CtlOutput {
    let out = cmd.stdin(Stdio::null()).output().expect("run forkctl");
    CtlOutput {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `forkctl --socket SOCKET ARGS...`.
pub fn forkctl(socket: &Path, args: &[&str]) -> CtlOutput {
    forkctl_as(&[], socket, args)
}

/// `forkctl status --json` as JSON; panics unless it exits 0.
pub fn status_json(socket: &Path) -> serde_json::Value {
    let out = forkctl(socket, &["--json", "status"]);
    assert_eq!(out.code, 0, "forkctl status failed: {out:?}");
    serde_json::from_str(&out.stdout).expect("status --json prints JSON")
}

/// (state, pid) of each instance of `program`, from `status --json`.
pub fn instance_states(socket: &Path, program: &str) -> Vec<(String, Option<i64>)> {
    let status = status_json(socket);
    let programs = status["programs"].as_array().expect("programs array");
    let entry = programs
        .iter()
        .find(|p| p["name"] == program)
        .unwrap_or_else(|| panic!("no program {program} in {status}"));
    entry["instances"]
        .as_array()
        .expect("instances array")
        .iter()
        .map(|i| (i["state"].as_str().unwrap().to_string(), i["pid"].as_i64()))
        .collect()
}

/// Writes `DIR/forkd.toml`: a `[daemon]` table naming `DIR/control.sock`
/// as the control socket, then `body`. Returns the config and the socket.
pub fn control_config(dir: &Scratch, body: &str) -> (PathBuf, PathBuf) {
    let socket = dir.file("control.sock");
    let config = dir.write(
        "forkd.toml",
        &format!(
            "[daemon]\ncontrol_socket = \"{}\"\n{body}",
            socket.display()
        ),
    );
    (config, socket)
}

/// Starts forkd on [`control_config`] and waits until the socket answers.
/// Returns forkd and the socket path.
pub fn start_with_control(dir: &Scratch, body: &str) -> (Forkd, PathBuf) {
    start_with_control_env(dir, body, &[])
}

/// [`start_with_control`] with extra variables in forkd's environment.
pub fn start_with_control_env(dir: &Scratch, body: &str, env: &[(&str, &str)]) -> (Forkd, PathBuf) {
    let (config, socket) = control_config(dir, body);
    let forkd = Forkd::start_with(&config, &[], env);
    wait_until(
        "the control socket answers",
        Duration::from_secs(10),
        || std::os::unix::net::UnixStream::connect(&socket).is_ok(),
    );
    (forkd, socket)
}

/// Sends raw bytes on one connection, shuts down the writing side, and
/// returns every reply line forkd sent before closing.
pub fn raw_control(socket: &Path, bytes: &[u8]) -> Vec<String> {
    use std::io::{Read, Write};
    let mut stream = std::os::unix::net::UnixStream::connect(socket).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(bytes).expect("send request bytes");
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).expect("read replies");
    text.lines().map(String::from).collect()
}

/// A stand-in for systemd's notification socket: a datagram socket bound in
/// a scratch directory, passed to forkd as `NOTIFY_SOCKET`.
pub struct NotifyReceiver {
    socket: std::os::unix::net::UnixDatagram,
    pub path: PathBuf,
    /// Every message received so far, with its arrival time.
    pub received: Vec<(Instant, String)>,
}

impl NotifyReceiver {
    pub fn bind(dir: &Scratch) -> NotifyReceiver {
        let path = dir.file("notify.sock");
        let socket = std::os::unix::net::UnixDatagram::bind(&path).expect("bind notify socket");
        NotifyReceiver {
            socket,
            path,
            received: Vec::new(),
        }
    }

    /// `("NOTIFY_SOCKET", path)` for [`Forkd::start_with`].
    pub fn env(&self) -> (&'static str, &str) {
        ("NOTIFY_SOCKET", self.path.to_str().expect("utf-8 path"))
    }

    /// The next message, or None when nothing arrives within `timeout`.
    pub fn recv(&mut self, timeout: Duration) -> Option<String> {
        self.socket
            .set_read_timeout(Some(timeout.max(Duration::from_millis(1))))
            .unwrap();
        let mut buf = [0u8; 4096];
        match self.socket.recv(&mut buf) {
            Ok(n) => {
                let message = String::from_utf8_lossy(&buf[..n]).into_owned();
                self.received.push((Instant::now(), message.clone()));
                Some(message)
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                None
            }
            Err(e) => panic!("notify socket: {e}"),
        }
    }

    /// Receives until a message satisfies `pred` and returns it; panics
    /// with everything received when `timeout` passes.
    pub fn wait_for(
        &mut self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                panic!(
                    "timed out waiting for a notification with {what}; received: {:?}",
                    self.received.iter().map(|(_, m)| m).collect::<Vec<_>>()
                );
            }
            if let Some(message) = self.recv(left) {
                if pred(&message) {
                    return message;
                }
            }
        }
    }

    /// Waits for a message with the line `assignment` (e.g. `READY=1`).
    pub fn wait_line(&mut self, assignment: &str, timeout: Duration) -> String {
        self.wait_for(assignment, timeout, |m| m.lines().any(|l| l == assignment))
    }
}

/// The value of `KEY=` in a notification, if present.
pub fn notify_value<'a>(message: &'a str, key: &str) -> Option<&'a str> {
    message
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// Starts `launcher... forkd --config PATH args...` (for example under
/// `systemd-socket-activate`, which execs forkd in its own pid, so the
/// returned [`Forkd`] still kills the right process).
pub fn start_forkd_under(launcher: &[&str], config: &Path, args: &[&str]) -> Forkd {
    let mut cmd = Command::new(launcher[0]);
    cmd.args(&launcher[1..])
        .arg(FORKD)
        .arg("--config")
        .arg(config)
        .args(args)
        // As in `Forkd::start_with`: a control socket of its own by default
        // (a launcher that clears the environment needs `control_socket`).
        .env("RUNTIME_DIRECTORY", config.with_extension("run"));
    Forkd::spawn(cmd, config)
}

/// A process's command line, arguments joined by spaces ("" when gone).
pub fn cmdline(pid: i32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            b.split(|&c| c == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

/// Live (non-zombie) children of `pid` whose command line is `command`,
/// sorted.
pub fn children_running(pid: i32, command: &str) -> Vec<i32> {
    let mut pids: Vec<i32> = children(pid)
        .into_iter()
        .filter(|&c| alive(c) && cmdline(c) == command)
        .collect();
    pids.sort();
    pids
}

/// Whether `tool` is on PATH; says why `test` is skipped when it is not,
/// naming the Debian package to install.
pub fn have_tool(tool: &str, test: &str) -> bool {
    let found = on_path(tool);
    if !found {
        skip(test, &missing_tool(tool));
    }
    found
}

/// Whether an executable file named `tool` is on PATH.
pub fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|d| d.join(tool).is_file()))
        .unwrap_or(false)
}

/// `systemd-nspawn is not installed (apt-get install systemd-container)`.
pub fn missing_tool(tool: &str) -> String {
    let package = match tool {
        "systemd-nspawn" => "systemd-container",
        "nsenter" | "setpriv" => "util-linux",
        "ss" => "iproute2",
        "systemd-analyze" | "systemd-socket-activate" => "systemd",
        "promtool" => "prometheus",
        // debootstrap, socat, mandoc: the package is named after the tool.
        other => other,
    };
    format!("{tool} is not installed (apt-get install {package})")
}

/// Whether the test runs as root; says why `test` is skipped when not.
pub fn running_as_root(test: &str, for_what: &str) -> bool {
    let root = nix::unistd::geteuid().is_root();
    if !root {
        skip(test, &format!("needs root to {for_what}"));
    }
    root
}

/// Says that `test` is skipped, and why, where `cargo test` shows it.
///
/// libtest captures what a test prints with `print!`/`eprint!` and shows
/// it only when the test fails, so a skip said with `eprintln!` is never
/// seen. It captures only those macros, not writes to the stderr handle
/// itself: this line reaches cargo test's own stderr (the terminal, or
/// CI's log) whether the test passes or not.
pub fn skip(test: &str, why: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "skipping {test}: {why}");
}

/// Waits for forkd's `service NAME listening on SCHEME...` line and returns
/// the bound address after the scheme (`127.0.0.1:41234`, or a path).
pub fn bound_address(log: &LogLines, service: &str, scheme: &str) -> String {
    let needle = format!("service {service} listening on {scheme}");
    let line = log.wait_line(&needle, Duration::from_secs(10));
    line[line.find(&needle).unwrap() + needle.len()..]
        .trim()
        .to_string()
}

/// Writes a config with one `[[service]]` whose table body is `body`.
pub fn service_config(scratch: &Scratch, body: &str) -> PathBuf {
    scratch.write(
        "forkd.toml",
        &format!("[[service]]\nname = \"echo\"\n{body}\n"),
    )
}

/// One upper-case echo exchange over a connected stream: send, read the
/// same number of bytes back (bounded by a 5 s timeout), compare.
pub fn echo_exchange<S: std::io::Read + std::io::Write>(stream: &mut S, msg: &[u8]) {
    stream.write_all(msg).expect("send to echo");
    let mut got = vec![0u8; msg.len()];
    stream.read_exact(&mut got).expect("echo reply");
    assert_eq!(got, msg.to_ascii_uppercase(), "echo reply");
}

pub fn tcp(addr: &str) -> std::net::TcpStream {
    let s = std::net::TcpStream::connect(addr).expect("connect to forkd");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s
}

pub fn unix(path: &str) -> std::os::unix::net::UnixStream {
    let s = std::os::unix::net::UnixStream::connect(path).expect("connect to forkd");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s
}

/// Runs `client(i)` on `n` threads of the test process at once; each
/// returns how many exchanges it verified. Returns the total.
pub fn concurrently(n: usize, client: impl Fn(usize) -> usize + Sync) -> usize {
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..n)
            .map(|i| {
                let client = &client;
                scope.spawn(move || client(i))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("client thread"))
            .sum()
    })
}

/// 32 concurrent clients, each making a few connections with a few
/// exchanges, over TCP, a Unix socket and UDP: every reply is checked.
pub fn echo_under_32_clients(mode: &str) {
    let scratch = Scratch::new(&format!("echo-{mode}"));
    let sock = scratch.file("echo.sock");
    let config = service_config(
        &scratch,
        &format!(
            "listen = [\"tcp://127.0.0.1:0\", \"udp://127.0.0.1:0\", \"unix:{}\"]\nmode = \"{mode}\"\nworkers = 4\nhandler = \"echo\"",
            sock.display()
        ),
    );
    let forkd = Forkd::start(&config);
    let tcp_addr = bound_address(&forkd.log, "echo", "tcp://");
    let udp_addr = bound_address(&forkd.log, "echo", "udp://");
    let unix_path = bound_address(&forkd.log, "echo", "unix:");
    let per_client = 3 * 4;
    let done = concurrently(32, |i| {
        let mut ok = 0;
        // One connection at a time per client: prefork serves one
        // connection per worker, so a client holding two could deadlock.
        for c in 0..3 {
            let mut t = tcp(&tcp_addr);
            for r in 0..2 {
                echo_exchange(
                    &mut t,
                    format!("tcp client {i} conn {c} req {r}\n").as_bytes(),
                );
                ok += 1;
            }
            drop(t);
            let mut u = unix(&unix_path);
            for r in 0..2 {
                echo_exchange(
                    &mut u,
                    format!("unix client {i} conn {c} req {r}\n").as_bytes(),
                );
                ok += 1;
            }
        }
        ok
    });
    assert_eq!(done, 32 * per_client);
    let answered = concurrently(32, |i| {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let msg = format!("datagram from {i}");
        let mut buf = [0u8; 256];
        // UDP may drop under load: retry a bounded number of times.
        for _ in 0..10 {
            socket.send_to(msg.as_bytes(), &udp_addr).unwrap();
            if let Ok((n, _)) = socket.recv_from(&mut buf) {
                assert_eq!(&buf[..n], msg.to_ascii_uppercase().as_bytes());
                return 1;
            }
        }
        0
    });
    assert_eq!(answered, 32, "every UDP client got its datagram answered");
    wait_no_zombies(forkd.pid());
}

/// SIGKILLs a pid the test started indirectly (a daemon, an orphan) when
/// dropped, if it is still there: a failing assertion leaves nothing behind.
pub struct KillOnDrop(pub i32);

impl KillOnDrop {
    pub fn new(pid: i32) -> KillOnDrop {
        KillOnDrop(pid)
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if proc_stat(self.0).is_some() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(self.0),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// The time of day of a forkd log line (`2026-12-01T09:51:14.083Z ...`),
/// so a test measures between the events forkd logged rather than from
/// whenever its own thread happened to run.
pub fn log_time(line: &str) -> Duration {
    let clock = line
        .split('T')
        .nth(1)
        .and_then(|rest| rest.split('Z').next())
        .unwrap_or_else(|| panic!("no timestamp in {line:?}"));
    let mut parts = clock.split([':', '.']).map(|p| p.parse::<u64>().unwrap());
    let (h, m, s, ms) = (
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
    );
    Duration::from_millis(((h * 60 + m) * 60 + s) * 1000 + ms)
}

/// Waits until no zombie is left below `pid`. A child that exited a moment
/// ago is a zombie until forkd's loop handles SIGCHLD; one that stays past
/// the deadline was never reaped.
pub fn wait_no_zombies(pid: i32) {
    wait_until("no zombie below forkd", Duration::from_secs(5), || {
        zombies_below(pid).is_empty()
    });
}

// ---- Load from one address (frontend_load.rs, per_ip.rs) ----

use std::io::{ErrorKind, Read as _, Write as _};
use std::net::TcpStream;

/// Bounds of every load loop, whatever the server does.
pub const MAX_TIME: Duration = Duration::from_secs(60);

/// A service named "echo" in `mode` with `handler` and nothing else set
/// but `extra`; returns forkd and the bound TCP address.
pub fn serve(scratch: &Scratch, mode: &str, handler: &str, extra: &str) -> (Forkd, String) {
    let config = service_config(
        scratch,
        &format!(
            "listen = [\"tcp://127.0.0.1:0\"]\nmode = \"{mode}\"\nhandler = \"{handler}\"\n{extra}"
        ),
    );
    let forkd = Forkd::start(&config);
    let addr = bound_address(&forkd.log, "echo", "tcp://");
    (forkd, addr)
}

/// One connection: connect, one line, the reply, close.
pub fn exchange(addr: &str, msg: &str, upper: bool) -> Result<(), String> {
    let mut s = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(msg.as_bytes())
        .map_err(|e| format!("send: {e}"))?;
    let mut got = vec![0u8; msg.len()];
    s.read_exact(&mut got).map_err(|e| format!("reply: {e}"))?;
    let want = if upper {
        msg.to_ascii_uppercase()
    } else {
        msg.to_string()
    };
    if got != want.as_bytes() {
        return Err(format!("wrong reply {:?}", String::from_utf8_lossy(&got)));
    }
    Ok(())
}

/// `clients` threads each make `each` connections one after another;
/// returns the failures (empty: every connection was answered).
pub fn load(addr: &str, clients: usize, each: usize, upper: bool) -> Vec<String> {
    let started = Instant::now();
    std::thread::scope(|scope| {
        let threads: Vec<_> = (0..clients)
            .map(|c| {
                scope.spawn(move || {
                    let mut errors = Vec::new();
                    for i in 0..each {
                        if started.elapsed() > MAX_TIME {
                            errors.push(format!("client {c}: out of time at {i}"));
                            break;
                        }
                        let msg = format!("client {c} connection {i}\n");
                        if let Err(e) = exchange(addr, &msg, upper) {
                            errors.push(format!("client {c} connection {i}: {e}"));
                        }
                    }
                    errors
                })
            })
            .collect();
        threads
            .into_iter()
            .flat_map(|t| t.join().expect("client thread"))
            .collect()
    })
}

pub fn assert_all_answered(what: &str, errors: &[String], total: usize) {
    assert!(
        errors.is_empty(),
        "{what}: {} of {total} connections failed, e.g. {:?}",
        errors.len(),
        &errors[..errors.len().min(5)]
    );
}

/// True if the server closed `s` without answering (EOF or reset).
pub fn refused(s: &mut TcpStream) -> bool {
    let _ = s.write_all(b"anyone?\n");
    let mut buf = [0u8; 16];
    match s.read(&mut buf) {
        Ok(0) => true,
        Err(e) => matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::BrokenPipe),
        Ok(_) => false,
    }
}

// ---- File-serving handlers (service_files.rs, service_ftp.rs) ----

/// True if the server closed `s` (EOF or reset) before its read timeout.
pub fn closed_by_server(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 64];
    match s.read(&mut buf) {
        Ok(0) => true,
        Err(e) => e.kind() == ErrorKind::ConnectionReset,
        Ok(_) => false,
    }
}

/// The names in `dir`, hidden ones too, sorted.
pub fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// `len` bytes holding every byte value, in an order that does not
/// repeat every 256 bytes.
pub fn binary(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}

/// Instance 0 of `program` in a `status --json` reply.
pub fn first_instance(status: &serde_json::Value, program: &str) -> serde_json::Value {
    status["programs"]
        .as_array()
        .expect("programs array")
        .iter()
        .find(|p| p["name"] == program)
        .unwrap_or_else(|| panic!("no program {program} in {status}"))["instances"][0]
        .clone()
}

/// `forkd --check --config PATH`: its exit code and stderr.
pub fn check_config(path: &Path) -> (Option<i32>, String) {
    let out = Command::new(FORKD)
        .arg("--check")
        .arg("--config")
        .arg(path)
        .output()
        .expect("run forkd --check");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
