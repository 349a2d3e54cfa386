//! `forkctl`: control a running forkd over its Unix control socket.
//! The command line is `forkd::control::cli`; the commands are in
//! `forkd::control::commands`.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = forkd::control::cli::Cli::parse();
    let code = forkd::control::commands::run(cli);
    std::process::ExitCode::from(code as u8)
}
