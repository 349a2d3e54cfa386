//! Socket activation under `systemd-socket-activate`, which opens the
//! listener, sets LISTEN_PID/LISTEN_FDS/LISTEN_FDNAMES and execs forkd on
//! the first connection, exactly as systemd does for a `.socket` unit.

mod common;

use std::time::Duration;

use common::{children_running, free_port, have_tool, start_forkd_under, wait_until, Scratch};

const T: Duration = Duration::from_secs(10);

#[test]
fn forkd_takes_over_the_socket_systemd_passed_and_keeps_it_from_programs() {
    if !have_tool("systemd-socket-activate", "socket activation test") {
        return;
    }
    let dir = Scratch::new("activation");
    let config = dir.write(
        "forkd.toml",
        "[[program]]\nname = \"a\"\ncommand = [\"/bin/sleep\", \"1001\"]\n",
    );
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let forkd = start_forkd_under(
        &["systemd-socket-activate", "-l", &listen, "--fdname=echo"],
        &config,
        &[],
    );
    // systemd-socket-activate execs forkd when the first connection comes.
    let mut _client = None;
    wait_until("the activation socket accepts", T, || {
        _client = std::net::TcpStream::connect(&listen).ok();
        _client.is_some()
    });
    forkd
        .log
        .wait_line("socket activation: 1 fd: echo (fd 3)", T);
    forkd.log.wait_line(
        "socket activation: fd 3 named \"echo\" was not used by any service",
        T,
    );

    wait_until("program running", T, || {
        children_running(forkd.pid(), "/bin/sleep 1001").len() == 1
    });
    let program = children_running(forkd.pid(), "/bin/sleep 1001")[0];
    // The socket is close-on-exec: the program holds no socket. (Not an
    // exact fd list: ld.so briefly holds libc open while sleep starts.)
    let links: Vec<String> = std::fs::read_dir(format!("/proc/{program}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .map(|l| l.to_string_lossy().into_owned())
        .collect();
    assert!(
        !links.iter().any(|l| l.starts_with("socket:")),
        "the program inherited a socket: {links:?}"
    );
    // ...and the variables are gone from its environment.
    let environ = std::fs::read(format!("/proc/{program}/environ")).unwrap();
    let environ = String::from_utf8_lossy(&environ);
    for var in ["LISTEN_PID=", "LISTEN_FDS=", "LISTEN_FDNAMES="] {
        assert!(
            !environ.split('\0').any(|kv| kv.starts_with(var)),
            "{var} leaked"
        );
    }
    // forkd still holds the listening socket (a reload may use it later).
    let forkd_fds = std::fs::read_link(format!("/proc/{}/fd/3", forkd.pid())).unwrap();
    assert!(
        forkd_fds.to_string_lossy().starts_with("socket:"),
        "{forkd_fds:?}"
    );
}
