//! The unit files in systemd/ pass `systemd-analyze verify`.
//!
//! verify checks that ExecStart= binaries exist, so the test verifies
//! copies whose /usr/local/bin/forkd points at the binary cargo built.
//! `--man=no`: the Documentation= man pages exist only once installed.

mod common;

use std::process::Command;

use common::{have_tool, Scratch, FORKD};

#[test]
fn unit_files_pass_systemd_analyze_verify() {
    if !have_tool("systemd-analyze", "unit file verification") {
        return;
    }
    let dir = Scratch::new("units");
    let source = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd");
    let mut units = Vec::new();
    for entry in std::fs::read_dir(&source).expect("systemd/ exists") {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !(name.ends_with(".service") || name.ends_with(".socket")) {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        units.push(dir.write(&name, &text.replace("/usr/local/bin/forkd", FORKD)));
    }
    assert!(units.len() >= 2, "expected forkd.service and forkd.socket");
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg("--man=no")
        .args(&units)
        .output()
        .expect("run systemd-analyze");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "systemd-analyze verify failed:\n{stderr}"
    );
    // Warnings about our own units fail too: verify exits 0 after
    // "Unknown key 'Restrat' in section [Service], ignoring."
    let names: Vec<String> = units
        .iter()
        .map(|u| u.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    let ours: Vec<&str> = stderr
        .lines()
        .filter(|l| names.iter().any(|n| l.contains(n.as_str())))
        .collect();
    assert!(
        ours.is_empty(),
        "systemd-analyze verify:\n{}",
        ours.join("\n")
    );
}
