//! Reading one table of `forkd.toml` with positions: typed getters over a
//! spanned `toml::de::DeTable`.
//!
//! Invariant: a getter never stops the parse. A missing key yields its
//! default; a bad one records an error in the [`Sink`] at the offending key
//! or value and yields the default too, so that one pass over the file
//! reports every problem. The value formats themselves live in `values.rs`.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

use super::suggest;
use super::values;
use super::Output;

/// A byte range in the configuration text.
pub(super) type Span = Range<usize>;

/// A TOML value with its span.
pub(super) type Value<'i> = Spanned<DeValue<'i>>;

/// The errors found so far, each at a byte offset; `parse.rs` turns offsets
/// into `line:col` and sorts them into file order.
#[derive(Debug, Default)]
pub(super) struct Sink {
    pub(super) errors: Vec<(usize, String)>,
}

impl Sink {
    pub(super) fn error(&mut self, at: &Span, message: impl Into<String>) {
        self.errors.push((at.start, message.into()));
    }
}

/// One table (`[daemon]`, one `[[program]]`, an inline `rlimits`, …) being read.
pub(super) struct Section<'a, 'i> {
    pub(super) sink: &'a mut Sink,
    pub(super) table: &'a DeTable<'i>,
    /// Where the table starts (its header); missing keys are reported here.
    pub(super) header: Span,
    /// How messages name the table: `[[program]] "api"`.
    pub(super) label: String,
}

impl<'a, 'i> Section<'a, 'i> {
    pub(super) fn new(
        sink: &'a mut Sink,
        table: &'a DeTable<'i>,
        header: Span,
        label: &str,
    ) -> Self {
        Section {
            sink,
            table,
            header,
            label: label.to_string(),
        }
    }

    pub(super) fn error(&mut self, at: &Span, message: impl Into<String>) {
        self.sink.error(at, message);
    }

    /// Reports every key not in `allowed`, with a suggestion when one is close.
    pub(super) fn check_keys(&mut self, allowed: &[&str]) {
        for (key, _) in self.table.iter() {
            let key_text = key.get_ref().as_ref();
            if allowed.contains(&key_text) {
                continue;
            }
            let hint = match suggest::closest(key_text, allowed) {
                Some(close) => format!(" (did you mean \"{close}\"?)"),
                None => format!("; allowed keys: {}", allowed.join(", ")),
            };
            let message = format!("unknown key \"{key_text}\" in {}{hint}", self.label);
            self.sink.error(&key.span(), message);
        }
    }

    pub(super) fn get(&self, key: &str) -> Option<&'a Value<'i>> {
        self.table.get(key)
    }

    pub(super) fn has(&self, key: &str) -> bool {
        self.table.contains_key(key)
    }

    /// Span of the value of `key`, or of the header when it is absent.
    pub(super) fn span_of(&self, key: &str) -> Span {
        self.get(key).map_or(self.header.clone(), |v| v.span())
    }

    pub(super) fn missing(&mut self, key: &str, example: &str) {
        let message = format!(
            "missing required key \"{key}\" in {} (like {example})",
            self.label
        );
        let at = self.header.clone();
        self.sink.error(&at, message);
    }

    fn wrong_type(&mut self, key: &str, value: &Value<'_>, expected: &str) {
        let message = format!(
            "{key} must be {expected}, found {}",
            describe(value.get_ref())
        );
        self.sink.error(&value.span(), message);
    }

    /// A string value; `None` when absent or of another type (reported).
    pub(super) fn string(&mut self, key: &str) -> Option<(&'a str, Span)> {
        let value = self.get(key)?;
        match value.get_ref() {
            DeValue::String(s) => Some((s.as_ref(), value.span())),
            _ => {
                self.wrong_type(key, value, "a string");
                None
            }
        }
    }

    /// A non-empty string naming a file or directory.
    pub(super) fn path(&mut self, key: &str) -> Option<PathBuf> {
        let (text, span) = self.string(key)?;
        if text.is_empty() {
            self.error(&span, format!("{key} must not be empty"));
            return None;
        }
        Some(PathBuf::from(text))
    }

    pub(super) fn bool(&mut self, key: &str, default: bool) -> bool {
        let Some(value) = self.get(key) else {
            return default;
        };
        match value.get_ref() {
            DeValue::Boolean(b) => *b,
            _ => {
                self.wrong_type(key, value, "true or false");
                default
            }
        }
    }

    /// An integer in `min..=max`; `None` when absent or refused (reported).
    pub(super) fn int(&mut self, key: &str, min: i128, max: i128) -> Option<i128> {
        let value = self.get(key)?;
        let DeValue::Integer(integer) = value.get_ref() else {
            self.wrong_type(key, value, "an integer");
            return None;
        };
        let n = i128::from_str_radix(integer.as_str(), integer.radix()).unwrap_or(i128::MAX);
        if n < min {
            self.error(
                &value.span(),
                format!("{key} must be at least {min}, not {n}"),
            );
            None
        } else if n > max {
            self.error(
                &value.span(),
                format!("{key} must be at most {max}, not {n}"),
            );
            None
        } else {
            Some(n)
        }
    }

