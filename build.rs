//! Link flags for forkd's binaries.
//!
//! `-z keep-text-section-prefix`: the functions a fork-mode connection
//! child runs are marked `#[link_section = ".text.hot.forkd_child"]`; with
//! this flag the linker (lld, Rust's default on x86-64 Linux, and GNU ld
//! alike) keeps `.text.hot.*` together in one output section instead of
//! scattering each piece among its object file's other code, so a fresh
//! child faults in one page of forkd's code instead of eight
//! (bench/README.md, "Where a fork-mode connection's time goes").

fn main() {
    println!("cargo:rustc-link-arg-bins=-Wl,-z,keep-text-section-prefix");
}
