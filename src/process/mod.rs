//! Processes: fork, exec, the child-side setup between them, the double
//! fork, exit descriptions, restart back-off and per-instance cgroups
//! (`cgroup`).
//!
//! Syscalls: fork, execve, setsid, setpgid, prctl, setrlimit, setgroups/setgid/setuid,
//! sigprocmask, sigaction, waitpid, kill/killpg. Invariants: forks happen
//! only from the single-threaded supervisor (or from a forked worker that is
//! itself single-threaded); signals are blocked across every fork so no
//! handler of forkd's runs in a child; a child that does not exec ends in
//! `_exit`, never by returning into the caller's stack. This module never
//! decides *when* to fork or restart: the supervisor does.
//!
//! A fork-mode connection child is a fresh process per connection, and each
//! page of code it runs is a page fault of its own (a fork copies no page
//! tables for the program's text) plus a mapping to tear down at its exit.
//! The code such a child runs is therefore kept together: its functions are
//! marked `#[link_section = ".text.hot.forkd_child"]` (`build.rs` has the
//! linker keep that section whole), and it calls the kernel through
//! `libc::syscall` rather than through wrappers spread over libc's pages.

pub mod backoff;
pub mod cgroup;
pub mod daemonize;
pub mod exec;
pub mod pid_table;
pub mod raw;

use std::convert::Infallible;
use std::fmt;
use std::io;

use nix::sys::signal::{self, SigSet, SigmaskHow, Signal};
use nix::sys::wait::WaitStatus;
use nix::unistd::{ForkResult, Pid};

pub use backoff::Backoff;
pub use exec::{
    ChildFd, Credentials, ExecPlan, ExecReport, Leads, Prepared, ReportPipe, SpawnError,
};

/// Runs `work` in a forked child that does not exec (a built-in handler or
/// worker) and ends it with `_exit(work())`; the parent gets the pid.
/// Signals are blocked across the fork; the child resets to `SIG_DFL` the
/// dispositions forkd's supervisor installed (see [`signals_to_reset`] and
/// [`reset_signals_for_rust`]) and unblocks them before `work`.
///
/// Blocking first closes the window in which a signal delivered to the child
/// would run forkd's handler (and write into forkd's self-pipe).
#[link_section = ".text.hot.forkd_child"]
pub fn fork_worker(work: impl FnOnce() -> i32) -> io::Result<Pid> {
    // Built in the parent (allocation-free to read in the child).
    let resets = signals_to_reset();
    let mut old = SigSet::empty();
    signal::sigprocmask(
        SigmaskHow::SIG_SETMASK,
        Some(&SigSet::all()),
        Some(&mut old),
    )?;
    // SAFETY: forkd's supervisor is single-threaded (no other thread can hold
    // a lock or be mid-allocation), and the child only runs
    // `reset_signals_for_rust` and `work`, then `_exit`s.
    let result = unsafe { nix::unistd::fork() };
    match result {
        Ok(ForkResult::Child) => {
            reset_signals_for_rust(resets);
            run_worker(work)
        }
        Ok(ForkResult::Parent { child }) => {
            signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&old), None)?;
            Ok(child)
        }
        Err(e) => {
            let _ = signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&old), None);
            Err(e.into())
        }
    }
}

