//! What forkd's pools leave behind in the system: while it runs, exactly
//! the queues and segments its ledger names (src/ipc/names.rs); after a
//! SIGKILL, those same leftovers, which the next forkd of the same
//! control socket removes at start; after a graceful stop, nothing.
//!
//! forkd never lists /dev/mqueue (it need not be mounted, and here it is
//! not), so the test brings its own view: a shell under `unshare -m -i
//! --propagation private` mounts an mqueue file system on /dev/mqueue in
//! a private mount namespace and a fresh IPC namespace, and holds them
//! while the test runs both forkds inside (`nsenter`) and reads the
//! directory through the holder's `/proc/PID/root`. The fresh IPC
//! namespace holds only this test's queues, whatever else runs on the
//! machine, and takes any leftover with it when the holder exits.
//! POSIX shared memory is files in /dev/shm, a tmpfs both namespaces see.

mod common;

use std::collections::BTreeSet;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::pool::running_workers;
use common::*;

const T: Duration = Duration::from_secs(20);
const WORKERS: usize = 2;
/// A pool of each, so a transport is one entry (shm: /dev/shm segments).
const TRANSPORTS: &[&str] = &["pipe", "mqueue", "shm"];

/// A private mount namespace and IPC namespace with an mqueue file system
/// on /dev/mqueue, held by a shell that lives until its stdin closes (so
/// it goes with the test, even one that panics); SIGKILLed by PID on drop.
struct MqueueView {
    holder: Child,
    /// /dev/mqueue did not exist: the holder made it, this removes it.
    made_dir: bool,
}

