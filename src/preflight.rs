//! What `forkd --check` (and start-up) can tell beyond the config's
//! validity: commands (of programs, `exec` services and pool workers)
//! that cannot be exec'd as the machine is now, and
//! mqueue pools that this user's RLIMIT_MSGQUEUE cannot hold.
//!
//! Warnings only, never errors: a command may be installed, or a user
//! created, before forkd starts the program, and `--check` still exits 0.
//! This module reads the file system and forkd's environment (for `PATH`,
//! as each program will get it); it never starts anything.

use crate::config::{Config, HandlerKind};
use crate::process::exec::{child_environment, command_problem};

/// Every warning for `config`, in config order: programs, then services,
/// then pools.
pub fn warnings(config: &Config) -> Vec<String> {
    let mut out = command_warnings(config);
    out.extend(mqueue_budget(config));
    out
}

/// The mqueue workers of every pool against RLIMIT_MSGQUEUE, which a
/// forkd without CAP_SYS_RESOURCE cannot raise: past it, workers fail to
/// start with EMFILE (and back off), so say so before.
pub fn mqueue_budget(config: &Config) -> Option<String> {
    let workers: u64 = config
        .pools
        .iter()
        .filter(|p| p.transport == crate::config::Transport::Mqueue)
        .map(|p| u64::from(p.workers))
        .sum();
    let need = workers * crate::ipc::mqueue::BYTES_PER_WORKER;
    let (limit, _) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_MSGQUEUE).ok()?;
    (need > limit).then(|| {
        format!(
            "{workers} mqueue pool workers need about {} KiB of message-queue memory, but RLIMIT_MSGQUEUE (ulimit -q) allows this user {} KiB, shared by all its processes: about {} will start, the rest fail with EMFILE; use transport = \"shm\" or \"pipe\" for some pools, or raise the limit (LimitMSGQUEUE= under systemd)",
            need / 1024,
            limit / 1024,
            limit / crate::ipc::mqueue::BYTES_PER_WORKER
        )
    })
}

/// Programs, `exec` services and exec'd pool workers whose command cannot
/// be exec'd now.
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
    let pools = config.pools.iter().filter_map(|p| {
        let crate::config::WorkerKind::Command(command) = &p.worker else {
            return None;
        };
        let env = child_environment(std::iter::empty());
        let problem = command_problem(command.first()?, &env, None)?;
        Some(format!(
            "pool \"{}\": {problem}: its workers will not start",
            p.name
        ))
    });
    programs.chain(services).chain(pools).collect()
}