/// Like [`fork_worker`], for a child that only execs (or
/// `_exit`s): `clone(CLONE_VM | CLONE_VFORK)` on a stack of its own, as
/// `posix_spawn` does. The child shares forkd's memory until its execve,
/// so nothing is copied (no page tables, no copy-on-write faults) and
/// nothing torn down at the exec; forkd's thread waits meanwhile, which is
/// shorter than copying its address space.
///
/// `child` runs on the borrowed memory of the caller: it must only make
/// async-signal-safe calls, allocate nothing and write nothing but its own
/// stack, then exec or `_exit` (it must never return). Signals are blocked
/// across the clone and reset in the child as for a fork.
pub fn vfork_exec<F: FnOnce() -> Infallible>(child: F) -> io::Result<Pid> {
    /// What the trampoline needs, on the parent's stack (shared, read-only
    /// for the child).
    struct Start<F> {
        child: Option<F>,
        resets: &'static SignalResets,
    }
    extern "C" fn trampoline<G: FnOnce() -> Infallible>(arg: *mut libc::c_void) -> libc::c_int {
        // SAFETY: `arg` is the `Start` on the parent's stack, which stays
        // alive while the parent is suspended (CLONE_VFORK). Taking the
        // closure out writes to it, but the parent never reads it again.
        let start = unsafe { &mut *(arg as *mut Start<G>) };
        reset_signals(start.resets);
        let child = start.child.take().expect("run once");
        #[allow(unreachable_code)]
        match child() {}
    }
    /// `child_exec` needs a few KiB at most (debug builds); 256 KiB leaves
    /// a wide margin and costs only the pages touched.
    const STACK: usize = 256 * 1024;
    const GUARD: usize = 64 * 1024;
    /// An mmap'd stack with an inaccessible guard region below it, so an
    /// overflow faults instead of writing into forkd's memory.
    struct ChildStack(*mut libc::c_void);
    impl ChildStack {
        fn new() -> io::Result<ChildStack> {
            // SAFETY: a fresh anonymous mapping, owned by the result.
            let base = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    GUARD + STACK,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
                    -1,
                    0,
                )
            };
            if base == libc::MAP_FAILED {
                return Err(io::Error::last_os_error());
            }
            let stack = ChildStack(base);
            // SAFETY: the guard is the first GUARD bytes of that mapping.
            if unsafe { libc::mprotect(base, GUARD, libc::PROT_NONE) } < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(stack)
        }
        /// The top (the stack grows down on every Linux port forkd builds for).
        fn top(&self) -> *mut libc::c_void {
            // SAFETY: one past the end of the mapping, page-aligned.
            unsafe { self.0.cast::<u8>().add(GUARD + STACK).cast() }
        }
    }
    impl Drop for ChildStack {
        fn drop(&mut self) {
            // SAFETY: the mapping made in `new`, no longer used by anyone.
            unsafe { libc::munmap(self.0, GUARD + STACK) };
        }
    }
    thread_local! {
        // One stack per thread, reused: CLONE_VFORK suspends this thread
        // until the child has exec'd or exited, so two children never run
        // on it at once.
        static CHILD_STACK: std::cell::OnceCell<ChildStack> =
            const { std::cell::OnceCell::new() };
    }
    let resets = signals_to_reset();
    let mut start = Start {
        child: Some(child),
        resets,
    };
    let mut old = SigSet::empty();
    signal::sigprocmask(
        SigmaskHow::SIG_SETMASK,
        Some(&SigSet::all()),
        Some(&mut old),
    )?;
    let pid = CHILD_STACK.with(|cell| {
        let stack = match cell.get() {
            Some(stack) => stack,
            None => match ChildStack::new() {
                Ok(stack) => cell.get_or_init(|| stack),
                Err(e) => return Err(e),
            },
        };
        // SAFETY: `trampoline` gets a valid `Start`, runs on `stack` (the
        // parent is suspended until the child execs or exits), and never
        // returns into this frame.
        Ok(unsafe {
            libc::clone(
                trampoline::<F>,
                stack.top(),
                libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
                &mut start as *mut Start<F> as *mut libc::c_void,
            )
        })
    });
    let error = io::Error::last_os_error();
    let _ = signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&old), None);
    match pid? {
        pid if pid < 0 => Err(error),
        pid => Ok(Pid::from_raw(pid)),
    }
}

/// Signals whose disposition a new child must put back to `SIG_DFL`, in a
/// fixed-size array so the child reads it without allocating.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignalResets {
    signals: [libc::c_int; SignalResets::CAPACITY],
    len: usize,
}

impl SignalResets {
    /// Every signal number Linux has (1..=64) fits.
    const CAPACITY: usize = 64;

    const EMPTY: SignalResets = SignalResets {
        signals: [0; SignalResets::CAPACITY],
        len: 0,
    };

    #[link_section = ".text.hot.forkd_child"]
    pub fn contains(&self, sig: libc::c_int) -> bool {
        self.entries().contains(&sig)
    }

    #[link_section = ".text.hot.forkd_child"]
    fn push(&mut self, sig: libc::c_int) {
        if !self.contains(sig) && self.len < Self::CAPACITY {
            self.signals[self.len] = sig;
            self.len += 1;
        }
    }

    #[link_section = ".text.hot.forkd_child"]
    fn entries(&self) -> &[libc::c_int] {
        &self.signals[..self.len]
    }

    /// The signal numbers, for messages and tests.
    pub fn numbers(&self) -> impl Iterator<Item = libc::c_int> + '_ {
        self.entries().iter().copied()
    }
}

