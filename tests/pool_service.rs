//! The `pool` handler through the real binaries, in fork, prefork and
//! event mode at the default limits: frames from TCP and Unix clients are
//! jobs of a `[[pool]]` and come back once each and in order, an over-size
//! frame gets its `ERR` frame and then EOF while another client is served,
//! thousands of short connections from one address at c=32 all succeed,
//! and a failed job's `ERR` comes back in order among good results.

mod common;

use std::io::{BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use common::pool::{frame, read_frame};
use common::*;

const MODES: &[&str] = &["fork", "prefork", "event"];

/// The pools every test's forkd runs: `upper` and `slow` (builtin:sleep,
/// whose non-number payloads fail).
const POOLS: &str = "[[pool]]\nname = \"upper\"\nworker = \"builtin:upper\"\ntransport = \"pipe\"\nworkers = 2\n\n[[pool]]\nname = \"slow\"\nworker = \"builtin:sleep\"\ntransport = \"pipe\"\nworkers = 2\n";

/// A forkd whose service (`echo`, as [`service_config`] names it)
/// forwards to `pool` in `mode`, on TCP and a Unix socket, with `extra`
/// keys and nothing else set.
struct Front {
    forkd: Forkd,
    tcp: String,
    unix: String,
}

fn start(dir: &Scratch, mode: &str, pool: &str, extra: &str) -> Front {
    let listen = format!(
        "listen = [\"tcp://127.0.0.1:0\", \"unix:{}\"]",
        dir.file("front.sock").display()
    );
    let body = format!(
        "{listen}\nmode = \"{mode}\"\nhandler = \"pool\"\npool = \"{pool}\"\n{extra}\n\n{POOLS}"
    );
    let forkd = Forkd::start(&service_config(dir, &body));
    let tcp = bound_address(&forkd.log, "echo", "tcp://");
    let unix = bound_address(&forkd.log, "echo", "unix:");
    Front { forkd, tcp, unix }
}

/// A client stream of either kind.
trait Client: Read + Write + Send + Sized + 'static {
    fn clone_stream(&self) -> Self;
    fn end_sending(&self);
}

impl Client for TcpStream {
    fn clone_stream(&self) -> Self {
        self.try_clone().unwrap()
    }
    fn end_sending(&self) {
        let _ = self.shutdown(Shutdown::Write);
    }
}

impl Client for UnixStream {
    fn clone_stream(&self) -> Self {
        self.try_clone().unwrap()
    }
    fn end_sending(&self) {
        let _ = self.shutdown(Shutdown::Write);
    }
}

/// Sends every payload from a thread (results are read meanwhile), ends
/// the sending side, and returns every result read up to EOF.
fn pipeline<S: Client>(stream: S, payloads: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    let mut writer = stream.clone_stream();
    let sender = std::thread::spawn(move || {
        for p in &payloads {
            writer.write_all(&frame(p)).expect("send a frame");
        }
        writer.end_sending();
    });
    let mut reader = BufReader::with_capacity(1 << 16, stream);
    let results = std::iter::from_fn(|| read_frame(&mut reader)).collect();
    sender.join().expect("the sending thread");
    results
}

