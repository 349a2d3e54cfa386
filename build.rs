//! Link flags for forkd's binaries.
//!
//! `-z keep-text-section-prefix`: the functions a fork-mode connection
//! child runs are marked `#[link_section = ".text.hot.forkd_child"]`. lld
//! (Rust's default linker on x86-64 Linux since 1.90) otherwise scatters
//! each piece among its object file's other code; with the flag it keeps
//! `.text.hot.*` together in one output section, so a fresh child faults in
//! one 64 KiB window of forkd's code instead of eight (bench/README.md,
//! "Where a fork-mode connection's time goes"). GNU ld, which older
//! toolchains link with, groups `.text.hot.*` by its default script
//! anyway and warns that it ignores the flag.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rustc-link-arg-bins=-Wl,-z,keep-text-section-prefix");
}
