//! The man pages in `man/` agree with the code: every forkctl command and
//! option of its clap definition, every forkd option of `forkd --help`,
//! and every key the config parser accepts is documented; the pages lint
//! clean with `mandoc -T lint -W warning` and render.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use clap::CommandFactory;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The page's roff source with `\-` turned into `-`.
fn page(name: &str) -> String {
    let path = root().join("man").join(name);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .replace("\\-", "-")
}

/// True if `option` (`-s` or `--socket`) appears as a whole word.
fn mentions_option(text: &str, option: &str) -> bool {
    text.match_indices(option).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + option.len()..].chars().next();
        !before.is_some_and(|c| c.is_alphanumeric() || c == '-')
            && !after.is_some_and(|c| c.is_alphanumeric() || c == '-' || c == '_')
    })
}

/// The page's `.SH` sections by title.
fn sections(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut title = String::new();
    for line in text.lines() {
        if let Some(t) = line.strip_prefix(".SH ") {
            title = t.trim_matches('"').to_string();
        } else {
            let body: &mut String = out.entry(title.clone()).or_default();
            body.push_str(line);
            body.push('\n');
        }
    }
    out
}

/// A key documented as a `.TP` heading: `.B key` or `.BR key " (type)"`.
fn has_heading(text: &str, key: &str) -> bool {
    text.lines().any(|l| {
        let mut words = l.split_whitespace();
        matches!(words.next(), Some(".B" | ".BR" | ".BI")) && words.next() == Some(key)
    })
}

#[test]
fn forkctl_page_documents_every_command_and_option() {
    let text = page("forkctl.1");
    let commands = sections(&text)["COMMANDS"].clone();
    let cli = forkd::control::cli::Cli::command();
    let mut missing = Vec::new();
    let check_args = |cmd: &clap::Command, missing: &mut Vec<String>| {
        for arg in cmd.get_arguments() {
            if let Some(long) = arg.get_long() {
                if !mentions_option(&text, &format!("--{long}")) {
                    missing.push(format!("--{long} ({})", cmd.get_name()));
                }
            }
            if let Some(short) = arg.get_short() {
                if !mentions_option(&text, &format!("-{short}")) {
                    missing.push(format!("-{short} ({})", cmd.get_name()));
                }
            }
        }
    };
    check_args(&cli, &mut missing);
    for long in ["--help", "--version"] {
        if !mentions_option(&text, long) {
            missing.push(long.to_string());
        }
    }
    for sub in cli.get_subcommands() {
        if !has_heading(&commands, sub.get_name()) {
            missing.push(format!("command {}", sub.get_name()));
        }
        check_args(sub, &mut missing);
    }
    if !has_heading(&commands, "help") {
        missing.push("command help".into());
    }
    if let Some(env) = cli
        .get_arguments()
        .find_map(|a| a.get_env().map(|e| e.to_string_lossy().into_owned()))
    {
        if !sections(&text)["ENVIRONMENT"].contains(&env) {
            missing.push(format!("environment {env}"));
        }
    }
    let exit = &sections(&text)["EXIT STATUS"];
    for code in 0..=3 {
        if !has_heading(exit, &code.to_string()) {
            missing.push(format!("exit status {code}"));
        }
    }
    assert!(missing.is_empty(), "forkctl.1 lacks: {missing:?}");
}

#[test]
fn forkd_page_documents_every_option_of_its_help() {
    let text = page("forkd.8");
    let help = Command::new(common::FORKD).arg("--help").output().unwrap();
    assert!(help.status.success());
    let help = String::from_utf8_lossy(&help.stdout);
    let options: Vec<&str> = help
        .split(|c: char| c.is_whitespace() || c == ',')
        .filter(|w| w.starts_with('-') && w.len() > 1)
        .collect();
    assert!(options.contains(&"--config"), "parsed {options:?}");
    let missing: Vec<&&str> = options
        .iter()
        .filter(|o| !mentions_option(&text, o))
        .collect();
    assert!(missing.is_empty(), "forkd.8 lacks {missing:?}");
    let signals = &sections(&text)["SIGNALS"];
    for sig in ["SIGHUP", "SIGTERM", "SIGINT", "SIGQUIT"] {
        assert!(signals.contains(sig), "forkd.8 SIGNALS lacks {sig}");
    }
    for section in ["FILES", "EXIT STATUS", "ENVIRONMENT", "OPTIONS"] {
        assert!(
            sections(&text).contains_key(section),
            "forkd.8 lacks {section}"
        );
    }
}

