//! Output of a retiring instance: what an old instance writes while it
//! drains after a reload lands in its own ring and is logged as the old
//! instance's, never in its successor's ring.

mod common;

use std::time::Duration;

use common::{control_config, forkctl, wait_until, Forkd, Scratch};

/// `api`, printing `{tag} ready`, then `{tag} draining N` after SIGTERM.
fn api(tag: &str) -> String {
    format!(
        r#"
[[program]]
name = "api"
command = ["/bin/sh", "-c", '''
trap 'for i in 1 2 3; do echo "{tag} draining $i"; sleep 0.1; done; exit 0' TERM
echo "{tag} ready"
while :; do sleep 0.05; done
''']
"#
    )
}

#[test]
fn a_draining_instances_output_stays_out_of_its_successors_ring() {
    let dir = Scratch::new("retiring-output");
    let (config, socket) = control_config(&dir, &api("old"));
    let forkd = Forkd::start(&config);
    forkd
        .log
        .wait_line("api#0: old ready", Duration::from_secs(10));
    // The same name, a changed command: new instance first, then the old
    // one is stopped and drains.
    let (config, _) = control_config(&dir, &api("new"));
    assert!(config.exists());
    let reload = forkctl(&socket, &["reload"]);
    assert_eq!(reload.code, 0, "{reload:?}");
    forkd
        .log
        .wait_line("api#0: new ready", Duration::from_secs(10));
    let last = forkd
        .log
        .wait_line("old draining 3", Duration::from_secs(10));
    forkd.log.wait_line(
        "api (replaced): every old instance is down",
        Duration::from_secs(10),
    );
    wait_until("the new instance's ring", Duration::from_secs(5), || {
        forkctl(&socket, &["log", "api"])
            .stdout
            .contains("new ready")
    });
    let ring = forkctl(&socket, &["log", "api"]).stdout;
    assert!(
        !ring.contains("old"),
        "the old instance's lines reached the new ring:\n{ring}"
    );
    // forkd's log says whose line it was.
    assert!(last.contains("api#0 (replaced): old draining 3"), "{last}");
}
