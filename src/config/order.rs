//! Start order between programs: the `after` and `ready` keys of a
//! `[[program]]`, and the check, across programs, that every name in an
//! `after` is a program and that no chain of `after`s comes back to where
//! it started.
//!
//! Only programs are ordered: pools and services start before every
//! program (a pool or port that cannot start stops forkd's start-up), so a
//! program never waits for one.

use std::collections::HashMap;

use toml::de::{DeTable, DeValue};

use super::section::{describe, Section, Sink, Span};
use super::{values, ListenAddr, ProgramConfig, Ready};

/// `after = ["db", "cache"]`: the names, in order, duplicates dropped.
pub(super) fn after(s: &mut Section<'_, '_>) -> Vec<String> {
    let mut names = Vec::new();
    for (name, _) in after_entries(s.sink, s.table) {
        if !names.contains(&name) {
            names.push(name);
        }
    }
    names
}

/// The strings of `after` with their spans; a value of the wrong type is
/// reported once (here, on the first read) and yields nothing.
fn after_entries(sink: &mut Sink, table: &DeTable<'_>) -> Vec<(String, Span)> {
    let Some(value) = table.get("after") else {
        return Vec::new();
    };
    let DeValue::Array(items) = value.get_ref() else {
        let message = format!(
            "after must be an array of program names, like [\"db\", \"cache\"], found {}",
            describe(value.get_ref())
        );
        sink.error(&value.span(), message);
        return Vec::new();
    };
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        match item.get_ref() {
            DeValue::String(name) => out.push((name.to_string(), item.span())),
            other => sink.error(
                &item.span(),
                format!(
                    "after[{i}] must be a program name, found {}",
                    describe(other)
                ),
            ),
        }
    }
    out
}

/// `ready = "started" | "notify" | "tcp://HOST:PORT" | "unix:/PATH"`.
pub(super) fn ready(s: &mut Section<'_, '_>) -> Ready {
    let Some((text, span)) = s.string("ready") else {
        return Ready::Started;
    };
    let parsed = match text {
        "started" => Ok(Ready::Started),
        "notify" => Ok(Ready::Notify),
        _ if text.starts_with("tcp://") || text.starts_with("unix:") => {
            values::listen(text).map(|addr| match addr {
                ListenAddr::Tcp(addr) => Ready::Tcp(addr),
                ListenAddr::Unix(path) => Ready::Unix(path),
                ListenAddr::Udp(_) | ListenAddr::Systemd(_) => unreachable!("prefix checked"),
            })
        }
        _ => Err("use \"started\", \"notify\", \"tcp://HOST:PORT\" or \"unix:/PATH\"".into()),
    };
    parsed.unwrap_or_else(|reason| {
        s.error(&span, format!("bad ready \"{text}\": {reason}"));
        Ready::Started
    })
}

/// Every `after` names a program other than itself, and the `after`s form
/// no cycle. `programs` pairs each program's table with what was built
/// from it; `others` are the pool and service names (named in the error).
pub(super) fn check(
    sink: &mut Sink,
    programs: &[(&DeTable<'_>, &ProgramConfig)],
    others: &[(&str, &str)],
) {
    let index: HashMap<&str, usize> = programs
        .iter()
        .enumerate()
        .map(|(i, (_, c))| (c.name.as_str(), i))
        .collect();
    // Edges with the span of the entry that made them, for the cycle error.
    let mut edges: Vec<Vec<(usize, Span)>> = vec![Vec::new(); programs.len()];
    let mut quiet = Sink::default();
    for (i, (table, config)) in programs.iter().enumerate() {
        for (name, span) in after_entries(&mut quiet, table) {
            if name == config.name {
                let message = format!("[[program]] \"{name}\" lists itself in after");
                sink.error(&span, message);
                continue;
            }
            match index.get(name.as_str()) {
                Some(&j) => edges[i].push((j, span)),
                None => {
                    let message = match others.iter().find(|(n, _)| *n == name) {
                        Some((_, kind)) => format!(
                            "after names the {kind} \"{name}\"; after lists programs only (pools and services start before every program)"
                        ),
                        None => {
                            let names: Vec<&str> = index.keys().copied().collect();
                            let hint = super::suggest::closest(&name, &names)
                                .map_or(String::new(), |n| format!(" (did you mean \"{n}\"?)"));
                            format!("after names \"{name}\", which is no [[program]]{hint}")
                        }
                    };
                    sink.error(&span, message);
                }
            }
        }
    }
    if let Some((cycle, span)) = find_cycle(&edges) {
        let names: Vec<&str> = cycle.iter().map(|&i| programs[i].1.name.as_str()).collect();
        let message = format!(
            "start order cycle: {} (each waits for the next; remove one of these after entries)",
            names.join(" → ")
        );
        sink.error(&span, message);
    }
}

/// A cycle as the programs on it (first repeated at the end), and the span
/// of the `after` entry that closes it.
fn find_cycle(edges: &[Vec<(usize, Span)>]) -> Option<(Vec<usize>, Span)> {
    // 0 unvisited, 1 on the current path, 2 done: depth-first search.
    let mut mark = vec![0u8; edges.len()];
    let mut path = Vec::new();
    for start in 0..edges.len() {
        if let Some(found) = visit(start, edges, &mut mark, &mut path) {
            return Some(found);
        }
    }
    None
}

fn visit(
    node: usize,
    edges: &[Vec<(usize, Span)>],
    mark: &mut [u8],
    path: &mut Vec<usize>,
) -> Option<(Vec<usize>, Span)> {
    match mark[node] {
        2 => return None,
        1 => unreachable!("callers check the path first"),
        _ => {}
    }
    mark[node] = 1;
    path.push(node);
    for (next, span) in &edges[node] {
        if mark[*next] == 1 {
            let from = path.iter().position(|n| n == next).unwrap_or(0);
            let mut cycle = path[from..].to_vec();
            cycle.push(*next);
            return Some((cycle, span.clone()));
        }
        if let Some(found) = visit(*next, edges, mark, path) {
            return Some(found);
        }
    }
    path.pop();
    mark[node] = 2;
    None
}