impl MqueueView {
    fn open() -> MqueueView {
        let made_dir = !Path::new("/dev/mqueue").exists();
        let script = "mkdir -p /dev/mqueue && mount -t mqueue none /dev/mqueue && echo mounted && exec cat >/dev/null";
        let mut holder = Command::new("unshare")
            .args(["-m", "-i", "--propagation", "private", "sh", "-c", script])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run unshare");
        let mut line = String::new();
        let stdout = holder.stdout.take().unwrap();
        let _ = std::io::BufReader::new(stdout).read_line(&mut line);
        if line.trim() != "mounted" {
            let _ = holder.kill();
            let out = holder.wait_with_output().expect("the holder's output");
            panic!(
                "cannot mount an mqueue file system in a namespace: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        MqueueView { holder, made_dir }
    }

    fn pid(&self) -> u32 {
        self.holder.id()
    }

    /// `nsenter` arguments that run a command in the view's namespaces.
    fn enter(&self) -> [String; 4] {
        [
            "nsenter".into(),
            format!("--target={}", self.pid()),
            "--mount".into(),
            "--ipc".into(),
        ]
    }

    /// The entries of /dev/mqueue as the namespace sees it.
    fn list(&self) -> BTreeSet<String> {
        list_dir(&PathBuf::from(format!(
            "/proc/{}/root/dev/mqueue",
            self.pid()
        )))
    }
}

impl Drop for MqueueView {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
        if self.made_dir {
            let _ = std::fs::remove_dir("/dev/mqueue");
        }
    }
}

fn list_dir(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("list {}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// The names a forkd recorded in the ledger beside its control socket,
/// each as it shows in its directory: (`mqueue` or `shm`, `forkd.…`).
fn ledger(socket: &Path) -> BTreeSet<(String, String)> {
    let path = format!("{}.ipc", socket.display());
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    text.lines()
        .map(|l| match l.split_once(' ') {
            Some(("mq", name)) => ("mqueue".to_string(), name[1..].to_string()),
            Some(("shm", name)) => ("shm".to_string(), name[1..].to_string()),
            _ => panic!("{path}: unexpected line {l:?}"),
        })
        .collect()
}

/// Every `forkd.<pid>.…` name in the mqueue view and in /dev/shm.
fn names_of(view: &MqueueView, pid: i32) -> BTreeSet<(String, String)> {
    let prefix = format!("forkd.{pid}.");
    let mqueues = view.list().into_iter().map(|n| ("mqueue".to_string(), n));
    let segments = list_dir(Path::new("/dev/shm"))
        .into_iter()
        .map(|n| ("shm".to_string(), n));
    mqueues
        .chain(segments)
        .filter(|(_, n)| n.starts_with(&prefix))
        .collect()
}

/// forkd in the view's namespaces, once every pool's workers run.
fn start(view: &MqueueView, dir: &Scratch, body: &str) -> (Forkd, PathBuf) {
    let (config, socket) = control_config(dir, body);
    let enter = view.enter();
    let launcher: Vec<&str> = enter.iter().map(String::as_str).collect();
    let forkd = start_forkd_under(&launcher, &config, &[]);
    // Its own start line, not a connect: the socket file a killed forkd
    // left can still take a connection for a moment (a child of it that
    // has not yet closed what it inherited holds the listener), and is
    // then removed by this forkd before it binds its own.
    let pools = TRANSPORTS.len();
    forkd
        .log
        .wait_line(&format!("started: 0 programs, {pools} pools"), T);
    wait_until("every pool's workers run", T, || {
        TRANSPORTS
            .iter()
            .all(|t| running_workers(&socket, &format!("clean-{t}")).len() == WORKERS)
    });
    (forkd, socket)
}

#[test]
fn a_killed_forkds_queues_are_removed_by_the_next_and_a_stopped_one_leaves_none() {
    let test = "a_killed_forkds_queues_are_removed_by_the_next_and_a_stopped_one_leaves_none";
    if !running_as_root(test, "mount an mqueue file system in a namespace")
        || !have_tool("unshare", test)
        || !have_tool("nsenter", test)
    {
        return;
    }
    let view = MqueueView::open();
    let dir = Scratch::new("pool-cleanup");
    let body: String = TRANSPORTS
        .iter()
        .map(|t| {
            format!("[[pool]]\nname = \"clean-{t}\"\ntransport = \"{t}\"\nworkers = {WORKERS}\nworker = \"builtin:upper\"\n")
        })
        .collect();

    // While it runs: exactly what its ledger names, of each transport.
    let (mut first, socket) = start(&view, &dir, &body);
    let first_pid = first.pid();
    assert!(
        first.log.count(&format!("forkd[{first_pid}]")) > 0,
        "nsenter ran forkd in its own pid"
    );
    let recorded = ledger(&socket);
    assert_eq!(
        names_of(&view, first_pid),
        recorded,
        "the first forkd's names"
    );
    for transport in TRANSPORTS.iter().filter(|t| **t != "pipe") {
        let made = recorded
            .iter()
            .filter(|(kind, _)| kind == transport)
            .count();
        assert!(made >= WORKERS, "{transport}: {recorded:?}");
    }

    // A SIGKILL leaves them all behind.
    first.signal(nix::sys::signal::Signal::SIGKILL);
    assert_eq!(first.wait_exit(T), None, "killed");
    assert_eq!(names_of(&view, first_pid), recorded, "the leftovers");

    // The next forkd of the same control socket removes them at start.
    let (mut second, second_socket) = start(&view, &dir, &body);
    assert_eq!(second_socket, socket);
    let second_pid = second.pid();
    second.log.wait_line(
        &format!(
            "removed {} message queue(s) and shared-memory segment(s) a previous forkd left",
            recorded.len()
        ),
        T,
    );
    assert_eq!(
        names_of(&view, first_pid),
        BTreeSet::new(),
        "leftovers gone"
    );
    assert_eq!(
        names_of(&view, second_pid),
        ledger(&socket),
        "the second forkd's names"
    );

    // A graceful stop leaves nothing, and no ledger.
    second.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(second.wait_exit(T), Some(0), "a clean stop");
    let left: Vec<String> = view
        .list()
        .into_iter()
        .filter(|n| n.starts_with("forkd."))
        .collect();
    assert!(left.is_empty(), "queues left in /dev/mqueue: {left:?}");
    for pid in [first_pid, second_pid] {
        assert_eq!(names_of(&view, pid), BTreeSet::new(), "forkd {pid}'s names");
    }
    let ledger_path = format!("{}.ipc", socket.display());
    assert!(
        !Path::new(&ledger_path).exists(),
        "{ledger_path} is removed at a clean exit"
    );
    drop(second);
    drop(first);
}
