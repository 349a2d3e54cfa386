//! fork + exec with everything the child needs prepared in the parent.
//!
//! An [`ExecPlan`] holds the argv, envp, credentials, limits and fd map as
//! C-ready values built before `fork(2)`. The child then runs
//! [`child_exec`], the only code in forkd that runs between fork and exec:
//! it calls async-signal-safe syscalls only, never allocates, never logs,
//! never unwinds, and ends in `execve(2)` or `_exit(2)`. If a step fails the
//! child writes `(step, errno)` to a close-on-exec pipe, so the parent
//! reports "exec failed: No such file or directory" instead of a bare 127.

use std::ffi::CString;
use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;

use nix::unistd::{Gid, Pid, Uid};

mod env;
mod report;

pub use env::{child_environment, command_problem};
use env::{resolve_in_path, sets, variable_name, DEFAULT_PATH};
use report::REPORT_LEN;
pub use report::{ExecReport, ReportPipe};

/// Where one of the child's standard fds comes from.
#[derive(Debug)]
pub enum ChildFd<'fd> {
    /// Keep forkd's own fd.
    Inherit,
    /// `dup2` this fd (owned by the plan until the spawn returns).
    Fd(OwnedFd),
    /// `dup2` this fd, which the caller keeps (no dup and close in forkd
    /// per spawn: the /dev/null and log pipes kept for every spawn).
    Borrowed(BorrowedFd<'fd>),
    /// The same open file as the child's stdin (`dup2(0, n)` in the child):
    /// a connection on fds 0 and 1 without a second fd in forkd.
    Stdin,
}

/// A privilege drop, resolved from names in the parent.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub uid: Uid,
    pub gid: Gid,
    pub groups: Vec<Gid>,
}

/// A command prepared once and spawned many times: the resolved path, argv
/// and environment as C strings, shared (cloning is a reference count).
/// [`Prepared::plan`] makes an [`ExecPlan`]; per-spawn variables go in with
/// [`ExecPlan::add_env`].
#[derive(Debug, Clone)]
pub struct Prepared(Arc<PreparedInner>);

#[derive(Debug)]
struct PreparedInner {
    /// `argv[0]` resolved against `PATH`, or `None` if no such file was
    /// found (then each plan searches again: the file may appear later).
    path: Option<CString>,
    path_var: String,
    argv: Vec<CString>,
    envp: Vec<CString>,
}

/// Everything `child_exec` needs, built in the parent.
#[derive(Debug)]
pub struct ExecPlan<'fd> {
    /// Path given to `execve`: `argv[0]` resolved against `PATH`.
    path: CString,
    command: Prepared,
    /// Variables added for this spawn only, after the prepared ones.
    extra_env: Vec<CString>,
    cwd: Option<CString>,
    pub credentials: Option<Credentials>,
    pub umask: Option<u32>,
    /// `(resource, value)` pairs; the value sets soft and hard limits.
    pub rlimits: Vec<(libc::__rlimit_resource_t, u64)>,
    pub stdin: ChildFd<'fd>,
    pub stdout: ChildFd<'fd>,
    pub stderr: ChildFd<'fd>,
    /// The process group (and session) the child leads, so that the whole
    /// tree can be signalled.
    pub leads: Leads,
    /// Signal the child gets when forkd dies (PR_SET_PDEATHSIG).
    pub death_signal: Option<libc::c_int>,
    /// Fds above 2 the program keeps, at the same numbers (a pool
    /// worker's channel); every other one is closed at exec.
    pub keep: Vec<RawFd>,
    /// An instance cgroup's `cgroup.procs`, open for writing: the child
    /// moves itself there before anything else runs in it.
    pub cgroup_procs: Option<OwnedFd>,
}

/// What a spawned child leads: either way its pid is its process group's,
/// so `killpg` reaches everything it starts, and a terminal's Ctrl-C aimed
/// at forkd's foreground group does not reach it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leads {
    /// A new session, without forkd's controlling terminal: for programs
    /// and commands, and for any child of a forkd run from a terminal
    /// (in forkd's session it would be a background job there, stopped by
    /// SIGTTOU or SIGTTIN when it touches the terminal).
    Session,
    /// A new process group in forkd's session: for a program per
    /// connection of a forkd with no controlling terminal (systemd, a
    /// daemon). setpgid(2) is cheaper than setsid(2), which also makes the
    /// scheduler a new autogroup (sched(7)) for every connection.
    Group,
}

