//! Reload without dropping a connection: eight clients keep opening
//! connections to an echo service with the default limits while forkd is
//! reloaded 10 times, and not one connection is refused, reset or left
//! unanswered, whether the reload changes something else or the echo
//! service itself (then its open listening socket is handed from the old
//! service to the new one), in fork, prefork and event mode. A UDP client
//! beside them has every datagram answered.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;
use nix::sys::signal::Signal;

const T: Duration = Duration::from_secs(10);
const RELOADS: usize = 10;
/// Clients at once, all from 127.0.0.1.
const CLIENTS: usize = 8;
/// The client's bounds, whatever the reloads do.
const MAX_CONNECTIONS: usize = 400_000;
const MAX_TIME: Duration = Duration::from_secs(30);

/// Generation `n` of the config: `vary` and `other` change every time;
/// `echo` too when `echo_changes`; `keep` never.
fn config(socket: &std::path::Path, mode: &str, n: usize, echo_changes: bool) -> String {
    let (idle, workers) = if echo_changes {
        (format!("{}s", 30 + n), 2 + n % 2)
    } else {
        ("30s".to_string(), 2)
    };
    format!(
        r#"[daemon]
control_socket = "{socket}"

[[program]]
name = "keep"
command = ["/bin/sleep", "1001"]

[[program]]
name = "vary"
command = ["/bin/sleep", "1002"]
env = {{ GENERATION = "{n}" }}

[[service]]
name = "echo"
listen = ["tcp://127.0.0.1:0", "udp://127.0.0.1:0"]
mode = "{mode}"
handler = "echo"
workers = {workers}
idle_timeout = "{idle}"

[[service]]
name = "other"
listen = ["tcp://127.0.0.1:0"]
mode = "prefork"
handler = "echo"
workers = 1
idle_timeout = "{}s"
"#,
        10 + n,
        socket = socket.display(),
    )
}

/// One connection, one request, one reply; the error, if any.
fn one_exchange(addr: &str, i: usize) -> Result<(), String> {
    let mut s = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let msg = format!("request {i}\n");
    s.write_all(msg.as_bytes())
        .map_err(|e| format!("send: {e}"))?;
    let mut got = vec![0u8; msg.len()];
    s.read_exact(&mut got).map_err(|e| format!("reply: {e}"))?;
    if got != msg.to_ascii_uppercase().as_bytes() {
        return Err(format!("wrong reply {:?}", String::from_utf8_lossy(&got)));
    }
    Ok(())
}

