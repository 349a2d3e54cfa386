//! `mode = "fork"` serves the upper-case echo correctly to 32 concurrent
//! clients over TCP, a Unix socket and UDP.

mod common;

#[test]
fn fork_mode_echoes_for_32_concurrent_clients_over_tcp_unix_and_udp() {
    common::echo_under_32_clients("fork");
}