/// Why a spawn failed: the step in the child and its errno.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("{step} failed: {source}")]
    Child {
        step: &'static str,
        source: io::Error,
    },
    #[error("fork failed: {0}")]
    Fork(io::Error),
    /// pipe2(2) for the exec report failed, before any fork (EMFILE or
    /// ENFILE: forkd or the system is out of file descriptors).
    #[error("cannot create the pipe that reports a failed exec: {0}")]
    Pipe(io::Error),
    /// Reading the exec report failed: whether the child exec'd is unknown.
    #[error("cannot read the child's exec report: {0}")]
    Report(io::Error),
    #[error("{0}")]
    Prepare(String),
}

/// The steps of [`child_exec`] that can fail, reported to the parent by number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub(super) enum Step {
    Exec = 0,
    Setsid,
    Setrlimit,
    Setgroups,
    Setgid,
    Setuid,
    Pdeathsig,
    Chdir,
    Dup2,
    CloseRange,
    KeepFd,
    Cgroup,
    Setpgid,
}

impl Step {
    const ALL: [Step; 13] = [
        Step::Exec,
        Step::Setsid,
        Step::Setrlimit,
        Step::Setgroups,
        Step::Setgid,
        Step::Setuid,
        Step::Pdeathsig,
        Step::Chdir,
        Step::Dup2,
        Step::CloseRange,
        Step::KeepFd,
        Step::Cgroup,
        Step::Setpgid,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Step::Exec => "exec",
            Step::Setsid => "setsid",
            Step::Setrlimit => "setrlimit",
            Step::Setgroups => "setgroups",
            Step::Setgid => "setgid",
            Step::Setuid => "setuid",
            Step::Pdeathsig => "prctl(PR_SET_PDEATHSIG)",
            Step::Chdir => "chdir",
            Step::Dup2 => "dup2",
            Step::CloseRange => "close_range",
            Step::KeepFd => "fcntl(F_SETFD) on a kept fd",
            Step::Cgroup => "moving into the instance cgroup",
            Step::Setpgid => "setpgid",
        }
    }

    pub(super) fn from_report(n: u32) -> &'static str {
        Step::ALL
            .get(n as usize)
            .map(|s| s.as_str())
            .unwrap_or("child setup")
    }
}

fn cstr(s: &[u8], what: &str) -> Result<CString, SpawnError> {
    CString::new(s).map_err(|_| SpawnError::Prepare(format!("{what} contains a NUL byte")))
}

impl Prepared {
    /// Prepares `argv` to run with exactly `env` as its environment.
    pub fn new(argv: &[String], env: &[(String, String)]) -> Result<Prepared, SpawnError> {
        let first = argv
            .first()
            .ok_or_else(|| SpawnError::Prepare("empty command".into()))?;
        let path_var = env
            .iter()
            .find(|(k, _)| k == "PATH")
            .map_or(DEFAULT_PATH, |(_, v)| v.as_str());
        cstr(first.as_bytes(), "command")?;
        let path = match resolve_in_path(first, path_var) {
            Some(found) => Some(cstr(found.as_os_str().as_bytes(), "command")?),
            None => None,
        };
        Ok(Prepared(Arc::new(PreparedInner {
            path,
            path_var: path_var.to_string(),
            argv: argv
                .iter()
                .map(|a| cstr(a.as_bytes(), "an argument"))
                .collect::<Result<_, _>>()?,
            envp: env
                .iter()
                .map(|(k, v)| cstr(format!("{k}={v}").as_bytes(), "an environment variable"))
                .collect::<Result<_, _>>()?,
        })))
    }

    /// `argv[0]` as configured, for messages about this command.
    pub fn program(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(self.0.argv[0].to_bytes())
    }

