//! Start-up of services: a handler that cannot be set up (a served
//! directory that is not there), or a systemd socket that was not passed,
//! stops forkd with a clear error (exit 1, no panic); a stale Unix socket
//! file from a crashed run is replaced.

mod common;

use std::time::Duration;

use common::*;

#[test]
fn a_handler_that_cannot_be_set_up_fails_start_up_clearly() {
    let scratch = Scratch::new("no-root");
    let missing = scratch.file("not-there");
    let config = service_config(
        &scratch,
        &format!(
            "listen = [\"tcp://127.0.0.1:0\"]\nhandler = \"ftp\"\nroot = \"{}\"",
            missing.display()
        ),
    );
    let mut forkd = Forkd::start(&config);
    assert_eq!(forkd.wait_exit(Duration::from_secs(5)), Some(1));
    forkd.log.wait_line(
        &format!(
            "service \"echo\": cannot open root \"{}\": No such file or directory",
            missing.display()
        ),
        Duration::from_secs(1),
    );
    assert_eq!(forkd.log.count("panicked"), 0);
}

#[test]
fn a_systemd_socket_that_was_not_passed_fails_start_up_clearly() {
    let scratch = Scratch::new("no-systemd");
    let config = service_config(&scratch, "listen = [\"systemd:echo\"]\nhandler = \"echo\"");
    let mut forkd = Forkd::start(&config);
    assert_eq!(forkd.wait_exit(Duration::from_secs(5)), Some(1));
    forkd.log.wait_line(
        "no socket named \"echo\" was passed by systemd",
        Duration::from_secs(1),
    );
}

#[test]
fn a_stale_unix_socket_file_is_replaced_and_removed_at_exit() {
    let scratch = Scratch::new("stale-sock");
    let path = scratch.file("echo.sock");
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists(), "the stale socket file is left behind");
    let config = service_config(
        &scratch,
        &format!(
            "listen = [\"unix:{}\"]\nhandler = \"echo\"\nsocket_mode = \"0600\"",
            path.display()
        ),
    );
    let mut forkd = Forkd::start(&config);
    let bound = bound_address(&forkd.log, "echo", "unix:");
    echo_exchange(&mut unix(&bound), b"over the new socket\n");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    forkd.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(forkd.wait_exit(Duration::from_secs(5)), Some(0));
    assert!(!path.exists(), "the socket file is removed at exit");
}
