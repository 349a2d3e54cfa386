//! `forkctl`: control a running forkd over its Unix control socket.

fn main() -> std::process::ExitCode {
    eprintln!("forkctl: the control socket is not implemented yet");
    std::process::ExitCode::from(forkd::exit::UNREACHABLE as u8)
}
