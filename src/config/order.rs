//! Start order between programs and pools: the `after` key of a
//! `[[program]]` or `[[pool]]`, the `ready` key of a program, and the
//! check, across both, that every name in an `after` is a program or a
//! pool and that no chain of `after`s comes back to where it started.
//!
//! Services are not ordered: their ports are bound before every program
//! (a port that cannot be bound stops forkd's start-up), so nothing waits
//! for one.

use std::collections::HashMap;

use toml::de::{DeTable, DeValue};

use super::section::{describe, Section, Sink, Span};
use super::{values, ListenAddr, Ready};

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
            "after must be an array of program or pool names, like [\"db\", \"cache\"], found {}",
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
                    "after[{i}] must be a program or pool name, found {}",
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

/// One entry that may be ordered: a `[[program]]` or a `[[pool]]`, with
/// the table its `after` is read from (for the spans).
pub(super) struct Unit<'a, 't> {
    pub(super) table: &'a DeTable<'t>,
    pub(super) name: &'a str,
    /// "program" or "pool".
    pub(super) kind: &'static str,
}

/// Every `after` names a program or pool other than itself, and the
/// `after`s form no cycle (across programs and pools). `services` are the
/// service names (named in the error).
pub(super) fn check(sink: &mut Sink, units: &[Unit<'_, '_>], services: &[&str]) {
    let index: HashMap<&str, usize> = units.iter().enumerate().map(|(i, u)| (u.name, i)).collect();
    // Edges with the span of the entry that made them, for the cycle error.
    let mut edges: Vec<Vec<(usize, Span)>> = vec![Vec::new(); units.len()];
    let mut quiet = Sink::default();
    for (i, unit) in units.iter().enumerate() {
        for (name, span) in after_entries(&mut quiet, unit.table) {
            if name == unit.name {
                let message = format!("[[{}]] \"{name}\" lists itself in after", unit.kind);
                sink.error(&span, message);
                continue;
            }
            match index.get(name.as_str()) {
                Some(&j) => edges[i].push((j, span)),
                None => {
                    let message = if services.contains(&name.as_str()) {
                        format!(
                            "after names the service \"{name}\"; after lists programs and pools only (services start before every program)"
                        )
                    } else {
                        let names: Vec<&str> = index.keys().copied().collect();
                        let hint = super::suggest::closest(&name, &names)
                            .map_or(String::new(), |n| format!(" (did you mean \"{n}\"?)"));
                        format!("after names \"{name}\", which is no [[program]] or [[pool]]{hint}")
                    };
                    sink.error(&span, message);
                }
            }
        }
    }
    if let Some((cycle, span)) = find_cycle(&edges) {
        let names: Vec<&str> = cycle.iter().map(|&i| units[i].name).collect();
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
