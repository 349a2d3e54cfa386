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
