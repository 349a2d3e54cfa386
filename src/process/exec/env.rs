//! The environment and command lookup of a spawn: forkd's own variables
//! minus the ones that speak to forkd alone, which entry sets a name, and
//! `execvp`'s `PATH` search done in the parent.

use std::ffi::{CString, OsStr};
use std::io;
use std::path::Path;

pub(super) const DEFAULT_PATH: &str =
    "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin";

/// `NAME` of a `NAME=value` environment entry.
pub(super) fn variable_name(var: &CString) -> &[u8] {
    let bytes = var.as_bytes();
    bytes.split(|&b| b == b'=').next().unwrap_or(bytes)
}

/// Whether the `NAME=value` entry `var` sets `name`: one byte looked at
/// for most entries (every spawn checks its whole prepared environment).
pub(super) fn sets(var: &CString, name: &[u8]) -> bool {
    let bytes = var.as_bytes();
    bytes.get(name.len()) == Some(&b'=') && bytes.starts_with(name)
}

/// `execvp`'s search, done in the parent: `name` itself if it has a slash,
/// else the first executable file named `name` in `path_var`; `None` if
/// there is none (exec of the bare name then reports ENOENT).
pub(super) fn resolve_in_path(name: &str, path_var: &str) -> Option<std::path::PathBuf> {
    if name.contains('/') {
        return Some(name.into());
    }
    path_var
        .split(':')
        .filter(|d| !d.is_empty())
        .map(|dir| Path::new(dir).join(OsStr::new(name)))
        .find(|candidate| {
            nix::unistd::access(candidate, nix::unistd::AccessFlags::X_OK).is_ok()
                && candidate.is_file()
        })
}

/// Why `argv0` could not be exec'd as things stand, looked up as
/// execvp(3) would: a bare name through the `PATH` of `env` (or the
/// default one), a relative path from `cwd`. `None` when an executable
/// file is there. Only a warning's worth (`forkd --check`): the file may
/// appear, or go, before the program starts, and the exec then runs with
/// the program's own credentials.
pub fn command_problem(
    argv0: &str,
    env: &[(String, String)],
    cwd: Option<&Path>,
) -> Option<String> {
    if !argv0.contains('/') {
        let path_var = env
            .iter()
            .find(|(k, _)| k == "PATH")
            .map_or(DEFAULT_PATH, |(_, v)| v.as_str());
        if resolve_in_path(argv0, path_var).is_some() {
            return None;
        }
        return Some(format!(
            "{argv0:?} is not an executable file in any PATH directory ({path_var})"
        ));
    }
    let path = match cwd {
        Some(dir) if Path::new(argv0).is_relative() => dir.join(argv0),
        _ => Path::new(argv0).to_path_buf(),
    };
    match std::fs::metadata(&path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            Some(format!("{} does not exist", path.display()))
        }
        Err(e) => Some(format!("{}: {e}", path.display())),
        Ok(meta) if meta.is_dir() => Some(format!("{} is a directory", path.display())),
        Ok(_) if nix::unistd::access(&path, nix::unistd::AccessFlags::X_OK).is_err() => {
            Some(format!("{} is not executable", path.display()))
        }
        Ok(_) => None,
    }
}

/// The environment forkd passes on: its own, minus variables that speak to
/// forkd alone (systemd's), plus `extra`.
pub fn child_environment<'a>(
    extra: impl IntoIterator<Item = (&'a String, &'a String)>,
) -> Vec<(String, String)> {
    const PRIVATE: [&str; 6] = [
        "NOTIFY_SOCKET",
        "LISTEN_PID",
        "LISTEN_FDS",
        "LISTEN_FDNAMES",
        "WATCHDOG_PID",
        "WATCHDOG_USEC",
    ];
    let mut env: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| !PRIVATE.contains(&k.as_str()))
        .collect();
    for (k, v) in extra {
        env.retain(|(ek, _)| ek != k);
        env.push((k.clone(), v.clone()));
    }
    env
}