    pub(super) fn u32(&mut self, key: &str, default: u32, min: u32) -> u32 {
        self.int(key, min.into(), u32::MAX.into())
            .map_or(default, |n| n as u32)
    }

    /// A process count: `min..=MAX_PROCESSES`, so a typo cannot fork-bomb
    /// the host or exhaust forkd's memory on reload.
    pub(super) fn processes(&mut self, key: &str, default: u32, min: u32) -> u32 {
        self.int(key, min.into(), super::MAX_PROCESSES.into())
            .map_or(default, |n| n as u32)
    }

    /// An optional process count, `0..=MAX_PROCESSES`.
    pub(super) fn optional_processes(&mut self, key: &str) -> Option<u32> {
        self.int(key, 0, super::MAX_PROCESSES.into())
            .map(|n| n as u32)
    }

    pub(super) fn u64(&mut self, key: &str, default: u64) -> u64 {
        self.int(key, 0, u64::MAX.into())
            .map_or(default, |n| n as u64)
    }

    pub(super) fn usize(&mut self, key: &str, default: usize) -> usize {
        self.int(key, 0, usize::MAX as i128)
            .map_or(default, |n| n as usize)
    }

    pub(super) fn duration(&mut self, key: &str, default: Duration) -> Duration {
        let Some(value) = self.get(key) else {
            return default;
        };
        let DeValue::String(text) = value.get_ref() else {
            self.wrong_type(key, value, "a duration string with a unit, like \"10s\"");
            return default;
        };
        values::duration(text).unwrap_or_else(|reason| {
            let message = format!("bad duration \"{text}\" for {key}: {reason}");
            self.error(&value.span(), message);
            default
        })
    }

    /// A size in bytes: an integer, or a string with a unit; at most `max`.
    pub(super) fn size(&mut self, key: &str, default: u64, max: u64) -> u64 {
        self.size_value(key, max).unwrap_or(default)
    }

    fn size_value(&mut self, key: &str, max: u64) -> Option<u64> {
        let value = self.get(key)?;
        let bytes = match value.get_ref() {
            DeValue::Integer(_) => self.int(key, 0, u64::MAX.into())? as u64,
            DeValue::String(text) => match values::size(text) {
                Ok(bytes) => bytes,
                Err(reason) => {
                    let message = format!("bad size \"{text}\" for {key}: {reason}");
                    self.error(&value.span(), message);
                    return None;
                }
            },
            _ => {
                self.wrong_type(key, value, "a size, like 65536 or \"64KiB\"");
                return None;
            }
        };
        if bytes > max {
            let message = format!("{key} is {bytes} bytes; the most allowed is {max} bytes");
            self.error(&value.span(), message);
            return None;
        }
        Some(bytes)
    }

    /// A resource limit: a size, or `"unlimited"` (`u64::MAX`, RLIM_INFINITY).
    pub(super) fn limit(&mut self, key: &str) -> Option<u64> {
        let value = self.get(key)?;
        match value.get_ref() {
            DeValue::String(s) if s == "unlimited" => Some(u64::MAX),
            DeValue::String(s) if values::size(s).is_err() => {
                let message = format!(
                    "bad limit \"{s}\" for {key}: use a number, a size like \"1GiB\", or \"unlimited\""
                );
                self.error(&value.span(), message);
                None
            }
            _ => self.size_value(key, u64::MAX),
        }
    }

    /// A file mode: an octal string `"0660"` or an octal integer (`0o660`), at most 0o777.
    pub(super) fn mode(&mut self, key: &str) -> Option<u32> {
        let value = self.get(key)?;
        let mode = match value.get_ref() {
            // A decimal `umask = 22` is 0o26, not what anyone means by it.
            DeValue::Integer(i) if i.radix() == 10 && i.as_str().trim_start_matches('+') != "0" => {
                let message =
                    format!("{key} = {i} is decimal; write the mode in octal: \"0{i}\" or 0o{i}");
                self.error(&value.span(), message);
                return None;
            }
            DeValue::Integer(_) => self.int(key, 0, u32::MAX.into())? as u32,
            DeValue::String(text) => match values::octal_mode(text) {
                Ok(mode) => mode,
                Err(reason) => {
                    let message = format!("bad mode \"{text}\" for {key}: {reason}");
                    self.error(&value.span(), message);
                    return None;
                }
            },
            _ => {
                self.wrong_type(key, value, "an octal string like \"0660\"");
                return None;
            }
        };
        if mode > 0o777 {
            let message = format!(
                "{key} {mode:#o} has bits beyond 0o777; write the mode as an octal string, like \"0660\""
            );
            self.error(&value.span(), message);
            return None;
        }
        Some(mode)
    }

