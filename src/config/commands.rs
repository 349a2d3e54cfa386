//! `commands`, the allow-list of a `handler = "command"` service: each
//! name a client may send and the argv it runs. An entry is either an
//! argv, run exactly as written (`date = ["/bin/date", "-u"]`), or an
//! inline table whose `args = true` lets the client's further words be
//! appended to it (`ls = { argv = ["/bin/ls"], args = true }`).
//!
//! A name is one word (the client's first word selects it, so a name with
//! a space or a control character could never be sent); every entry has a
//! program. Errors are at the entry, like every other key's.

use std::collections::BTreeMap;

use toml::de::DeValue;

use super::section::{describe, Section};
use super::AllowedCommand;

/// Keys of an entry written as a table.
const ENTRY_KEYS: &[&str] = &["argv", "args"];

const EXAMPLE: &str =
    "commands = { date = [\"/bin/date\"], ls = { argv = [\"/bin/ls\"], args = true } }";

/// Reads `commands`; empty when absent or refused (reported).
pub(super) fn commands(s: &mut Section<'_, '_>) -> BTreeMap<String, AllowedCommand> {
    let mut out = BTreeMap::new();
    let Some(value) = s.get("commands") else {
        return out;
    };
    let DeValue::Table(table) = value.get_ref() else {
        let message = format!(
            "commands must be a table of allowed commands, like {EXAMPLE}; found {}",
            describe(value.get_ref())
        );
        s.error(&value.span(), message);
        return out;
    };
    if table.is_empty() {
        let message = format!("commands must allow at least one command, like {EXAMPLE}");
        s.error(&value.span(), message);
        return out;
    }
    for (name, entry) in table.iter() {
        let name_text = name.get_ref().as_ref();
        let label = format!("commands.{name_text}");
        if let Some(reason) = bad_name(name_text) {
            s.error(&name.span(), format!("{label}: {reason}"));
            continue;
        }
        let allowed = match entry.get_ref() {
            DeValue::Array(_) => s
                .argv(&label, entry)
                .map(|argv| AllowedCommand { argv, args: false }),
            DeValue::Table(fields) => {
                let mut e = Section::new(s.sink, fields, entry.span(), &label);
                e.check_keys(ENTRY_KEYS);
                if !e.has("argv") {
                    e.missing("argv", "argv = [\"/bin/ls\"]");
                }
                let argv = e.command("argv");
                let args = e.bool("args", false);
                argv.map(|argv| AllowedCommand { argv, args })
            }
            other => {
                let message = format!(
                    "{label} must be an argv like [\"/bin/date\", \"-u\"] or a table like {{ argv = [\"/bin/ls\"], args = true }}; found {}",
                    describe(other)
                );
                s.error(&entry.span(), message);
                None
            }
        };
        if let Some(allowed) = allowed {
            out.insert(name_text.to_string(), allowed);
        }
    }
    out
}

/// Why a client could never select `name`, if it could not.
fn bad_name(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("a command name must not be empty")
    } else if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Some("a command name is one word: the client's first word selects it")
    } else {
        None
    }
}
