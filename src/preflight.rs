//! What `forkd --check` can tell beyond the config's validity: commands
//! that cannot be exec'd as the machine is now.
//!
//! Warnings only, never errors: a command may be installed, or a user
//! created, before forkd starts the program, and `--check` still exits 0.
//! This module reads the file system and forkd's environment (for `PATH`,
//! as each program will get it); it never starts anything.

use crate::config::{Config, HandlerKind};
use crate::process::exec::{child_environment, command_problem};

/// Every warning for `config`, in config order: programs, then services.
pub fn warnings(config: &Config) -> Vec<String> {
    command_warnings(config)
}

/// Programs and `exec` services whose command cannot be exec'd now.
fn command_warnings(config: &Config) -> Vec<String> {
    let programs = config.programs.iter().filter_map(|p| {
        let env = child_environment(&p.env);
        let problem = command_problem(p.command.first()?, &env, p.cwd.as_deref())?;
        Some(format!(
            "program \"{}\": {problem}: it will not start",
            p.name
        ))
    });
    let services = config
        .services
        .iter()
        .filter(|s| s.handler == HandlerKind::Exec)
        .filter_map(|s| {
            let env = child_environment(std::iter::empty());
            let problem = command_problem(s.command.as_ref()?.first()?, &env, None)?;
            Some(format!(
                "service \"{}\": {problem}: its connections will be closed unserved",
                s.name
            ))
        });
    programs.chain(services).collect()
}