    /// A signal name (or number) to its number.
    pub(super) fn signal(&mut self, key: &str, default: i32) -> i32 {
        let Some(value) = self.get(key) else {
            return default;
        };
        let (text, number) = match value.get_ref() {
            DeValue::String(text) => (text.to_string(), values::signal(text)),
            DeValue::Integer(i) => {
                let n = i.as_str().parse::<i32>().unwrap_or(-1);
                let valid = nix::sys::signal::Signal::try_from(n).is_ok();
                let reason = "no such signal number; use a name like \"TERM\"".to_string();
                (i.to_string(), if valid { Ok(n) } else { Err(reason) })
            }
            _ => {
                self.wrong_type(key, value, "a signal name like \"TERM\"");
                return default;
            }
        };
        number.unwrap_or_else(|reason| {
            let message = format!("bad signal \"{text}\" for {key}: {reason}");
            self.error(&value.span(), message);
            default
        })
    }

    pub(super) fn output(&mut self, key: &str) -> Output {
        let Some((text, span)) = self.string(key) else {
            return Output::Log;
        };
        values::output(text).unwrap_or_else(|reason| {
            self.error(&span, format!("bad value \"{text}\" for {key}: {reason}"));
            Output::Log
        })
    }

    /// One of the keywords in `choices`; the default when absent or refused.
    pub(super) fn keyword<T: Copy>(&mut self, key: &str, choices: &[(&str, T)], default: T) -> T {
        self.optional_keyword(key, choices).unwrap_or(default)
    }

    pub(super) fn optional_keyword<T: Copy>(
        &mut self,
        key: &str,
        choices: &[(&str, T)],
    ) -> Option<T> {
        let (text, span) = self.string(key)?;
        if let Some((_, value)) = choices.iter().find(|(k, _)| *k == text) {
            return Some(*value);
        }
        let names: Vec<&str> = choices.iter().map(|(k, _)| *k).collect();
        let message = format!(
            "bad value \"{text}\" for {key}: use one of {}{}",
            suggest::quoted_list(&names),
            suggest::did_you_mean(text, &names)
        );
        self.error(&span, message);
        None
    }

    /// An argv: a non-empty array of strings whose first one is not empty.
    pub(super) fn command(&mut self, key: &str) -> Option<Vec<String>> {
        let value = self.get(key)?;
        self.argv(key, value)
    }

    /// [`Section::command`] of a value found elsewhere (an entry of a
    /// nested table); `key` is how messages name it.
    pub(super) fn argv(&mut self, key: &str, value: &Value<'_>) -> Option<Vec<String>> {
        let example = "an array of strings, like [\"/bin/cat\", \"-n\"]";
        let DeValue::Array(items) = value.get_ref() else {
            self.wrong_type(key, value, example);
            return None;
        };
        if items.is_empty() {
            self.error(&value.span(), format!("{key} must not be empty: give the program and its arguments, like [\"/bin/cat\", \"-n\"]"));
            return None;
        }
        let mut argv = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            match item.get_ref() {
                DeValue::String(s) => argv.push(s.to_string()),
                other => {
                    let message = format!("{key}[{i}] must be a string, found {}", describe(other));
                    self.error(&item.span(), message);
                    return None;
                }
            }
        }
        if argv[0].is_empty() {
            let message = format!("{key}[0] must not be empty: it names the program to run");
            self.error(&items[0].span(), message);
            return None;
        }
        Some(argv)
    }

    /// A table whose values are all strings (`env`).
    pub(super) fn string_table(&mut self, key: &str) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let Some((table, _)) = self.table_value(key) else {
            return out;
        };
        for (name, value) in table.iter() {
            match value.get_ref() {
                DeValue::String(s) => {
                    out.insert(name.get_ref().to_string(), s.to_string());
                }
                other => {
                    let message = format!(
                        "{key}.{} must be a string, found {} (quote it)",
                        name.get_ref(),
                        describe(other)
                    );
                    self.error(&value.span(), message);
                }
            }
        }
        out
    }

    /// A nested table; `None` when absent or not a table (reported).
    pub(super) fn table_value(&mut self, key: &str) -> Option<(&'a DeTable<'i>, Span)> {
        let value = self.get(key)?;
        match value.get_ref() {
            DeValue::Table(table) => Some((table, value.span())),
            _ => {
                self.wrong_type(key, value, "a table, like { KEY = \"value\" }");
                None
            }
        }
    }
}

/// How a message names a value the user wrote: `the string "two"`.
pub(super) fn describe(value: &DeValue<'_>) -> String {
    match value {
        DeValue::String(s) => format!("the string \"{s}\""),
        DeValue::Integer(i) => format!("the integer {i}"),
        DeValue::Float(f) => format!("the number {f}"),
        DeValue::Boolean(b) => format!("{b}"),
        DeValue::Datetime(d) => format!("the date {d}"),
        DeValue::Array(_) => "an array".to_string(),
        DeValue::Table(_) => "a table".to_string(),
    }
}
