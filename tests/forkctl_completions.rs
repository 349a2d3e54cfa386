//! `forkctl completions bash|zsh|fish` prints a script the shell loads,
//! without a running forkd: bash registers it for forkctl and completes
//! commands from it; the zsh and fish scripts name every command.

mod common;

use std::process::Command;

use clap::CommandFactory;
use common::{forkctl, have_tool, Scratch};

/// The script for `shell`; no forkd listens on the socket named.
fn script(shell: &str) -> String {
    let dir = Scratch::new("completions");
    let out = forkctl(&dir.file("nobody-listens.sock"), &["completions", shell]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stderr.is_empty(), "{}", out.stderr);
    out.stdout
}

fn commands() -> Vec<String> {
    forkd::control::cli::Cli::command()
        .get_subcommands()
        .map(|c| c.get_name().to_string())
        .collect()
}

#[test]
fn bash_loads_the_script_and_completes_commands_from_it() {
    if !have_tool(
        "bash",
        "bash_loads_the_script_and_completes_commands_from_it",
    ) {
        return;
    }
    let dir = Scratch::new("completions-bash");
    let path = dir.write("forkctl.bash", &script("bash"));
    // What a login shell does with /etc/bash_completion.d/forkctl, then
    // what pressing Tab after `forkctl st` asks of the function.
    let out = Command::new("bash")
        .arg("--norc")
        .arg("-c")
        .arg(
            r#"source "$1" && complete -p forkctl &&
               COMP_WORDS=(forkctl st) COMP_CWORD=1 && _forkctl forkctl st forkctl &&
               echo "offered: ${COMPREPLY[*]}""#,
        )
        .arg("bash")
        .arg(&path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        stdout.contains("-F _forkctl forkctl"),
        "complete -p: {stdout}"
    );
    let offered = stdout.lines().find_map(|l| l.strip_prefix("offered: "));
    let mut offered: Vec<&str> = offered.unwrap_or_default().split(' ').collect();
    offered.sort_unstable();
    assert_eq!(offered, ["start", "status", "stop"], "{stdout}");
}

#[test]
fn zsh_and_fish_scripts_name_every_command() {
    for (shell, marker) in [("zsh", "#compdef forkctl"), ("fish", "complete -c forkctl")] {
        let text = script(shell);
        assert!(text.contains(marker), "{shell}: {text}");
        for command in commands() {
            assert!(text.contains(&command), "{shell} lacks {command}");
        }
    }
}

#[test]
fn an_unknown_shell_is_a_usage_error_naming_the_choices() {
    let dir = Scratch::new("completions-bad");
    let out = forkctl(&dir.file("none.sock"), &["completions", "tcsh"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("bash, zsh, fish"), "{}", out.stderr);
}
