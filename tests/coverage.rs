//! Every key the config parser accepts and every forkctl command and long
//! option is exercised by at least one integration test: named in a test's
//! config (`key =`) or on a forkctl command line (`"verb"`, `"--option"`).
//! A key only parsed (`check_config.rs`) or only documented (`man_pages.rs`)
//! does not count. What cannot be exercised yet is on the allow-list below,
//! each with its reason; an entry there that a test does name fails too, so
//! the list only shrinks.

use std::path::PathBuf;

use clap::CommandFactory;

/// Keys and verbs no integration test can exercise today, and why.
const ALLOWED: &[(&str, &str)] = &[];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The text of every integration test that runs the binaries.
fn behavioural_tests() -> String {
    let mut text = String::new();
    let skip = ["coverage.rs", "man_pages.rs", "check_config.rs"];
    let common = root().join("tests/common");
    let files = std::fs::read_dir(root().join("tests"))
        .unwrap()
        .chain(std::fs::read_dir(common).unwrap());
    for entry in files {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if path.extension().is_some_and(|e| e == "rs") && !skip.contains(&name.as_str()) {
            text.push_str(&std::fs::read_to_string(&path).unwrap());
        }
    }
    text
}

/// `NAME_KEYS: &[&str] = &[...]` lists of the config parser, by table.
fn parser_keys() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(root().join("src/config")).unwrap() {
        let path = entry.unwrap().path();
        if !path.extension().is_some_and(|e| e == "rs") {
            continue;
        }
        let source = std::fs::read_to_string(&path).unwrap();
        let mut rest = source.as_str();
        while let Some(at) = rest.find("_KEYS: &[&str] = &[") {
            let start = rest[..at]
                .rfind(|c: char| !(c.is_ascii_uppercase() || c == '_'))
                .map_or(0, |i| i + 1);
            let table = rest[start..at].to_ascii_lowercase();
            let body = at + "_KEYS: &[&str] = &[".len();
            let end = body + rest[body..].find("];").unwrap();
            if table != "top_level" {
                for key in rest[body..end].split('"').skip(1).step_by(2) {
                    out.push((table.clone(), key.to_string()));
                }
            }
            rest = &rest[end..];
        }
    }
    out
}

fn names_key(tests: &str, key: &str) -> bool {
    // In a TOML body: at a line start, after `\n` in a Rust string, or
    // after `{ ` in an inline table.
    [
        format!("\n{key} ="),
        format!("\\n{key} ="),
        format!("\"{key} ="),
        format!("{{ {key} ="),
        format!(", {key} ="),
    ]
    .iter()
    .any(|p| tests.contains(p.as_str()))
}

#[test]
fn every_config_key_is_exercised_by_an_integration_test() {
    let tests = behavioural_tests();
    let keys = parser_keys();
    assert!(keys.len() > 40, "the key lists were not found: {keys:?}");
    let mut missing = Vec::new();
    let mut stale = Vec::new();
    for (table, key) in &keys {
        let id = format!("{table}.{key}");
        let allowed = ALLOWED.iter().find(|(a, _)| *a == id);
        // A key of something not built yet may be named by the test that
        // checks it is refused at start-up; that does not exercise it.
        let unbuilt = allowed.is_some_and(|(_, why)| why.ends_with("not built yet"));
        match (names_key(&tests, key), allowed) {
            (false, None) => missing.push(id),
            (true, Some(_)) if !unbuilt => stale.push(id),
            _ => {}
        }
    }
    assert!(
        missing.is_empty(),
        "keys no integration test exercises: {missing:?}"
    );
    assert!(
        stale.is_empty(),
        "allow-listed keys a test now names (drop them from ALLOWED): {stale:?}"
    );
}

#[test]
fn every_forkctl_command_and_option_is_exercised_by_an_integration_test() {
    let tests = behavioural_tests();
    let cli = forkd::control::cli::Cli::command();
    let mut missing = Vec::new();
    let check = |cmd: &clap::Command, missing: &mut Vec<String>| {
        for arg in cmd.get_arguments() {
            if let Some(long) = arg.get_long() {
                if ["help", "version"].contains(&long) {
                    continue;
                }
                let flag = format!("\"--{long}\"");
                let short = arg.get_short().map(|s| format!("\"-{s}\""));
                let named = tests.contains(&flag) || short.is_some_and(|s| tests.contains(&s));
                if !named {
                    missing.push(format!("{} --{long}", cmd.get_name()));
                }
            }
        }
    };
    check(&cli, &mut missing);
    for sub in cli.get_subcommands() {
        if sub.get_name() == "help" {
            continue;
        }
        if !tests.contains(&format!("&[\"{}\"", sub.get_name()))
            && !tests.contains(&format!(", \"{}\"", sub.get_name()))
        {
            missing.push(sub.get_name().to_string());
        }
        check(sub, &mut missing);
    }
    assert!(
        missing.is_empty(),
        "forkctl commands/options no test runs: {missing:?}"
    );
}