/// One frame out, its result back.
fn call(stream: &mut impl Client, payload: &[u8]) -> Vec<u8> {
    stream.write_all(&frame(payload)).expect("send a frame");
    read_frame(stream).expect("a result frame")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn eight_clients_pipelining_500_frames_get_every_result_once_and_in_order() {
    for mode in MODES {
        let dir = Scratch::new(&format!("pool-service-pipeline-{mode}"));
        let front = start(&dir, mode, "upper", "");
        let checked = concurrently(8, |i| {
            let jobs: Vec<Vec<u8>> = (0..500)
                .map(|j| format!("client {i} job {j}").into_bytes())
                .collect();
            let results = if i % 2 == 0 {
                pipeline(tcp(&front.tcp), jobs.clone())
            } else {
                pipeline(unix(&front.unix), jobs.clone())
            };
            assert_eq!(results.len(), jobs.len(), "{mode}: client {i}'s results");
            for (job, result) in jobs.iter().zip(&results) {
                assert_eq!(
                    text(result),
                    text(&job.to_ascii_uppercase()),
                    "{mode}: results in job order"
                );
            }
            results.len()
        });
        assert_eq!(checked, 8 * 500);
        wait_no_zombies(front.forkd.pid());
    }
}

#[test]
fn a_frame_over_max_frame_gets_its_error_then_eof_while_another_client_is_served() {
    for mode in MODES {
        let dir = Scratch::new(&format!("pool-service-maxframe-{mode}"));
        let front = start(&dir, mode, "upper", "max_frame = \"1KiB\"");
        let mut steady = unix(&front.unix);
        assert_eq!(call(&mut steady, b"before"), b"BEFORE");
        let mut big = tcp(&front.tcp);
        big.write_all(&frame(b"fits")).unwrap();
        big.write_all(&frame(&[b'x'; 2048])).unwrap();
        assert_eq!(
            read_frame(&mut big).as_deref(),
            Some(&b"FITS"[..]),
            "{mode}: the frame before it is answered"
        );
        let refusal = text(&read_frame(&mut big).expect("an error frame"));
        assert!(
            refusal.starts_with("ERR a frame of 2048 bytes is over max_frame (1024 bytes)"),
            "{mode}: {refusal}"
        );
        assert_eq!(
            read_frame(&mut big),
            None,
            "{mode}: the connection is closed after the refusal"
        );
        assert_eq!(call(&mut steady, &[b'y'; 1024]), [b'Y'; 1024], "{mode}");
        assert_eq!(call(&mut steady, b"after"), b"AFTER", "{mode}");
    }
}

#[test]
fn thousands_of_short_connections_from_one_address_at_c32_all_succeed() {
    const CLIENTS: usize = 32;
    const EACH: usize = 100;
    for mode in MODES {
        let dir = Scratch::new(&format!("pool-service-load-{mode}"));
        let front = start(&dir, mode, "upper", "");
        let failures: Vec<String> = std::thread::scope(|scope| {
            let threads: Vec<_> = (0..CLIENTS)
                .map(|c| {
                    let addr = front.tcp.as_str();
                    scope.spawn(move || {
                        (0..EACH)
                            .filter_map(|i| one_job(addr, &format!("client {c} job {i}")).err())
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            threads
                .into_iter()
                .flat_map(|t| t.join().expect("a client thread"))
                .collect()
        });
        assert_all_answered(mode, &failures, CLIENTS * EACH);
        wait_no_zombies(front.forkd.pid());
    }
}

/// Connect, one frame, its result, close.
fn one_job(addr: &str, job: &str) -> Result<(), String> {
    let mut s = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(&frame(job.as_bytes()))
        .map_err(|e| format!("send: {e}"))?;
    let mut head = [0u8; 4];
    s.read_exact(&mut head)
        .map_err(|e| format!("result: {e}"))?;
    let mut result = vec![0u8; u32::from_be_bytes(head) as usize];
    s.read_exact(&mut result)
        .map_err(|e| format!("result: {e}"))?;
    if result != job.to_ascii_uppercase().as_bytes() {
        return Err(format!("wrong result {:?}", text(&result)));
    }
    Ok(())
}

#[test]
fn a_failed_job_comes_back_as_err_in_order_among_good_results() {
    let jobs: Vec<Vec<u8>> = ["1", "soon", "2", "later", "0"]
        .iter()
        .map(|j| j.as_bytes().to_vec())
        .collect();
    for mode in MODES {
        let dir = Scratch::new(&format!("pool-service-failed-{mode}"));
        let front = start(&dir, mode, "slow", "");
        let over_tcp = pipeline(tcp(&front.tcp), jobs.clone());
        let over_unix = pipeline(unix(&front.unix), jobs.clone());
        for results in [over_tcp, over_unix] {
            let results: Vec<String> = results.iter().map(|r| text(r)).collect();
            assert_eq!(results.len(), 5, "{mode}: {results:?}");
            assert_eq!(
                [&results[0], &results[2], &results[4]],
                ["1", "2", "0"],
                "{mode}"
            );
            for (failed, payload) in [(&results[1], "soon"), (&results[3], "later")] {
                assert!(
                    failed.starts_with("ERR sleep wants a number of milliseconds")
                        && failed.contains(payload),
                    "{mode}: {failed}"
                );
            }
        }
    }
}