    /// A plan for one spawn with the defaults: own session, SIGKILL when
    /// forkd dies, forkd's standard fds, no cwd, credentials or limits.
    pub fn plan<'fd>(&self) -> ExecPlan<'fd> {
        let inner = &*self.0;
        let path = match &inner.path {
            Some(p) => p.clone(),
            None => {
                // Not found when prepared: search again (a NUL was ruled out
                // by `new`), else execve reports ENOENT for the bare name.
                let first = inner.argv[0].to_bytes();
                let name = String::from_utf8_lossy(first);
                match resolve_in_path(&name, &inner.path_var) {
                    Some(found) => CString::new(found.as_os_str().as_bytes())
                        .unwrap_or_else(|_| inner.argv[0].clone()),
                    None => inner.argv[0].clone(),
                }
            }
        };
        ExecPlan {
            path,
            command: self.clone(),
            extra_env: Vec::new(),
            cwd: None,
            credentials: None,
            umask: None,
            rlimits: Vec::new(),
            stdin: ChildFd::Inherit,
            stdout: ChildFd::Inherit,
            stderr: ChildFd::Inherit,
            leads: Leads::Session,
            death_signal: Some(libc::SIGKILL),
            keep: Vec::new(),
            cgroup_procs: None,
        }
    }
}

impl<'fd> ExecPlan<'fd> {
    /// A plan that runs `argv` with exactly `env` as its environment.
    pub fn new(argv: &[String], env: &[(String, String)]) -> Result<ExecPlan<'fd>, SpawnError> {
        Ok(Prepared::new(argv, env)?.plan())
    }

    /// Sets `name=value` in this spawn's environment, in place of a
    /// prepared variable or an earlier `add_env` of that name. forkd's own
    /// environment, which the prepared one copies, may well hold it: a
    /// forkd run as a forkd program has `FORKD_INSTANCE`, one run by
    /// inetd `TCPREMOTEIP`, one started from a shell that tried a pool
    /// worker by hand `FORKD_TRANSPORT`.
    pub fn add_env(&mut self, name: &str, value: impl fmt::Display) -> Result<(), SpawnError> {
        use std::io::Write;
        let mut var = Vec::with_capacity(name.len() + 48);
        // Writing into a Vec cannot fail.
        let _ = write!(var, "{name}={value}");
        let var = cstr(&var, "an environment variable")?;
        self.extra_env
            .retain(|e| variable_name(e) != variable_name(&var));
        self.extra_env.push(var);
        Ok(())
    }

    /// The variables added with [`ExecPlan::add_env`], in order.
    pub fn added_env(&self) -> impl Iterator<Item = &std::ffi::CStr> {
        self.extra_env.iter().map(|v| v.as_c_str())
    }

    pub fn set_cwd(&mut self, dir: &Path) -> Result<(), SpawnError> {
        self.cwd = Some(
            CString::new(dir.as_os_str().as_bytes())
                .map_err(|_| SpawnError::Prepare("cwd contains a NUL byte".into()))?,
        );
        Ok(())
    }

    /// Forks and execs the plan. Returns once the child has exec'd (or
    /// failed to), like `std::process::Command::spawn`.
    pub fn spawn(self) -> Result<Pid, SpawnError> {
        let (child, report) = self.spawn_unconfirmed()?;
        match report.wait() {
            None => Ok(child),
            Some(e) => {
                // The child failed before exec and is exiting: reap it here so
                // the caller never sees a pid that did not run the program.
                let _ = nix::sys::wait::waitpid(child, None);
                Err(e)
            }
        }
    }

    /// Forks and starts the exec without waiting for it to succeed: for
    /// per-connection programs, where waiting would serialise the accept
    /// loop behind every exec. The returned [`ExecReport`] tells, once the
    /// child has exited, whether it failed before exec (and why).
    pub fn spawn_unconfirmed(self) -> Result<(Pid, ExecReport), SpawnError> {
        let (report_read, report_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| SpawnError::Pipe(e.into()))?;
        let parent = nix::unistd::getpid();
        let child = self.fork_exec(parent, report_write.as_raw_fd())?;
        drop(report_write);
        Ok((child, ExecReport(report_read)))
    }

    /// Like [`ExecPlan::spawn_unconfirmed`], but a failure before exec is
    /// written to the long-lived `reports` pipe shared by many spawns
    /// instead of a pipe of its own: no pipe2/close/read/close per spawn.
    /// Once the child has exited with 127, [`ReportPipe::failure`] tells
    /// whether it failed before exec. `parent` is the calling process's pid
    /// (for the child's PDEATHSIG re-check).
    pub fn spawn_reporting(self, reports: &ReportPipe, parent: Pid) -> Result<Pid, SpawnError> {
        self.fork_exec(parent, reports.write.as_raw_fd())
    }

    fn fork_exec(self, parent: Pid, report: RawFd) -> Result<Pid, SpawnError> {
        // Pointer arrays are built here: the child must not allocate.
        let argv = null_terminated(&self.command.0.argv);
        // A prepared variable this spawn sets again is left out: execve
        // would pass both, and getenv(3) finds the first, the stale one.
        let added: Vec<&[u8]> = self.extra_env.iter().map(variable_name).collect();
        let prepared = self
            .command
            .0
            .envp
            .iter()
            .filter(|p| !added.iter().any(|name| sets(p, name)));
        let envp = null_terminated(prepared.chain(&self.extra_env));
        let groups: Vec<libc::gid_t> = self
            .credentials
            .as_ref()
            .map(|c| c.groups.iter().map(|g| g.as_raw()).collect())
            .unwrap_or_default();
        let child = super::vfork_exec(|| {
            // SAFETY: we are the vfork-style child of the calling thread;
            // `child_exec` only makes async-signal-safe calls, reads memory
            // prepared before the clone and writes only its own stack.
            unsafe { child_exec(&self, &argv, &envp, &groups, parent.as_raw(), report) }
        })
        .map_err(SpawnError::Fork)?;
        // The child's fds (pipe ends, /dev/null) are dropped with `self`.
        drop(self);
        Ok(child)
    }
}

