//! Socket activation under `systemd-socket-activate`, which opens the
//! listener, sets LISTEN_PID/LISTEN_FDS/LISTEN_FDNAMES and execs forkd on
//! the first connection, exactly as systemd does for a `.socket` unit.

mod common;

use std::time::Duration;

use common::{
    children_running, echo_exchange, free_port, have_tool, start_forkd_under, tcp, wait_until,
    Scratch,
};

const T: Duration = Duration::from_secs(10);

#[test]
fn forkd_takes_over_the_socket_systemd_passed_and_keeps_it_from_programs() {
    if !have_tool("systemd-socket-activate", "socket activation test") {
        return;
    }
    let dir = Scratch::new("activation");
    // systemd-socket-activate passes forkd no environment but LISTEN_*:
    // the control socket is named here, so parallel tests never share one.
    let config = dir.write(
        "forkd.toml",
        &format!(
            "[daemon]\ncontrol_socket = \"{}\"\n\n[[program]]\nname = \"a\"\ncommand = [\"/bin/sleep\", \"1001\"]\n",
            dir.file("control.sock").display()
        ),
    );
    let (forkd, _listen, _client) = activate(&config);
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

/// Runs forkd under `systemd-socket-activate` with a socket named `echo` on
/// a free loopback port, and makes the first connection, which is what
/// makes systemd-socket-activate exec forkd. Returns forkd, the address and
/// that connection.
fn activate(config: &std::path::Path) -> (common::Forkd, String, std::net::TcpStream) {
    let listen = format!("127.0.0.1:{}", free_port());
    let forkd = start_forkd_under(
        &["systemd-socket-activate", "-l", &listen, "--fdname=echo"],
        config,
        &[],
    );
    let mut client = None;
    wait_until("the activation socket accepts", T, || {
        client = std::net::TcpStream::connect(&listen).ok();
        client.is_some()
    });
    (forkd, listen, client.unwrap())
}

/// Its own control socket, so tests running side by side never meet.
fn echo_config(dir: &Scratch, mode: &str, idle: &str) -> String {
    format!(
        "[daemon]\ncontrol_socket = \"{}\"\n\n[[service]]\nname = \"echo\"\nlisten = [\"systemd:echo\"]\nmode = \"{mode}\"\nhandler = \"echo\"\nworkers = 2\nidle_timeout = \"{idle}\"\n",
        dir.file("control.sock").display()
    )
}

/// forkd serves on the socket `systemd-socket-activate` passed, also the
/// connection that activated it, and still after reloads that replace the
/// service (the inherited socket is handed over, never re-opened).
fn inherited_socket_serves_before_and_after_reload(mode: &str) {
    if !have_tool("systemd-socket-activate", "socket activation test") {
        return;
    }
    let dir = Scratch::new(&format!("activation-{mode}"));
    let config = dir.write("forkd.toml", &echo_config(&dir, mode, "30s"));
    let (forkd, listen, mut first) = activate(&config);
    first.set_read_timeout(Some(T)).unwrap();
    echo_exchange(&mut first, b"the connection that woke forkd\n");
    forkd
        .log
        .wait_line(&format!("service echo listening on tcp://{listen}"), T);
    assert_eq!(forkd.log.count("was not used by any service"), 0);
    echo_exchange(&mut tcp(&listen), b"before reload\n");

    for (n, idle) in ["31s", "32s"].iter().enumerate() {
        dir.write("forkd.toml", &echo_config(&dir, mode, idle));
        forkd.signal(nix::sys::signal::Signal::SIGHUP);
        forkd.log.wait_count("reloaded ", n + 1, T);
        echo_exchange(&mut tcp(&listen), b"after reload\n");
    }
    assert_eq!(forkd.log.count("reload rejected"), 0);
    assert_eq!(forkd.log.count("reload: echo changed (idle_timeout)"), 2);
    // The socket the old service held stayed open: the client that
    // connected before any reload is still served by the first service.
    echo_exchange(&mut first, b"still here\n");
    drop(first);
    wait_until("no zombies", T, || {
        common::zombies_below(forkd.pid()).is_empty()
    });
}

#[test]
fn fork_mode_serves_on_the_inherited_socket_across_reloads() {
    inherited_socket_serves_before_and_after_reload("fork");
}

#[test]
fn prefork_mode_serves_on_the_inherited_socket_across_reloads() {
    inherited_socket_serves_before_and_after_reload("prefork");
}
