//! The `exec` handler runs a program per connection, inetd style: the
//! socket is its stdin and stdout, and it sees the UCSPI environment.

mod common;

use std::io::{BufRead, Read, Write};
use std::net::Shutdown;

use common::*;

fn start(mode: &str, command: &str) -> (Scratch, Forkd, String) {
    let scratch = Scratch::new("exec");
    let config = service_config(
        &scratch,
        &format!("listen = [\"tcp://127.0.0.1:0\"]\nmode = \"{mode}\"\nworkers = 2\nhandler = \"exec\"\ncommand = {command}"),
    );
    let forkd = Forkd::start(&config);
    let addr = bound_address(&forkd.log, "echo", "tcp://");
    (scratch, forkd, addr)
}

fn send_and_read_all(addr: &str, input: &[u8]) -> String {
    let mut s = tcp(addr);
    s.write_all(input).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out)
        .expect("program output until EOF");
    out
}

#[test]
fn exec_cat_echoes_in_fork_and_prefork_modes() {
    for mode in ["fork", "prefork"] {
        let (_s, forkd, addr) = start(mode, "[\"/bin/cat\"]");
        let got = concurrently(8, |i| {
            let line = format!("cat line {i}\n");
            assert_eq!(send_and_read_all(&addr, line.as_bytes()), line);
            1
        });
        assert_eq!(got, 8);
        wait_until(
            "exec children are reaped",
            std::time::Duration::from_secs(5),
            || zombies_below(forkd.pid()).is_empty(),
        );
    }
}

#[test]
fn exec_program_sees_the_ucspi_environment() {
    let (_s, _forkd, addr) = start(
        "fork",
        "[\"/bin/sh\", \"-c\", \"echo $PROTO $TCPREMOTEIP $TCPREMOTEPORT $TCPLOCALIP $TCPLOCALPORT\"]",
    );
    let mut s = tcp(&addr);
    let client_port = s.local_addr().unwrap().port();
    let server_port = s.peer_addr().unwrap().port();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert_eq!(
        out.trim(),
        format!("TCP 127.0.0.1 {client_port} 127.0.0.1 {server_port}")
    );
}

/// Kills a pid the test learnt of when it ends, passed or failed.
struct KillOnDrop(i32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

/// Starts forkd under `launcher` with an exec service whose program
/// leaves a `sleep` running and prints its own pid and the sleep's.
/// Returns forkd, the program's pid and the sleep's (killed at drop).
fn start_with_sleeper(scratch: &Scratch, launcher: &[&str]) -> (Forkd, i32, KillOnDrop) {
    start_with_sleeper_in(scratch, launcher, "mode = \"fork\"\ndrain_timeout = \"1s\"")
}

fn start_with_sleeper_in(
    scratch: &Scratch,
    launcher: &[&str],
    keys: &str,
) -> (Forkd, i32, KillOnDrop) {
    let config = service_config(
        scratch,
        &format!("listen = [\"tcp://127.0.0.1:0\"]\n{keys}\nhandler = \"exec\"\ncommand = [\"/bin/sh\", \"-c\", \"sleep 1000 & echo $$ $!; wait\"]"),
    );
    let forkd = start_forkd_under(launcher, &config, &[]);
    let addr = bound_address(&forkd.log, "echo", "tcp://");
    let mut line = String::new();
    std::io::BufReader::new(tcp(&addr))
        .read_line(&mut line)
        .expect("the program's pids");
    let pids: Vec<i32> = line
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    (forkd, pids[0], KillOnDrop(pids[1]))
}

fn group_and_session(pid: i32) -> (i32, i32) {
    let pid = nix::unistd::Pid::from_raw(pid);
    (
        nix::unistd::getpgid(Some(pid)).unwrap().as_raw(),
        nix::unistd::getsid(Some(pid)).unwrap().as_raw(),
    )
}

/// A forkd with no controlling terminal (started in a session of its own,
/// as systemd does): each connection's program leads a process group in
/// forkd's session, and in fork mode forkd's stop reaches everything the
/// live program started (here a `sleep` it left running).
#[test]
fn a_stop_signals_the_live_connection_programs_process_group() {
    let scratch = Scratch::new("exec-group");
    let (mut forkd, program, sleeper) = start_with_sleeper(&scratch, &["setsid"]);
    let (_, forkd_session) = group_and_session(forkd.pid());
    assert_eq!(
        forkd_session,
        forkd.pid(),
        "setsid ran forkd in its own session"
    );
    assert_eq!(group_and_session(program), (program, forkd_session));
    assert_eq!(group_and_session(sleeper.0), (program, forkd_session));
    forkd.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(forkd
        .wait_exit(std::time::Duration::from_secs(10))
        .is_some());
    wait_until(
        "the sleep the program started is gone",
        std::time::Duration::from_secs(5),
        || !alive(sleeper.0),
    );
}

/// A forkd run from a terminal (here a pseudo-terminal it controls): each
/// connection's program leads a session of its own, so it is no
/// background job of that terminal (SIGTTOU, SIGTTIN).
#[test]
fn a_forkd_with_a_controlling_terminal_gives_each_program_a_session() {
    let scratch = Scratch::new("exec-tty");
    // setsid, then the new pty as controlling terminal, then exec forkd in
    // this pid; the master stays open in forkd so the terminal stays up.
    let launcher = [
        "python3",
        "-c",
        "import fcntl, os, sys, termios\n\
         m, s = os.openpty()\n\
         os.set_inheritable(m, True)\n\
         os.setsid()\n\
         fcntl.ioctl(s, termios.TIOCSCTTY, 0)\n\
         os.execv(sys.argv[1], sys.argv[1:])",
    ];
    let (mut forkd, program, sleeper) = start_with_sleeper(&scratch, &launcher);
    let tty = forkd::process::proc_stat(nix::unistd::Pid::from_raw(forkd.pid()))
        .unwrap()
        .tty;
    assert_ne!(tty, 0, "forkd runs with a controlling terminal");
    assert_eq!(group_and_session(program), (program, program));
    assert_eq!(group_and_session(sleeper.0).0, program);
    forkd.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(forkd
        .wait_exit(std::time::Duration::from_secs(10))
        .is_some());
}

/// In prefork mode the worker that runs the program passes a drain on to
/// the program's process group: a stop ends the program and what it
/// started at once, well before a long `drain_timeout` (whose SIGKILL to
/// the worker would end only the program, by its parent-death signal).
#[test]
fn a_prefork_workers_drain_reaches_the_connection_programs_group() {
    let scratch = Scratch::new("exec-prefork-drain");
    let (mut forkd, program, sleeper) = start_with_sleeper_in(
        &scratch,
        &["setsid"],
        "mode = \"prefork\"\nworkers = 1\ndrain_timeout = \"60s\"",
    );
    assert_eq!(group_and_session(sleeper.0).0, program);
    forkd.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(
        forkd
            .wait_exit(std::time::Duration::from_secs(15))
            .is_some(),
        "forkd stopped well before drain_timeout"
    );
    wait_until(
        "the sleep the program started is gone",
        std::time::Duration::from_secs(5),
        || !alive(sleeper.0),
    );
}