/// Signals forkd itself catches, ignores or reads from a signalfd, reset
/// in every child even if the snapshot was taken before the supervisor set
/// them up: its signal-hook handlers (TERM, INT, QUIT, HUP), SIGCHLD (put
/// back to `SIG_DFL` at start, in case forkd's parent ignored it) and
/// SIGPIPE (ignored by Rust's runtime).
const ALWAYS_RESET: [libc::c_int; 6] = [
    libc::SIGCHLD,
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGQUIT,
    libc::SIGHUP,
    libc::SIGPIPE,
];

/// The signals not at `SIG_DFL` in this process right now (handlers: forkd's
/// own, Rust's SIGSEGV/SIGBUS stack-overflow handler; `SIG_IGN`: SIGPIPE,
/// and whatever forkd's own parent ignored, which would survive exec),
/// plus [`ALWAYS_RESET`]. One raw `rt_sigaction` query per signal number,
/// real-time ones included (glibc's wrapper refuses the numbers it reserves
/// for itself). Those reserved numbers are listed only when ignored: their
/// handlers are glibc's own (and exec resets them).
pub fn scan_signal_dispositions() -> SignalResets {
    let mut resets = SignalResets::EMPTY;
    for sig in ALWAYS_RESET {
        resets.push(sig);
    }
    let rtmin = libc::SIGRTMIN();
    for sig in 1..=libc::SIGRTMAX() {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        let Ok(handler) = raw::disposition(sig) else {
            continue;
        };
        let reserved = sig > 31 && sig < rtmin;
        let listed = if reserved {
            handler == libc::SIG_IGN
        } else {
            handler != libc::SIG_DFL
        };
        if listed {
            resets.push(sig);
        }
    }
    resets
}

/// The cached [`scan_signal_dispositions`], taken at the first fork.
/// forkd installs no handler and ignores no signal after start-up except
/// the supervisor's, which [`ALWAYS_RESET`] covers whenever the snapshot is
/// taken. Debug builds re-scan at every fork and check the cache still
/// covers every non-default disposition, so the integration tests catch a
/// handler added later.
pub fn signals_to_reset() -> &'static SignalResets {
    static RESETS: std::sync::OnceLock<SignalResets> = std::sync::OnceLock::new();
    let resets = RESETS.get_or_init(scan_signal_dispositions);
    if cfg!(debug_assertions) {
        let now = scan_signal_dispositions();
        debug_assert!(
            now.numbers().all(|s| resets.contains(s)),
            "a signal disposition changed after the first fork: {:?} not in {:?}",
            now.numbers().collect::<Vec<_>>(),
            resets.numbers().collect::<Vec<_>>()
        );
    }
    resets
}

/// Dispositions a child that runs Rust code keeps from forkd: SIGPIPE
/// ignored (a hung-up peer is an EPIPE error, not death), Rust's own
/// SIGSEGV/SIGBUS stack-overflow reporting, and SIGCHLD, which forkd leaves
/// at `SIG_DFL` (it reads it from a signalfd). Skipping their resets saves
/// a fifth of the syscalls of each fork-mode connection child.
const KEPT_BY_RUST_CHILDREN: [libc::c_int; 4] =
    [libc::SIGPIPE, libc::SIGSEGV, libc::SIGBUS, libc::SIGCHLD];

/// [`reset_signals`] for a child that never execs: forkd's own handlers
/// (TERM, INT, QUIT, HUP and any other) go back to `SIG_DFL`; see
/// [`KEPT_BY_RUST_CHILDREN`] for what stays.
#[link_section = ".text.hot.forkd_child"]
fn reset_signals_for_rust(resets: &SignalResets) {
    reset_signals_but(resets, &KEPT_BY_RUST_CHILDREN);
}

/// In a new child: the listed dispositions back to `SIG_DFL` (handlers are
/// forkd's; ignored signals would survive exec) and an empty mask. Every
/// other signal is already at `SIG_DFL`. Raw syscalls on memory built in
/// the parent: async-signal-safe, no allocation.
#[link_section = ".text.hot.forkd_child"]
fn reset_signals(resets: &SignalResets) {
    reset_signals_but(resets, &[]);
}

/// [`reset_signals`], leaving the dispositions of `kept` as they are.
#[link_section = ".text.hot.forkd_child"]
fn reset_signals_but(resets: &SignalResets, kept: &[libc::c_int]) {
    for &sig in resets.entries() {
        if !kept.contains(&sig) {
            raw::default_disposition(sig);
        }
    }
    raw::unblock_all_signals();
}

