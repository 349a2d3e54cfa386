//! A first run as the README tells it: forkd on the bundled
//! `config/forkd.toml`, then `forkctl status` with no `--socket` and no
//! `FORKD_SOCKET`. Only the fixed ports and the unix listener's path are
//! rewritten (so parallel runs do not collide); the control socket is
//! found exactly as on a user's machine, under a test's own
//! `XDG_RUNTIME_DIR`.

mod common;

use std::time::Duration;

use common::{
    bound_address, echo_exchange, forkctl_from_shell, free_port, tcp, wait_until, Forkd, Scratch,
};

const T: Duration = Duration::from_secs(10);

/// The bundled config with its fixed ports and /tmp socket replaced.
fn bundled_config(scratch: &Scratch) -> std::path::PathBuf {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/forkd.toml");
    let text = std::fs::read_to_string(path).expect("read config/forkd.toml");
    assert!(
        !text
            .lines()
            .any(|l| l.trim_start().starts_with("control_socket")),
        "the bundled config must use the default control socket, as forkctl does"
    );
    let (echo, cat) = (free_port(), free_port());
    let unix = scratch.file("echo.sock");
    let rewritten = text
        .replace("127.0.0.1:7000", &format!("127.0.0.1:{echo}"))
        .replace("127.0.0.1:7002", &format!("127.0.0.1:{cat}"))
        .replace("/tmp/forkd-echo.sock", unix.to_str().unwrap());
    for fixed in ["127.0.0.1:7000", "127.0.0.1:7002", "/tmp/forkd-echo.sock"] {
        assert!(
            text.contains(fixed),
            "config/forkd.toml no longer has {fixed}"
        );
    }
    scratch.write("forkd.toml", &rewritten)
}

#[test]
fn forkctl_finds_the_bundled_configs_forkd_with_no_flag_and_its_run_directory_goes_at_exit() {
    let scratch = Scratch::new("bundled");
    let config = bundled_config(&scratch);
    let runtime_dir = scratch.file("xdg");
    std::fs::create_dir(&runtime_dir).unwrap();
    let mut forkd = Forkd::start_from_shell(&config, &runtime_dir);
    let echo = bound_address(&forkd.log, "echo", "tcp://");
    forkd
        .log
        .wait_line(&format!("forkd {} started", env!("CARGO_PKG_VERSION")), T);
    let run_dir = runtime_dir.join("forkd");
    assert!(
        run_dir.join("control.sock").exists(),
        "forkd made its run directory"
    );

    wait_until("both tickers run", T, || {
        let out = forkctl_from_shell(&runtime_dir, &["status", "ticker"]);
        out.code == 0 && out.stdout.matches(" running ").count() == 2
    });
    let out = forkctl_from_shell(&runtime_dir, &["status"]);
    assert_eq!(out.code, 0, "{out:?}");
    for name in ["ticker", "echo", "cat"] {
        assert!(out.stdout.contains(name), "{name} missing: {}", out.stdout);
    }
    echo_exchange(&mut tcp(&echo), b"hello\n");

    let out = forkctl_from_shell(&runtime_dir, &["shutdown"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(forkd.wait_exit(T), Some(0));
    assert!(!run_dir.exists(), "the run directory forkd made is removed");
    assert!(runtime_dir.exists(), "XDG_RUNTIME_DIR itself is left alone");
}
