//! TOML text to [`Config`](super::Config), with `file:line:col` errors.
//!
//! Owns the walk over the whole document: TOML syntax first (a syntax error
//! stops here), then the top-level tables in any order, then the checks
//! that span tables (names unique across programs, pools and services;
//! services naming a pool). Errors are collected as byte offsets by the
//! table readers and turned into sorted `line:col` positions at the end.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use toml::de::{DeTable, DeValue};

use super::section::{Sink, Span};
use super::service::service;
use super::tables::{daemon, pool, program, Named};
use super::{suggest, Config, DaemonConfig, PoolConfig, ServiceConfig};

/// One problem in a configuration file, at a position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    /// 1-based line and column; 0 when the problem has no position (unreadable file).
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file.display(), self.message)
        } else {
            write!(
                f,
                "{}:{}:{}: {}",
                self.file.display(),
                self.line,
                self.column,
                self.message
            )
        }
    }
}

/// Every problem found in one file, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

pub(super) fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            file: path.to_path_buf(),
            line: 0,
            column: 0,
            message: format!("cannot read the configuration: {e}"),
        }])
    })?;
    parse(&text, path)
}

pub(super) fn parse(text: &str, path: &Path) -> Result<Config, ConfigErrors> {
    let (document, syntax) = DeTable::parse_recoverable(text);
    if !syntax.is_empty() {
        let errors = syntax.iter().map(|e| syntax_error(text, path, e));
        return Err(ConfigErrors(errors.collect()));
    }
    let mut sink = Sink::default();
    let config = read_document(&mut sink, document.get_ref(), text, path);
    if sink.errors.is_empty() {
        return Ok(config);
    }
    // Stable: errors at one offset keep the order they were found in.
    sink.errors.sort_by_key(|(offset, _)| *offset);
    let errors = sink.errors.into_iter().map(|(offset, message)| {
        let (line, column) = position(text, offset);
        ConfigError {
            file: path.to_path_buf(),
            line,
            column,
            message,
        }
    });
    Err(ConfigErrors(errors.collect()))
}

