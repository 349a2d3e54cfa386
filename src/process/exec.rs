//! fork + exec with everything the child needs prepared in the parent.
//!
//! An [`ExecPlan`] holds the argv, envp, credentials, limits and fd map as
//! C-ready values built before `fork(2)`. The child then runs
//! [`child_exec`], the only code in forkd that runs between fork and exec:
//! it calls async-signal-safe syscalls only, never allocates, never logs,
//! never unwinds, and ends in `execve(2)` or `_exit(2)`. If a step fails the
//! child writes `(step, errno)` to a close-on-exec pipe, so the parent
//! reports "exec failed: No such file or directory" instead of a bare 127.

use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::unistd::{Gid, Pid, Uid};

/// Where one of the child's standard fds comes from.
#[derive(Debug)]
pub enum ChildFd {
    /// Keep forkd's own fd.
    Inherit,
    /// `dup2` this fd (owned by the plan until the spawn returns).
    Fd(OwnedFd),
}

/// A privilege drop, resolved from names in the parent.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub uid: Uid,
    pub gid: Gid,
    pub groups: Vec<Gid>,
}

/// Everything `child_exec` needs, built in the parent.
#[derive(Debug)]
pub struct ExecPlan {
    /// Path given to `execve`: `argv[0]` resolved against `PATH`.
    path: CString,
    argv: Vec<CString>,
    envp: Vec<CString>,
    cwd: Option<CString>,
    pub credentials: Option<Credentials>,
    pub umask: Option<u32>,
    /// `(resource, value)` pairs; the value sets soft and hard limits.
    pub rlimits: Vec<(libc::__rlimit_resource_t, u64)>,
    pub stdin: ChildFd,
    pub stdout: ChildFd,
    pub stderr: ChildFd,
    /// Start a new session (and process group) so the whole tree can be signalled.
    pub new_session: bool,
    /// Signal the child gets when forkd dies (PR_SET_PDEATHSIG).
    pub death_signal: Option<libc::c_int>,
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
    #[error("{0}")]
    Prepare(String),
}

/// The steps of [`child_exec`] that can fail, reported to the parent by number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
enum Step {
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
}

impl Step {
    const ALL: [Step; 10] = [
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
        }
    }

    fn from_report(n: u32) -> &'static str {
        Step::ALL
            .get(n as usize)
            .map(|s| s.as_str())
            .unwrap_or("child setup")
    }
}

impl ExecPlan {
    /// A plan that runs `argv` with exactly `env` as its environment.
    pub fn new(argv: &[String], env: &[(String, String)]) -> Result<ExecPlan, SpawnError> {
        let cstr = |s: &[u8], what: &str| {
            CString::new(s).map_err(|_| SpawnError::Prepare(format!("{what} contains a NUL byte")))
        };
        let first = argv
            .first()
            .ok_or_else(|| SpawnError::Prepare("empty command".into()))?;
        let path_var = env
            .iter()
            .find(|(k, _)| k == "PATH")
            .map(|(_, v)| v.as_str())
            .unwrap_or("/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin");
        let resolved = resolve_in_path(first, path_var);
        Ok(ExecPlan {
            path: cstr(resolved.as_os_str().as_bytes(), "command")?,
            argv: argv
                .iter()
                .map(|a| cstr(a.as_bytes(), "an argument"))
                .collect::<Result<_, _>>()?,
            envp: env
                .iter()
                .map(|(k, v)| cstr(format!("{k}={v}").as_bytes(), "an environment variable"))
                .collect::<Result<_, _>>()?,
            cwd: None,
            credentials: None,
            umask: None,
            rlimits: Vec::new(),
            stdin: ChildFd::Inherit,
            stdout: ChildFd::Inherit,
            stderr: ChildFd::Inherit,
            new_session: true,
            death_signal: Some(libc::SIGKILL),
        })
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
            .map_err(|e| SpawnError::Fork(e.into()))?;
        // Pointer arrays are built here: the child must not allocate.
        let argv = null_terminated(&self.argv);
        let envp = null_terminated(&self.envp);
        let groups: Vec<libc::gid_t> = self
            .credentials
            .as_ref()
            .map(|c| c.groups.iter().map(|g| g.as_raw()).collect())
            .unwrap_or_default();
        let parent = nix::unistd::getpid();
        let child = super::fork_with_signals_blocked(|| {
            // SAFETY: we are the freshly forked child of a single-threaded
            // process; `child_exec` only makes async-signal-safe calls on
            // memory prepared before the fork.
            unsafe {
                child_exec(
                    &self,
                    &argv,
                    &envp,
                    &groups,
                    parent.as_raw(),
                    report_write.as_raw_fd(),
                )
            }
        })
        .map_err(SpawnError::Fork)?;
        drop(report_write);
        // The child's fds (pipe ends, /dev/null) are dropped with `self`.
        drop(self);
        Ok((child, ExecReport(report_read)))
    }
}

