//! A program that cannot be exec'd is reported by name with errno, not as
//! a mysterious exit 127.

mod common;

use std::time::Duration;

use common::{Forkd, Scratch};

#[test]
fn missing_binary_is_reported_with_the_program_name_and_errno() {
    let dir = Scratch::new("execfail");
    let config = dir.write(
        "forkd.toml",
        r#"
[[program]]
name = "ghost"
command = ["/nonexistent/forkd-test-binary", "--flag"]
start_retries = 1
backoff_initial = "10ms"
"#,
    );
    let forkd = Forkd::start(&config);
    let line = forkd
        .log
        .wait_line("ghost#0: cannot start", Duration::from_secs(10));
    assert!(line.contains("exec failed"), "{line}");
    assert!(line.contains("No such file or directory"), "{line}");
    forkd
        .log
        .wait_line("ghost#0 failed 2 times", Duration::from_secs(10));
    assert_eq!(forkd.log.count("exited with code 127"), 0);
}