fn syntax_error(text: &str, path: &Path, error: &toml::de::Error) -> ConfigError {
    let (line, column) = error.span().map_or((0, 0), |s| position(text, s.start));
    let mut message = format!("TOML syntax error: {}", error.message().trim_end());
    if error.message() == "duplicate key" {
        if let Some(key) = error.span().and_then(|s| text.get(s)) {
            message = format!(
                "TOML syntax error: duplicate key \"{key}\" (a key or table may appear once)"
            );
        }
    }
    ConfigError {
        file: path.to_path_buf(),
        line,
        column,
        message,
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn position(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    (line, column)
}

const TOP_LEVEL_KEYS: &[&str] = &["daemon", "program", "pool", "service"];

fn read_document(sink: &mut Sink, root: &DeTable<'_>, text: &str, path: &Path) -> Config {
    for (key, _) in root.iter() {
        let key_text = key.get_ref().as_ref();
        if !TOP_LEVEL_KEYS.contains(&key_text) {
            let message = format!(
                "unknown key \"{key_text}\" at the top level{}",
                match suggest::closest(key_text, TOP_LEVEL_KEYS) {
                    Some(close) => format!(" (did you mean \"{close}\"?)"),
                    None =>
                        "; forkd.toml holds [daemon], [[program]], [[pool]] and [[service]] tables"
                            .to_string(),
                }
            );
            sink.error(&key.span(), message);
        }
    }
    let daemon = match root.get("daemon") {
        None => DaemonConfig::default(),
        Some(value) => {
            match value.get_ref() {
                DeValue::Table(table) => daemon(sink, table, value.span()),
                _ => {
                    sink.error(&value.span(), "daemon must be a table: write [daemon] on a line of its own, then its keys");
                    DaemonConfig::default()
                }
            }
        }
    };
    let program_tables: Vec<_> = entries(sink, root, "program").collect();
    let programs: Vec<_> = program_tables
        .iter()
        .map(|(table, span)| program(sink, table, span.clone(), &daemon))
        .collect();
    let pool_tables: Vec<_> = entries(sink, root, "pool").collect();
    let pools: Vec<_> = pool_tables
        .iter()
        .map(|(table, span)| pool(sink, table, span.clone()))
        .collect();
    let pool_configs: Vec<&PoolConfig> = pools.iter().map(|p| &p.config).collect();
    let services: Vec<_> = entries(sink, root, "service")
        .map(|(table, span)| service(sink, table, span, &pool_configs))
        .collect();

    let mut names: Vec<(&str, &str, &Span)> = Vec::new();
    collect_names(&mut names, "program", &programs, |c| &c.name);
    collect_names(&mut names, "pool", &pools, |c| &c.name);
    collect_names(&mut names, "service", &services, |c| &c.name);
    let service_names: Vec<&str> = services.iter().map(|s| s.config.name.as_str()).collect();
    let mut units = Vec::new();
    ordered_units(&mut units, "program", &program_tables, &programs, |c| {
        &c.name
    });
    ordered_units(&mut units, "pool", &pool_tables, &pools, |c| &c.name);
    super::order::check(sink, &units, &service_names);
    check_unique_names(sink, text, names);

    let mut services: Vec<ServiceConfig> = services.into_iter().map(|n| n.config).collect();
    for service in &mut services {
        if let Some(root) = &mut service.root {
            *root = beside(path, root);
        }
    }
    Config {
        path: path.to_path_buf(),
        daemon,
        programs: programs.into_iter().map(|n| n.config).collect(),
        pools: pools.into_iter().map(|n| n.config).collect(),
        services,
    }
}

/// A served directory written relative (`root = "www"`) is taken from the
/// configuration file's directory, as nginx takes it from its prefix: the
/// same file then serves the same tree whatever directory forkd was
/// started in, and after `daemon = true` has moved it to `/`.
fn beside(config: &Path, relative: &Path) -> PathBuf {
    if relative.is_absolute() {
        return relative.to_path_buf();
    }
    let dir = config.parent().unwrap_or(Path::new(""));
    let joined = dir.join(relative);
    std::path::absolute(&joined).unwrap_or(joined)
}

/// The tables of an array of tables (`[[program]]`), each with its header span.
fn entries<'a, 'i>(
    sink: &mut Sink,
    root: &'a DeTable<'i>,
    kind: &str,
) -> impl Iterator<Item = (&'a DeTable<'i>, Span)> {
    let mut out = Vec::new();
    let Some(value) = root.get(kind) else {
        return out.into_iter();
    };
    let write = format!("write one [[{kind}]] header (double brackets) per {kind}");
    match value.get_ref() {
        DeValue::Array(items) => {
            for item in items.iter() {
                match item.get_ref() {
                    DeValue::Table(table) => out.push((table, item.span())),
                    _ => sink.error(
                        &item.span(),
                        format!("{kind} entries must be tables: {write}"),
                    ),
                }
            }
        }
        DeValue::Table(_) => sink.error(
            &value.span(),
            format!("[{kind}] is a single table: {write}"),
        ),
        _ => sink.error(
            &value.span(),
            format!("{kind} must be an array of tables: {write}"),
        ),
    }
    out.into_iter()
}

fn collect_names<'a, T>(
    names: &mut Vec<(&'a str, &'static str, &'a Span)>,
    kind: &'static str,
    built: &'a [Named<T>],
    name: impl Fn(&T) -> &String,
) {
    for entry in built {
        if let Some(span) = &entry.name_span {
            names.push((name(&entry.config).as_str(), kind, span));
        }
    }
}

/// The entries that `after` orders, each with the table its `after` is
/// read from.
fn ordered_units<'a, 't, T>(
    units: &mut Vec<super::order::Unit<'a, 't>>,
    kind: &'static str,
    tables: &'a [(&'a DeTable<'t>, Span)],
    built: &'a [Named<T>],
    name: impl Fn(&T) -> &String,
) {
    for ((table, _), entry) in tables.iter().zip(built) {
        units.push(super::order::Unit {
            table,
            name: name(&entry.config),
            kind,
        });
    }
}

/// Names are one namespace: forkctl addresses a program, pool or service by
/// name alone. The second use of a name is the error.
fn check_unique_names(sink: &mut Sink, text: &str, mut names: Vec<(&str, &str, &Span)>) {
    names.sort_by_key(|(_, _, span)| span.start);
    let mut first: HashMap<&str, (&str, usize)> = HashMap::new();
    for (name, kind, span) in names {
        let (line, _) = position(text, span.start);
        match first.get(name) {
            None => {
                first.insert(name, (kind, line));
            }
            Some((first_kind, first_line)) => {
                let message = format!(
                    "duplicate name \"{name}\": the [[{first_kind}]] at line {first_line} already uses it (programs, pools and services share one set of names, since forkctl addresses each by name)"
                );
                sink.error(span, message);
            }
        }
    }
}