/// Every `NAME_KEYS: &[&str] = &[...]` list in the config parser's source.
fn parser_key_lists() -> Vec<(String, Vec<String>)> {
    let mut lists = Vec::new();
    let dir = root().join("src/config");
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "rs") {
            lists.extend(key_lists_in(&path));
        }
    }
    lists
}

fn key_lists_in(path: &Path) -> Vec<(String, Vec<String>)> {
    let source = std::fs::read_to_string(path).unwrap();
    let mut out = Vec::new();
    let mut rest = source.as_str();
    while let Some(at) = rest.find("_KEYS: &[&str] = &[") {
        let name_start = rest[..at]
            .rfind(|c: char| !(c.is_ascii_uppercase() || c == '_'))
            .map_or(0, |i| i + 1);
        let name = format!("{}_KEYS", &rest[name_start..at]);
        let body_start = at + "_KEYS: &[&str] = &[".len();
        let body_end = body_start + rest[body_start..].find("];").unwrap();
        let keys = rest[body_start..body_end]
            .split('"')
            .skip(1)
            .step_by(2)
            .map(String::from)
            .collect();
        out.push((name, keys));
        rest = &rest[body_end..];
    }
    out
}

#[test]
fn config_page_documents_every_key_the_parser_accepts() {
    let text = page("forkd.toml.5");
    let sections = sections(&text);
    let lists = parser_key_lists();
    let names: Vec<&str> = lists.iter().map(|(n, _)| n.as_str()).collect();
    for expected in [
        "DAEMON_KEYS",
        "PROGRAM_KEYS",
        "RLIMIT_KEYS",
        "POOL_KEYS",
        "SERVICE_KEYS",
    ] {
        assert!(
            names.contains(&expected),
            "no {expected} found in src/config: {names:?}"
        );
    }
    let mut missing = Vec::new();
    for (list, keys) in &lists {
        let section = match list.as_str() {
            "TOP_LEVEL_KEYS" => {
                for table in keys {
                    let shown = [format!("[{table}]"), format!("[[{table}]]")];
                    if !shown.iter().any(|s| sections.contains_key(s)) {
                        missing.push(format!("table {table}"));
                    }
                }
                continue;
            }
            "DAEMON_KEYS" => &sections["[daemon]"],
            "PROGRAM_KEYS" | "RLIMIT_KEYS" => &sections["[[program]]"],
            "POOL_KEYS" => &sections["[[pool]]"],
            "SERVICE_KEYS" => &sections["[[service]]"],
            _ => &text,
        };
        for key in keys {
            if !has_heading(section, key) {
                missing.push(format!("{key} ({list})"));
            }
        }
    }
    assert!(missing.is_empty(), "forkd.toml.5 lacks: {missing:?}");
}

fn mandoc(args: &[&str], page: &str) -> std::process::Output {
    Command::new("mandoc")
        .args(args)
        .arg(root().join("man").join(page))
        .output()
        .expect("mandoc is needed for the man-page checks (apt-get install mandoc)")
}

#[test]
fn man_pages_lint_clean_and_render() {
    for name in ["forkd.8", "forkctl.1", "forkd.toml.5"] {
        let lint = mandoc(&["-T", "lint", "-W", "warning"], name);
        assert!(
            lint.status.success() && lint.stdout.is_empty() && lint.stderr.is_empty(),
            "mandoc -T lint -W warning {name}:\n{}{}",
            String::from_utf8_lossy(&lint.stdout),
            String::from_utf8_lossy(&lint.stderr)
        );
        let render = mandoc(&["-T", "utf8"], name);
        assert!(
            render.status.success() && render.stdout.len() > 1000,
            "{name} renders"
        );
    }
}

#[test]
fn the_pages_name_every_read_only_verb() {
    let config = page("forkd.toml.5");
    let entry = config
        .split(".BR control_read_group")
        .nth(1)
        .and_then(|rest| rest.split("\n.TP\n").next())
        .expect("forkd.toml.5 documents control_read_group");
    let access = &sections(&page("forkctl.1"))["ACCESS"];
    for verb in forkd::control::access::READ_ONLY_VERBS {
        let shown = format!(".BR {verb} ");
        let shown_last = format!(".B {verb}\n");
        for (name, text) in [
            ("forkd.toml.5", entry),
            ("forkctl.1 ACCESS", access.as_str()),
        ] {
            assert!(
                text.contains(&shown) || text.contains(&shown_last),
                "{name} does not name the read-only verb {verb}"
            );
        }
    }
}