/// The child half of [`fork_worker`]. A panic must not unwind into the
/// supervisor's frames (their destructors unlink the control socket and
/// pidfile): unwinding out of here drops `guard`, which ends the child with
/// exit code 70 (EX_SOFTWARE). A guard rather than `catch_unwind`, whose
/// out-of-line landing code would be more pages for every child to fault in.
/// The unwinder starts only because its search finds a frame that would
/// catch further up the child's copy of the stack (std's `lang_start`, or a
/// test thread's start); without one a panic aborts (SIGABRT) before any
/// cleanup, which is still no unwinding into the supervisor.
/// SIGPIPE stays ignored, as in forkd (Rust's runtime ignores it at start):
/// a peer that hangs up is an EPIPE error, not death.
#[link_section = ".text.hot.forkd_child"]
fn run_worker(work: impl FnOnce() -> i32) -> ! {
    struct ExitOnUnwind;
    impl Drop for ExitOnUnwind {
        fn drop(&mut self) {
            raw::exit(70)
        }
    }
    let guard = ExitOnUnwind;
    let code = work();
    std::mem::forget(guard);
    raw::exit(code)
}

/// Takes what `list` holds, writing nothing when it is empty: after a
/// fork every page the supervisor writes is a copy-on-write fault, and even
/// an empty `drain` or `mem::take` writes the `Vec`. For the lists the loop
/// empties every turn (in fork mode, once per connection).
pub fn take_unless_empty<T>(list: &mut Vec<T>) -> Vec<T> {
    if list.is_empty() {
        Vec::new()
    } else {
        std::mem::take(list)
    }
}

/// Opens /dev/null onto any of fds 0, 1, 2 that forkd was started without,
/// so no pipe, socket or file of forkd's later lands on a standard fd number
/// (and is then clobbered by a child's `dup2`, or written to by `eprintln!`).
/// Call first thing in `main`, before any other fd is opened.
pub fn ensure_standard_fds() -> io::Result<()> {
    use std::os::fd::IntoRawFd;
    for _ in 0..3 {
        let null = std::fs::File::options()
            .read(true)
            .write(true)
            .open("/dev/null")?;
        // open(2) returns the lowest free number: a standard one while any is closed.
        let fd = null.into_raw_fd();
        if fd > 2 {
            // SAFETY: `fd` was just opened above and is owned by nobody else.
            drop(unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) });
            break;
        }
        // Below 3: it now *is* stdin/stdout/stderr, kept open for good.
    }
    Ok(())
}

/// How a child ended, in the words an operator reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitKind {
    Code(i32),
    Signal(i32),
}

impl ExitKind {
    /// `None` for stops/continues, which are not exits.
    pub fn from_wait(status: WaitStatus) -> Option<(Pid, ExitKind)> {
        match status {
            WaitStatus::Exited(pid, code) => Some((pid, ExitKind::Code(code))),
            WaitStatus::Signaled(pid, sig, _) => Some((pid, ExitKind::Signal(sig as i32))),
            _ => None,
        }
    }

    pub fn success(self) -> bool {
        self == ExitKind::Code(0)
    }

    /// The exit as a log line about an exit forkd did not ask for reads:
    /// a SIGKILL nobody in forkd sent is most often the kernel's OOM
    /// killer, so it gets gunicorn's hint. A SIGKILL forkd sent itself
    /// (stop_timeout ran out, a second SIGTERM, SIGQUIT) is displayed
    /// plainly, with [`ExitKind`]'s own `Display`.
    pub fn unexpected(self) -> Unexpected {
        Unexpected(self)
    }
}

impl fmt::Display for ExitKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ExitKind::Code(c) => write!(f, "exited with code {c}"),
            ExitKind::Signal(s) => write!(f, "killed by {}", signal_name(s)),
        }
    }
}

/// An exit forkd did not expect, for the log: see [`ExitKind::unexpected`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unexpected(ExitKind);

impl fmt::Display for Unexpected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        if self.0 == ExitKind::Signal(libc::SIGKILL) {
            write!(f, " (perhaps out of memory?)")?;
        }
        Ok(())
    }
}

