//! `autostart = false`: the program is known to forkd but left stopped
//! until `forkctl start` asks for it.

mod common;

use std::time::Duration;

use common::{children, forkctl, instance_states, start_with_control, Scratch};

const T: Duration = Duration::from_secs(10);

#[test]
fn autostart_false_waits_for_forkctl_start() {
    let dir = Scratch::new("autostart");
    let mark = dir.file("lazy-ran");
    let (forkd, socket) = start_with_control(
        &dir,
        &format!(
            r#"
[[program]]
name = "eager"
command = ["/bin/sleep", "1000"]

[[program]]
name = "lazy"
command = ["/bin/sh", "-c", "touch \"$MARK\"; exec sleep 1000"]
autostart = false
env = {{ MARK = "{}" }}
"#,
            mark.display()
        ),
    );
    // Autostarted programs are spawned before forkd says it started.
    forkd.log.wait_line("started: 2 programs", T);
    let eager = instance_states(&socket, "eager");
    let eager_pid = match eager.as_slice() {
        [(state, Some(pid))] if state == "running" => *pid as i32,
        other => panic!("eager should run with forkd: {other:?}"),
    };
    assert_eq!(
        instance_states(&socket, "lazy"),
        vec![("stopped".to_string(), None)]
    );
    assert_eq!(children(forkd.pid()), vec![eager_pid], "only eager runs");
    assert!(!mark.exists(), "lazy ran before it was started");

    let start = forkctl(&socket, &["start", "lazy"]);
    assert_eq!(start.code, 0, "{start:?}");
    let lazy_pid = match instance_states(&socket, "lazy").as_slice() {
        [(state, Some(pid))] if state == "running" => *pid as i32,
        other => panic!("lazy should run after forkctl start: {other:?}"),
    };
    assert!(children(forkd.pid()).contains(&lazy_pid));
    common::wait_until("lazy's own command ran", T, || mark.exists());
}
