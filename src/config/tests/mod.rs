//! Whole-file tests of `Config::parse`: defaults of a valid file, and one
//! test per class of error with its exact `line:col`.

mod errors;
mod valid;

use std::path::Path;

use super::{Config, ConfigError};

/// `text` as a valid `forkd.toml`; panics with the errors otherwise.
pub(super) fn parse(text: &str) -> Config {
    Config::parse(text, Path::new("forkd.toml")).unwrap_or_else(|e| panic!("{e}"))
}

/// The errors of `text`, as `(line, col, message)`.
fn errors(text: &str) -> Vec<(usize, usize, String)> {
    match Config::parse(text, Path::new("forkd.toml")) {
        Ok(_) => panic!("expected errors in:\n{text}"),
        Err(e) => {
            e.0.into_iter()
                .map(
                    |ConfigError {
                         line,
                         column,
                         message,
                         ..
                     }| (line, column, message),
                )
                .collect()
        }
    }
}

/// The one error of `text`; panics when there are more or none.
fn error(text: &str) -> (usize, usize, String) {
    let mut all = errors(text);
    assert_eq!(all.len(), 1, "expected one error, got {all:#?}");
    all.remove(0)
}