/// The read end of a spawn's close-on-exec report pipe: EOF means the exec
/// happened; 8 bytes are the failed step and its errno.
#[derive(Debug)]
pub struct ExecReport(OwnedFd);

impl ExecReport {
    /// Blocks until the child has exec'd or failed; `None` if it exec'd.
    pub fn wait(self) -> Option<SpawnError> {
        let mut report = [0u8; 8];
        let mut got = 0;
        while got < report.len() {
            match nix::unistd::read(&self.0, &mut report[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Some(SpawnError::Fork(e.into())),
            }
        }
        if got == 0 {
            return None;
        }
        let step = u32::from_ne_bytes(report[0..4].try_into().expect("4 bytes"));
        let errno = i32::from_ne_bytes(report[4..8].try_into().expect("4 bytes"));
        Some(SpawnError::Child {
            step: Step::from_report(step),
            source: io::Error::from_raw_os_error(errno),
        })
    }
}

fn null_terminated(strings: &[CString]) -> Vec<*const libc::c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

/// `execvp`'s search, done in the parent: the first executable file named
/// `name` in `path_var`, or `name` itself (exec then reports ENOENT).
fn resolve_in_path(name: &str, path_var: &str) -> std::path::PathBuf {
    if name.contains('/') {
        return name.into();
    }
    for dir in path_var.split(':').filter(|d| !d.is_empty()) {
        let candidate = Path::new(dir).join(OsStr::new(name));
        if nix::unistd::access(&candidate, nix::unistd::AccessFlags::X_OK).is_ok()
            && candidate.is_file()
        {
            return candidate;
        }
    }
    name.into()
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
    plan: &ExecPlan,
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
            let mut msg = [0u8; 8];
            msg[0..4].copy_from_slice(&(step as u32).to_ne_bytes());
            msg[4..8].copy_from_slice(&errno.to_ne_bytes());
            libc::write(report, msg.as_ptr().cast(), msg.len());
            libc::_exit(127)
        }
    };
    // 1. Signal dispositions were reset and the mask restored by
    //    `fork_with_signals_blocked` before we got here.
    // 2. Own session and process group: stop/kill reach the whole tree and a
    //    terminal's Ctrl-C aimed at forkd does not.
    // SAFETY: setsid(2) takes no pointers.
    if plan.new_session && unsafe { libc::setsid() } < 0 {
        fail(Step::Setsid);
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
    // 7. Standard fds. dup2 clears FD_CLOEXEC on the copy. forkd keeps fds
    //    0-2 open (on /dev/null at worst), so no source is itself 0-2.
    for (target, source) in [(0, &plan.stdin), (1, &plan.stdout), (2, &plan.stderr)] {
        if let ChildFd::Fd(fd) = source {
            // SAFETY: both are open fds for the duration of the call.
            if unsafe { libc::dup2(fd.as_raw_fd(), target) } < 0 {
                fail(Step::Dup2);
            }
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
    // 9. exec; on return it failed.
    // SAFETY: path, argv and envp are NUL-terminated and built in the parent.
    unsafe { libc::execve(plan.path.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
    fail(Step::Exec)
}

/// The environment forkd passes on: its own, minus variables that speak to
/// forkd alone (systemd's), plus `extra`.
pub fn child_environment<'a>(
    extra: impl IntoIterator<Item = (&'a String, &'a String)>,
) -> Vec<(String, String)> {
    const PRIVATE: [&str; 6] = [
        "NOTIFY_SOCKET",
        "LISTEN_PID",
        "LISTEN_FDS",
        "LISTEN_FDNAMES",
        "WATCHDOG_PID",
        "WATCHDOG_USEC",
    ];
    let mut env: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| !PRIVATE.contains(&k.as_str()))
        .collect();
    for (k, v) in extra {
        env.retain(|(ek, _)| ek != k);
        env.push((k.clone(), v.clone()));
    }
    env
}