/// `SIGTERM` for 15, `signal 99` for anything unknown.
pub fn signal_name(sig: i32) -> String {
    Signal::try_from(sig)
        .map(|s| s.as_str().to_string())
        .unwrap_or_else(|_| format!("signal {sig}"))
}

/// A signal as operators write it: `USR1`, `SIGUSR1`, `usr1` or `10`.
/// The one parser behind `stop_signal` and `forkctl signal`.
pub fn parse_signal(text: &str) -> Option<Signal> {
    if let Ok(n) = text.parse::<i32>() {
        return Signal::try_from(n).ok();
    }
    let upper = text.to_ascii_uppercase();
    let full = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    full.parse().ok()
}

/// One pid that waitpid(-1, WNOHANG) hands back now, with how it ended;
/// `None` once no exited child remains. SIGCHLD coalesces, so call it until
/// `None` (no Vec of exits: the loop must not allocate per connection).
pub fn reap_one() -> Option<(Pid, ExitKind)> {
    loop {
        match nix::sys::wait::waitpid(None, Some(nix::sys::wait::WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(nix::errno::Errno::ECHILD) => return None,
            Ok(status) => {
                if let Some(exit) = ExitKind::from_wait(status) {
                    return Some(exit);
                }
            }
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return None,
        }
    }
}

/// Signals a whole process group (the child leads its own session).
/// A group that is already gone is not an error.
pub fn signal_group(pgid: Pid, sig: Signal) -> io::Result<()> {
    match signal::killpg(pgid, sig) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// A pidfd of `pid` (readable once it has exited), or `None` where the
/// kernel has no pidfd_open(2).
pub fn pidfd_open(pid: Pid) -> Option<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1;
    // it touches no memory of ours.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
    let fd = i32::try_from(fd).ok().filter(|fd| *fd >= 0)?;
    // SAFETY: `fd` was just returned by the kernel and is owned by no one else.
    Some(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

/// The fields of /proc/PID/stat that forkd reads.
#[derive(Debug, Clone, Copy)]
pub struct ProcStat {
    pub state: char,
    pub parent: Pid,
    /// The controlling terminal's device number; 0 for none.
    pub tty: i64,
}

/// `pid`'s /proc/PID/stat, or `None` when it is gone or unreadable.
pub fn proc_stat(pid: Pid) -> Option<ProcStat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // comm may hold spaces and parentheses: the fields follow the last ')'.
    // state ppid pgrp session tty_nr ...
    let mut fields = text.get(text.rfind(')')? + 2..)?.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let parent = Pid::from_raw(fields.next()?.parse().ok()?);
    let tty = fields.nth(2)?.parse().ok()?;
    Some(ProcStat { state, parent, tty })
}

/// Whether forkd has a controlling terminal (run in the foreground of a
/// shell); none (under systemd, as a daemon, or started in a new session)
/// when its stat cannot be read.
pub fn has_controlling_terminal() -> bool {
    proc_stat(nix::unistd::getpid()).is_some_and(|s| s.tty != 0)
}

/// Makes forkd the reaper of orphaned descendants (PR_SET_CHILD_SUBREAPER),
/// so grandchildren that double-fork are reaped by the loop too.
pub fn become_subreaper() -> io::Result<()> {
    nix::sys::prctl::set_child_subreaper(true).map_err(io::Error::from)
}

/// Resolves `user`/`group` names (or numbers) to credentials, with the
/// user's supplementary groups.
pub fn resolve_credentials(
    user: Option<&str>,
    group: Option<&str>,
) -> Result<Option<Credentials>, String> {
    use nix::unistd::{Gid, Group, Uid, User};
    if user.is_none() && group.is_none() {
        return Ok(None);
    }
    let user = match user {
        None => None,
        Some(name) => Some(match name.parse::<u32>() {
            Ok(uid) => User::from_uid(Uid::from_raw(uid))
                .map_err(|e| format!("looking up uid {uid}: {e}"))?
                .ok_or_else(|| format!("no user with uid {uid}"))?,
            Err(_) => User::from_name(name)
                .map_err(|e| format!("looking up user {name:?}: {e}"))?
                .ok_or_else(|| format!("no user named {name:?}"))?,
        }),
    };
    let gid = match group {
        Some(name) => match name.parse::<u32>() {
            Ok(gid) => Gid::from_raw(gid),
            Err(_) => {
                Group::from_name(name)
                    .map_err(|e| format!("looking up group {name:?}: {e}"))?
                    .ok_or_else(|| format!("no group named {name:?}"))?
                    .gid
            }
        },
        None => user.as_ref().map(|u| u.gid).unwrap_or_else(Gid::current),
    };
    let uid = user.as_ref().map(|u| u.uid).unwrap_or_else(Uid::current);
    let groups = match &user {
        Some(u) => {
            let cname = std::ffi::CString::new(u.name.as_str())
                .map_err(|_| "user name contains a NUL byte".to_string())?;
            nix::unistd::getgrouplist(&cname, gid)
                .map_err(|e| format!("listing the groups of {:?}: {e}", u.name))?
        }
        None => vec![gid],
    };
    Ok(Some(Credentials { uid, gid, groups }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_by_name_or_number() {
        assert_eq!(parse_signal("USR1"), Some(Signal::SIGUSR1));
        assert_eq!(parse_signal("sighup"), Some(Signal::SIGHUP));
        assert_eq!(parse_signal("15"), Some(Signal::SIGTERM));
        assert_eq!(parse_signal("NOPE"), None);
        assert_eq!(parse_signal("999"), None);
    }

    #[test]
    fn only_an_unexpected_sigkill_hints_at_the_oom_killer() {
        let kill = ExitKind::Signal(libc::SIGKILL);
        assert_eq!(kill.to_string(), "killed by SIGKILL");
        assert_eq!(
            kill.unexpected().to_string(),
            "killed by SIGKILL (perhaps out of memory?)"
        );
        let term = ExitKind::Signal(libc::SIGTERM);
        assert_eq!(term.unexpected().to_string(), "killed by SIGTERM");
        assert_eq!(
            ExitKind::Code(3).unexpected().to_string(),
            "exited with code 3"
        );
    }

    #[test]
    fn scan_lists_ignored_and_caught_signals_only() {
        // Rust's runtime ignores SIGPIPE and catches SIGSEGV (stack overflow).
        let resets = scan_signal_dispositions();
        assert!(resets.contains(libc::SIGPIPE));
        assert!(resets.contains(libc::SIGSEGV));
        assert!(!resets.contains(libc::SIGUSR1));
        assert!(!resets.contains(libc::SIGKILL));
        // The supervisor's signals are listed even before it installs them.
        assert!(ALWAYS_RESET.iter().all(|&s| resets.contains(s)));
    }

    fn exit_code(pid: Pid) -> i32 {
        match nix::sys::wait::waitpid(pid, None).unwrap() {
            WaitStatus::Exited(_, code) => code,
            other => panic!("{pid}: {other:?}"),
        }
    }

    #[test]
    fn a_worker_ends_with_its_code_and_a_panic_ends_it_with_70() {
        let done = fork_worker(|| 3).unwrap();
        // Unwinding into this test's frames would run the rest of the test
        // harness in the child instead of exiting 70.
        let panicked = fork_worker(|| panic!("a worker's bug (this panic is expected)")).unwrap();
        assert_eq!(exit_code(done), 3);
        assert_eq!(exit_code(panicked), 70);
    }

    #[test]
    fn a_worker_starts_with_no_signal_blocked_and_sigterm_at_its_default() {
        // As the supervisor's own handler would be, SIGTERM is not at its
        // default here while the worker is forked (ignored: harmless to the
        // other tests of this process meanwhile, none of which starts a
        // program that would inherit it).
        // SAFETY: SIG_IGN runs no code.
        let before = unsafe { libc::signal(libc::SIGTERM, libc::SIG_IGN) };
        let pid = fork_worker(|| {
            let mut mask = SigSet::all();
            let _ = signal::sigprocmask(SigmaskHow::SIG_BLOCK, None, Some(&mut mask));
            // SAFETY: a null `act` only queries into `old` on this stack.
            let term = unsafe {
                let mut old: libc::sigaction = std::mem::zeroed();
                libc::sigaction(libc::SIGTERM, std::ptr::null(), &mut old);
                old.sa_sigaction
            };
            let blocked = (1..32).filter(|&s| Signal::try_from(s).is_ok_and(|s| mask.contains(s)));
            i32::from(blocked.count() > 0) + 2 * i32::from(term != libc::SIG_DFL)
        })
        .unwrap();
        // SAFETY: puts back what was there.
        unsafe { libc::signal(libc::SIGTERM, before) };
        assert_eq!(
            exit_code(pid),
            0,
            "1: a signal blocked, 2: SIGTERM not at SIG_DFL"
        );
    }
}