fn reloads_under_load(mode: &str, echo_changes: bool) {
    let dir = Scratch::new(&format!("reload-load-{mode}-{echo_changes}"));
    let socket = dir.file("control.sock");
    let path = dir.write("forkd.toml", &config(&socket, mode, 0, echo_changes));
    let forkd = Forkd::start(&path);
    let pid = forkd.pid();
    let addr = bound_address(&forkd.log, "echo", "tcp://");
    let udp_addr = bound_address(&forkd.log, "echo", "udp://");
    wait_until("programs up", T, || {
        children_running(pid, "/bin/sleep 1001").len() == 1
            && children_running(pid, "/bin/sleep 1002").len() == 1
    });
    let keep = children_running(pid, "/bin/sleep 1001");

    let stop = AtomicBool::new(false);
    let made = AtomicUsize::new(0);
    let (done, errors) = std::thread::scope(|scope| {
        let clients: Vec<_> = (0..CLIENTS)
            .map(|c| {
                let (stop, made, addr) = (&stop, &made, &addr);
                scope.spawn(move || {
                    let started = Instant::now();
                    let mut done = 0;
                    let mut errors = Vec::new();
                    while !stop.load(Ordering::Relaxed)
                        && done < MAX_CONNECTIONS / CLIENTS
                        && started.elapsed() < MAX_TIME
                    {
                        if let Err(e) = one_exchange(addr, done) {
                            errors.push(format!("client {c} connection {done}: {e}"));
                        }
                        done += 1;
                        made.fetch_add(1, Ordering::Relaxed);
                    }
                    (done, errors)
                })
            })
            .collect();
        let datagrams = scope.spawn(|| {
            let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            socket
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            let (mut done, mut errors) = (0, Vec::new());
            let mut buf = [0u8; 64];
            while !stop.load(Ordering::Relaxed) && done < MAX_CONNECTIONS {
                let msg = format!("datagram {done}");
                socket.send_to(msg.as_bytes(), &udp_addr).unwrap();
                match socket.recv_from(&mut buf) {
                    Ok((n, _)) if buf[..n] == *msg.to_ascii_uppercase().as_bytes() => {}
                    Ok((n, _)) => errors.push(format!("{msg}: wrong reply {:?}", &buf[..n])),
                    Err(e) => errors.push(format!("{msg}: no reply: {e}")),
                }
                done += 1;
            }
            (done, errors)
        });
        for n in 1..=RELOADS {
            // Each reload lands while connections are being made.
            let before = made.load(Ordering::Relaxed);
            wait_until("the client to make progress", T, || {
                made.load(Ordering::Relaxed) >= before + 10 * CLIENTS
            });
            dir.write("forkd.toml", &config(&socket, mode, n, echo_changes));
            forkd.signal(Signal::SIGHUP);
            forkd.log.wait_count("reloaded ", n, T);
        }
        let last = made.load(Ordering::Relaxed);
        wait_until("the client to go on after the last reload", T, || {
            made.load(Ordering::Relaxed) >= last + 10 * CLIENTS
        });
        stop.store(true, Ordering::Relaxed);
        let (sent, lost) = datagrams.join().expect("datagram client");
        assert!(
            lost.is_empty(),
            "{mode}: {} of {sent} datagrams went unanswered: {:?}",
            lost.len(),
            &lost[..lost.len().min(5)]
        );
        clients
            .into_iter()
            .map(|c| c.join().expect("client thread"))
            .fold((0, Vec::new()), |(n, mut all), (done, errors)| {
                all.extend(errors);
                (n + done, all)
            })
    });
    assert!(
        errors.is_empty(),
        "{mode}: {} of {done} connections failed: {:?}",
        errors.len(),
        &errors[..errors.len().min(10)]
    );
    assert!(
        done >= RELOADS * 10 * CLIENTS,
        "{mode}: only {done} connections were made"
    );
    assert_eq!(forkd.log.count("reload rejected"), 0);
    if echo_changes {
        // In event mode the default max_connections follows workers.
        let changed = if mode == "event" {
            "reload: echo changed (workers, max_connections, idle_timeout)"
        } else {
            "reload: echo changed (workers, idle_timeout)"
        };
        assert_eq!(forkd.log.count(changed), RELOADS);
    } else {
        assert_eq!(forkd.log.count("reload: echo changed"), 0);
    }

    // The address never changed, the old services are gone once drained,
    // the unchanged program was not touched, and everything was reaped.
    wait_until("only the current services remain", T, || {
        let status = status_json(&socket);
        let services = status["services"].as_array().unwrap().clone();
        services.len() == 2 && services.iter().all(|s| s["state"] == "running")
    });
    let status = status_json(&socket);
    let echo = &status["services"][0];
    assert_eq!(echo["name"], "echo");
    assert_eq!(echo["listen"][0], format!("tcp://{addr}"));
    assert_eq!(children_running(pid, "/bin/sleep 1001"), keep, "keep's pid");
    wait_until("the last vary running alone", T, || {
        children_running(pid, "/bin/sleep 1002").len() == 1
    });
    wait_until("no zombies below forkd", T, || {
        zombies_below(pid).is_empty()
    });
}

#[test]
fn fork_mode_serves_every_connection_across_10_reloads_of_other_things() {
    reloads_under_load("fork", false);
}

#[test]
fn prefork_mode_serves_every_connection_across_10_reloads_of_other_things() {
    reloads_under_load("prefork", false);
}

#[test]
fn fork_mode_serves_every_connection_while_the_service_itself_is_replaced_10_times() {
    reloads_under_load("fork", true);
}

#[test]
fn prefork_mode_serves_every_connection_while_the_service_itself_is_replaced_10_times() {
    reloads_under_load("prefork", true);
}

#[test]
fn event_mode_serves_every_connection_across_10_reloads_of_other_things() {
    reloads_under_load("event", false);
}

#[test]
fn event_mode_serves_every_connection_while_the_service_itself_is_replaced_10_times() {
    reloads_under_load("event", true);
}