fn null_terminated<'a>(strings: impl IntoIterator<Item = &'a CString>) -> Vec<*const libc::c_char> {
    let mut ptrs: Vec<*const libc::c_char> = strings.into_iter().map(|s| s.as_ptr()).collect();
    ptrs.push(std::ptr::null());
    ptrs
}

/// The child side of [`ExecPlan::spawn`]. Never returns.
///
/// Every call here is async-signal-safe and nothing allocates: the child of
/// a fork may only do what a signal handler could (signal-safety(7)).
///
/// # Safety
/// Must only be called in a freshly forked child of a single-threaded
/// process, with `argv`/`envp` null-terminated arrays pointing into `plan`.
unsafe fn child_exec(
    plan: &ExecPlan<'_>,
    argv: &[*const libc::c_char],
    envp: &[*const libc::c_char],
    groups: &[libc::gid_t],
    parent: libc::pid_t,
    report: RawFd,
) -> ! {
    // Each failure reports its step and errno, then exits.
    let fail = |step: Step| -> ! {
        // SAFETY: errno location, write(2) and _exit(2) are async-signal-safe;
        // `msg` lives on this stack.
        unsafe {
            let errno = *libc::__errno_location();
            let mut msg = [0u8; REPORT_LEN];
            msg[0..4].copy_from_slice(&libc::getpid().to_ne_bytes());
            msg[4..8].copy_from_slice(&(step as u32).to_ne_bytes());
            msg[8..12].copy_from_slice(&errno.to_ne_bytes());
            libc::write(report, msg.as_ptr().cast(), msg.len());
            libc::_exit(127)
        }
    };
    // 1. Signal dispositions were reset and the mask restored by
    //    `vfork_exec` before we got here.
    // 2. Own session or process group (`Leads`): stop/kill reach the whole
    //    tree and a terminal's Ctrl-C aimed at forkd does not.
    let (failed, step) = match plan.leads {
        // SAFETY: setsid(2) takes no pointers.
        Leads::Session => (unsafe { libc::setsid() } < 0, Step::Setsid),
        // SAFETY: setpgid(2) takes integers only.
        Leads::Group => (unsafe { libc::setpgid(0, 0) } < 0, Step::Setpgid),
    };
    if failed {
        fail(step);
    }
    //    Then into the instance's cgroup, if it has one: "0" is the writing
    //    process (cgroup-v2.rst), and done before exec nothing the program
    //    forks can escape it. Before the privilege drop: the unprivileged
    //    user need not be able to write cgroup.procs.
    if let Some(procs) = &plan.cgroup_procs {
        // SAFETY: write(2) of a static byte to an open fd.
        if unsafe { libc::write(procs.as_raw_fd(), b"0".as_ptr().cast(), 1) } < 0 {
            fail(Step::Cgroup);
        }
    }
    // 3. Resource limits, before dropping privileges (raising needs root).
    for &(resource, value) in &plan.rlimits {
        let limit = libc::rlimit {
            rlim_cur: value,
            rlim_max: value,
        };
        // SAFETY: `limit` is a valid rlimit on this stack.
        if unsafe { libc::setrlimit(resource, &limit) } < 0 {
            fail(Step::Setrlimit);
        }
    }
    // 4. Privilege drop: supplementary groups, then gid, then uid (after
    //    setuid we could no longer change groups).
    if let Some(creds) = &plan.credentials {
        // SAFETY: `groups` was built in the parent and outlives the call.
        if unsafe { libc::setgroups(groups.len(), groups.as_ptr()) } < 0 {
            fail(Step::Setgroups);
        }
        // SAFETY: plain integer arguments.
        if unsafe { libc::setgid(creds.gid.as_raw()) } < 0 {
            fail(Step::Setgid);
        }
        // SAFETY: plain integer arguments.
        if unsafe { libc::setuid(creds.uid.as_raw()) } < 0 {
            fail(Step::Setuid);
        }
    }
    // 5. Die with forkd. After the privilege drop: the kernel clears the
    //    parent-death signal when credentials change (prctl(2)). It is also
    //    lost if forkd died before this line: re-check the parent right after.
    if let Some(sig) = plan.death_signal {
        // SAFETY: integer arguments only.
        if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, sig as libc::c_ulong, 0, 0, 0) } < 0 {
            fail(Step::Pdeathsig);
        }
        // SAFETY: getppid(2) and _exit(2) take no pointers.
        unsafe {
            if libc::getppid() != parent {
                libc::_exit(127);
            }
        }
    }
    // 6. umask and working directory.
    if let Some(mask) = plan.umask {
        // SAFETY: integer argument.
        unsafe { libc::umask(mask as libc::mode_t) };
    }
    if let Some(dir) = &plan.cwd {
        // SAFETY: `dir` is a NUL-terminated string owned by the plan.
        if unsafe { libc::chdir(dir.as_ptr()) } < 0 {
            fail(Step::Chdir);
        }
    }
    // 7. Standard fds, in order (`Stdin` copies the new fd 0). dup2 clears
    //    FD_CLOEXEC on the copy. forkd keeps fds 0-2 open (on /dev/null at
    //    worst), so no other source is itself 0-2.
    for (target, source) in [(0, &plan.stdin), (1, &plan.stdout), (2, &plan.stderr)] {
        let fd = match source {
            ChildFd::Inherit => continue,
            ChildFd::Fd(fd) => fd.as_raw_fd(),
            ChildFd::Borrowed(fd) => fd.as_raw_fd(),
            ChildFd::Stdin if target == 0 => continue,
            ChildFd::Stdin => 0,
        };
        // SAFETY: both are open fds for the duration of the call.
        if unsafe { libc::dup2(fd, target) } < 0 {
            fail(Step::Dup2);
        }
    }
    // 8. Everything else is close-on-exec: forkd opens its fds with
    //    O_CLOEXEC, and close_range(2) covers anything inherited from our
    //    own parent (CLOSE_RANGE_CLOEXEC keeps the report pipe usable).
    //    Before Linux 5.11 (ENOSYS/EINVAL) mark each fd up to the limit.
    // SAFETY: integer arguments only.
    let ranged = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3 as libc::c_uint,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if ranged < 0 {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: `limit` is a valid rlimit on this stack.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } < 0 {
            fail(Step::CloseRange);
        }
        let top = limit.rlim_cur.min(1 << 20) as libc::c_int;
        for fd in 3..top {
            // SAFETY: F_SETFD on any number is harmless (EBADF if closed).
            unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
        }
    }
    //    Then the fds the program is meant to keep lose FD_CLOEXEC (EBADF:
    //    the caller named an fd it had not kept open for the spawn).
    for &fd in &plan.keep {
        // SAFETY: F_SETFD on an fd number is async-signal-safe and harmless.
        if unsafe { libc::fcntl(fd, libc::F_SETFD, 0) } < 0 {
            fail(Step::KeepFd);
        }
    }
    // 9. exec; on return it failed.
    // SAFETY: path, argv and envp are NUL-terminated and built in the parent.
    unsafe { libc::execve(plan.path.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
    fail(Step::Exec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::fd::AsFd;

    fn run(plan: ExecPlan<'_>) {
        let pid = plan.spawn().expect("spawn");
        let status = nix::sys::wait::waitpid(pid, None).expect("waitpid");
        assert_eq!(status, nix::sys::wait::WaitStatus::Exited(pid, 0));
    }

    #[test]
    fn child_starts_with_no_ignored_blocked_or_caught_signal() {
        // This test process ignores SIGPIPE (Rust's runtime), and under
        // `cargo test` signal 32, reserved by glibc: the child must not.
        assert!(super::super::signals_to_reset().contains(libc::SIGPIPE));
        let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        let prepared =
            Prepared::new(&["cat".to_string(), "/proc/self/status".to_string()], &[]).unwrap();
        let mut plan = prepared.plan();
        plan.stdout = ChildFd::Borrowed(write.as_fd());
        run(plan);
        drop(write);
        let mut status = String::new();
        std::fs::File::from(read)
            .read_to_string(&mut status)
            .unwrap();
        for field in ["SigBlk:", "SigIgn:", "SigCgt:"] {
            let line = status.lines().find(|l| l.starts_with(field)).unwrap();
            assert!(
                line.trim_start_matches(field)
                    .trim()
                    .bytes()
                    .all(|b| b == b'0'),
                "{line}"
            );
        }
    }

    #[test]
    fn stdin_socket_doubles_as_stdout_and_env_is_added() {
        let (mine, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        let env = [("KEEP".to_string(), "1".to_string())];
        let prepared = Prepared::new(
            &[
                "sh".to_string(),
                "-c".to_string(),
                "read line; echo \"$line $KEEP $ADDED\"".to_string(),
            ],
            &env,
        )
        .unwrap();
        let mut plan = prepared.plan();
        plan.add_env("ADDED", 42).unwrap();
        plan.stdin = ChildFd::Fd(theirs.into());
        plan.stdout = ChildFd::Stdin;
        let mut mine = mine;
        mine.write_all(b"hello\n").unwrap();
        run(plan);
        let mut reply = String::new();
        mine.read_to_string(&mut reply).unwrap();
        assert_eq!(reply, "hello 1 42\n");
        // The prepared command is unchanged by the spawn's additions.
        assert_eq!(prepared.plan().added_env().count(), 0);
    }

    /// The child's pid, process group and session, as it sees them.
    fn ids_of_child(leads: Leads) -> (i32, i32, i32) {
        let (mine, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        let argv = ["cat".to_string(), "/proc/self/stat".to_string()];
        let mut plan = Prepared::new(&argv, &[]).unwrap().plan();
        plan.leads = leads;
        plan.stdout = ChildFd::Fd(theirs.into());
        run(plan);
        let mut stat = String::new();
        (&mine).read_to_string(&mut stat).unwrap();
        // pid (comm) state ppid pgrp session ...
        let (pid, rest) = stat.split_once(" (").unwrap();
        let after: Vec<&str> = rest.rsplit_once(") ").unwrap().1.split(' ').collect();
        (
            pid.parse().unwrap(),
            after[2].parse().unwrap(),
            after[3].parse().unwrap(),
        )
    }

    #[test]
    fn a_child_leads_a_session_or_only_a_process_group_of_its_own() {
        let ours = nix::unistd::getsid(None).unwrap().as_raw();
        let (pid, group, session) = ids_of_child(Leads::Session);
        assert_eq!((group, session), (pid, pid));
        let (pid, group, session) = ids_of_child(Leads::Group);
        assert_eq!((group, session), (pid, ours));
    }

    #[test]
    fn a_spawns_variable_replaces_a_prepared_one_of_the_same_name() {
        let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        let env = [
            ("FORKD_INSTANCE".to_string(), "stale".to_string()),
            ("FORKD_INSTANCE_X".to_string(), "kept".to_string()),
        ];
        let prepared = Prepared::new(
            &["sh".to_string(), "-c".to_string(), "env | sort".to_string()],
            &env,
        )
        .unwrap();
        let mut plan = prepared.plan();
        plan.add_env("FORKD_INSTANCE", "first").unwrap();
        plan.add_env("FORKD_INSTANCE", 3).unwrap();
        plan.stdout = ChildFd::Borrowed(write.as_fd());
        run(plan);
        drop(write);
        let mut out = String::new();
        std::fs::File::from(read).read_to_string(&mut out).unwrap();
        let ours: Vec<&str> = out
            .lines()
            .filter(|l| l.starts_with("FORKD_INSTANCE"))
            .collect();
        assert_eq!(ours, ["FORKD_INSTANCE=3", "FORKD_INSTANCE_X=kept"]);
    }

    #[test]
    fn a_kept_fd_stays_open_at_its_number_and_a_closed_one_is_named() {
        // Close-on-exec in forkd, as every fd of forkd's is.
        let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        let fd = write.as_raw_fd();
        let script = format!("echo kept >&{fd}");
        let prepared = Prepared::new(&["sh".to_string(), "-c".to_string(), script], &[]).unwrap();
        let mut plan = prepared.plan();
        plan.keep = vec![fd];
        run(plan);
        drop(write);
        let mut out = String::new();
        std::fs::File::from(read).read_to_string(&mut out).unwrap();
        assert_eq!(out, "kept\n");

        let mut plan = prepared.plan();
        plan.keep = vec![999_999];
        match plan.spawn() {
            Err(SpawnError::Child { step, source }) => {
                assert_eq!(step, "fcntl(F_SETFD) on a kept fd");
                assert_eq!(source.raw_os_error(), Some(libc::EBADF));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn command_problems_are_found_as_execvp_would_look() {
        let env = [("PATH".to_string(), "/nonexistent:/bin".to_string())];
        assert_eq!(command_problem("sh", &env, None), None);
        assert_eq!(command_problem("/bin/sh", &env, None), None);
        let missing = command_problem("no-such-forkd-command", &env, None).unwrap();
        assert!(missing.contains("/nonexistent:/bin"), "{missing}");
        let gone = command_problem("/nonexistent/forkd", &env, None).unwrap();
        assert_eq!(gone, "/nonexistent/forkd does not exist");
        let dir = command_problem("/bin", &env, None).unwrap();
        assert!(dir.ends_with("is a directory"), "{dir}");
        let relative = command_problem("./sh", &env, Some(Path::new("/bin")));
        assert_eq!(relative, None, "a relative path starts from cwd");
        // A file with no x bit at all (root too needs one for access(X_OK)).
        let text =
            std::env::temp_dir().join(format!("forkd-not-executable-{}", std::process::id()));
        std::fs::write(&text, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&text, std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .unwrap();
        let problem = command_problem(text.to_str().unwrap(), &env, None);
        let _ = std::fs::remove_file(&text);
        assert_eq!(
            problem,
            Some(format!("{} is not executable", text.display()))
        );
    }

    #[test]
    fn missing_command_is_searched_again_and_reported() {
        let env = [("PATH".to_string(), "/nonexistent".to_string())];
        let prepared = Prepared::new(&["no-such-forkd-command".to_string()], &env).unwrap();
        match prepared.plan().spawn() {
            Err(SpawnError::Child {
                step: "exec",
                source,
            }) => {
                assert_eq!(source.raw_os_error(), Some(libc::ENOENT))
            }
            other => panic!("{other:?}"),
        }
    }
}
