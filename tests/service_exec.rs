//! The `exec` handler runs a program per connection, inetd style: the
//! socket is its stdin and stdout, and it sees the UCSPI environment.

mod common;

use std::io::{Read, Write};
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

/// A per-connection program leads a process group of its own, in forkd's
/// session: forkd's stop reaches what it started (here a `sleep` it left
/// running), and forkd's own group is not the program's.
#[test]
fn a_stop_reaches_everything_the_connection_program_started() {
    let scratch = Scratch::new("exec-group");
    let config = service_config(
        &scratch,
        "listen = [\"tcp://127.0.0.1:0\"]\nmode = \"fork\"\nhandler = \"exec\"\ndrain_timeout = \"1s\"\ncommand = [\"/bin/sh\", \"-c\", \"sleep 1000 & echo $$ $!; wait\"]",
    );
    let mut forkd = Forkd::start(&config);
    let addr = bound_address(&forkd.log, "echo", "tcp://");
    let mut s = tcp(&addr);
    let mut line = String::new();
    while !line.ends_with('\n') {
        let mut byte = [0u8; 1];
        assert_eq!(s.read(&mut byte).expect("the program's pids"), 1);
        line.push(byte[0] as char);
    }
    let pids: Vec<i32> = line
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    let (program, sleeper) = (pids[0], pids[1]);
    let group = |pid: i32| nix::unistd::getpgid(Some(nix::unistd::Pid::from_raw(pid))).unwrap();
    let session = |pid: i32| nix::unistd::getsid(Some(nix::unistd::Pid::from_raw(pid))).unwrap();
    assert_eq!(group(program).as_raw(), program);
    assert_eq!(group(sleeper).as_raw(), program);
    assert_eq!(session(program), session(forkd.pid()));
    forkd.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(forkd
        .wait_exit(std::time::Duration::from_secs(10))
        .is_some());
    wait_until(
        "the sleep the program started is gone",
        std::time::Duration::from_secs(5),
        || !alive(sleeper),
    );
}
