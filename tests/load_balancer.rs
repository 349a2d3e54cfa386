//! Three hosts behind HAProxy: each host is a network namespace running its
//! own forkd with an `http` service (defaults otherwise) and
//! `metrics_listen`, whose `/healthz` is HAProxy's health check. A client
//! loop through HAProxy sees zero failed requests while host 1's forkd is
//! reloaded (its service changed, so its listener is handed to new
//! workers), host 2's forkd is stopped and started again, and a worker of
//! host 3's service is SIGKILLed: HAProxy's `retries`/`redispatch` and
//! forkd's drain together hide all three. HAProxy marks host 2 DOWN and
//! then UP again, and never the others: neither a reload nor a lost
//! worker makes forkd's `/healthz` fail.
//!
//! HAProxy and the client run in a fourth namespace, the balancer, which
//! stands for the root namespace of a real deployment: every address the
//! test makes lives inside namespaces the test made, each host reached
//! over a veth pair from the balancer. Nothing is added to the machine's
//! own namespace. Needs root, `ip` (iproute2) and `haproxy`; skips with a
//! printed reason otherwise. docs/deployment.md shows the same HAProxy
//! backend; DEVELOPERS.md says how to clean up after a crashed run.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::*;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const TEST: &str = "load_balancer";
const T: Duration = Duration::from_secs(15);
const HOSTS: usize = 3;
/// Ports inside the namespaces, which are the test's own: fixed is fine.
const FRONTEND_PORT: u16 = 8000;
const SERVICE_PORT: u16 = 8080;
const METRICS_PORT: u16 = 9464;
/// Client threads at once, and the bounds of their loop.
const CLIENTS: usize = 4;
const MAX_REQUESTS_EACH: usize = 200_000;
const MAX_TIME: Duration = Duration::from_secs(45);
/// Requests each client makes after the scenario ended, so that the load
/// covered all of it.
const REQUESTS_AFTER: usize = 100;

/// A network namespace the test made, deleted on drop.
struct Netns {
    name: String,
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.name]);
    }
}

/// `ip ARGS...`; its stderr when it fails.
fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("run ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The balancer namespace and the hosts', wired: the balancer holds
/// `hN` with 10.A.B.(4N+1)/30, host N holds `eth0` with 10.A.B.(4N+2)/30.
/// The names carry the test's pid and A.B is that pid modulo 65536, so
/// two runs at once share neither a name nor (below pid 65536, Linux's
/// usual pid_max of 32768 included) an address.
struct Network {
    tag: u32,
    balancer: Netns,
    hosts: Vec<Netns>,
}

impl Network {
    /// Makes the namespaces; `Err` (the reason to skip) when the first
    /// cannot be made, a panic for anything failing after that.
    fn build() -> Result<Network, String> {
        let pid = std::process::id();
        let tag = pid % 65_536;
        let balancer = Netns {
            name: format!("forkd-lb{pid}"),
        };
        ip(&["netns", "add", &balancer.name])?;
        let mut net = Network {
            tag,
            balancer,
            hosts: Vec::new(),
        };
        let lb = net.balancer.name.clone();
        ip(&["-n", &lb, "link", "set", "lo", "up"]).unwrap();
        for n in 0..HOSTS {
            let host = Netns {
                name: format!("forkd-lb{pid}-h{}", n + 1),
            };
            ip(&["netns", "add", &host.name]).unwrap();
            net.hosts.push(host);
            let host = &net.hosts[n].name;
            let link = format!("h{}", n + 1);
            // Made inside the balancer, its peer moved straight into the
            // host: neither end ever exists in the machine's namespace.
            ip(&[
                "-n", &lb, "link", "add", &link, "type", "veth", "peer", "name", "eth0", "netns",
                host,
            ])
            .unwrap();
            let (near, far) = (net.balancer_addr(n), net.host_addr(n));
            ip(&[
                "-n",
                &lb,
                "addr",
                "add",
                &format!("{near}/30"),
                "dev",
                &link,
            ])
            .unwrap();
            ip(&["-n", &lb, "link", "set", &link, "up"]).unwrap();
            ip(&[
                "-n",
                host,
                "addr",
                "add",
                &format!("{far}/30"),
                "dev",
                "eth0",
            ])
            .unwrap();
            ip(&["-n", host, "link", "set", "eth0", "up"]).unwrap();
            ip(&["-n", host, "link", "set", "lo", "up"]).unwrap();
        }
        Ok(net)
    }

    fn addr(&self, last: usize) -> String {
        format!("10.{}.{}.{last}", self.tag / 256, self.tag % 256)
    }

    fn balancer_addr(&self, n: usize) -> String {
        self.addr(4 * n + 1)
    }

    fn host_addr(&self, n: usize) -> String {
        self.addr(4 * n + 2)
    }
}

/// Moves the calling thread into namespace `name`'s network: sockets it
/// opens from then on live there. Only this thread moves (setns(2) with
/// CLONE_NEWNET changes the calling thread's namespace).
fn enter(name: &str) {
    let ns = std::fs::File::open(format!("/run/netns/{name}")).expect("open the namespace");
    // SAFETY: the fd is open for this call; setns only changes the
    // calling thread's network namespace.
    let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns {name}: {}", std::io::Error::last_os_error());
}

/// One host: its files, its config, and its forkd when running.
struct Host {
    dir: Scratch,
    netns: String,
    socket: PathBuf,
    forkd: Option<Forkd>,
}

impl Host {
    /// Host `n` (0-based), serving `hN\n` as its index, in `mode`.
    fn new(net: &Network, n: usize, mode: &str) -> Host {
        let dir = Scratch::new(&format!("lb-h{}", n + 1));
        let root = dir.file("root");
        std::fs::create_dir(&root).unwrap();
        std::fs::write(root.join("index.html"), format!("h{}\n", n + 1)).unwrap();
        let socket = dir.file("control.sock");
        let host = Host {
            netns: net.hosts[n].name.clone(),
            socket,
            dir,
            forkd: None,
        };
        host.write_config(&net.host_addr(n), mode, "60s");
        host
    }

    /// The config; `idle_timeout` is what a reload changes.
    fn write_config(&self, addr: &str, mode: &str, idle_timeout: &str) {
        self.dir.write(
            "forkd.toml",
            &format!(
                r#"[daemon]
control_socket = "{socket}"
metrics_listen = "tcp://{addr}:{METRICS_PORT}"

[[service]]
name = "web"
listen = ["tcp://{addr}:{SERVICE_PORT}"]
mode = "{mode}"
handler = "http"
root = "{root}"
idle_timeout = "{idle_timeout}"
"#,
                socket = self.socket.display(),
                root = self.dir.file("root").display(),
            ),
        );
    }

    /// Starts forkd inside the host's namespace and waits until it serves.
    fn start(&mut self) {
        let forkd = start_forkd_under(
            &["ip", "netns", "exec", &self.netns],
            &self.dir.file("forkd.toml"),
            &[],
        );
        forkd.log.wait_line("service web listening on tcp://", T);
        forkd.log.wait_line("metrics listening on http://", T);
        wait_until("the host's service is healthy", T, || {
            forkctl(&self.socket, &["health"]).code == 0
        });
        self.forkd = Some(forkd);
    }

    fn forkd(&self) -> &Forkd {
        self.forkd.as_ref().expect("the host's forkd runs")
    }

    /// The pids of the service's workers, from `forkctl status --json`.
    fn worker_pids(&self) -> Vec<i64> {
        let status = status_json(&self.socket);
        let web = status["services"]
            .as_array()
            .expect("services array")
            .iter()
            .find(|s| s["name"] == "web")
            .unwrap_or_else(|| panic!("no service web in {status}"))
            .clone();
        web["workers"]
            .as_array()
            .expect("workers array")
            .iter()
            .filter_map(|w| w["pid"].as_i64())
            .collect()
    }
}

/// One server line of `show stat`.
#[derive(Debug)]
#[allow(dead_code)] // read by the Debug print of the final report
struct Server {
    name: String,
    /// `UP`, `DOWN`, or a transition like `UP 1/2`.
    status: String,
    /// `stot`: connections it was given.
    sessions: u64,
    /// `wretr`, `wredis`: attempts HAProxy retried, or sent elsewhere.
    retries: u64,
    redispatches: u64,
    /// `chkfail`, `chkdown`: failed health checks, and UP to DOWN changes.
    failed_checks: u64,
    downs: u64,
}

/// HAProxy in the foreground inside the balancer, killed by PID on drop.
struct Haproxy {
    child: Child,
    stats: PathBuf,
    log: PathBuf,
}

impl Haproxy {
    fn start(net: &Network, dir: &Scratch) -> Haproxy {
        let stats = dir.file("haproxy.sock");
        let servers: String = (0..HOSTS)
            .map(|n| {
                format!(
                    "    server h{} {}:{SERVICE_PORT}\n",
                    n + 1,
                    net.host_addr(n)
                )
            })
            .collect();
        let config = dir.write(
            "haproxy.cfg",
            &format!(
                r#"global
    stats socket {stats} mode 600 level admin

defaults
    mode http
    timeout connect 2s
    timeout client 10s
    timeout server 10s
    timeout check 1s
    retries 3
    option redispatch
    retry-on conn-failure empty-response response-timeout

frontend www
    bind 127.0.0.1:{FRONTEND_PORT}
    default_backend forkd_http

backend forkd_http
    balance roundrobin
    option httpchk GET /healthz
    http-check expect status 200
    default-server check port {METRICS_PORT} inter 200ms fall 2 rise 2
{servers}"#,
                stats = stats.display()
            ),
        );
        let check = Command::new("haproxy")
            .args(["-c", "-q", "-f"])
            .arg(&config)
            .output()
            .expect("run haproxy -c");
        assert!(
            check.status.success(),
            "haproxy -c: {}",
            String::from_utf8_lossy(&check.stderr)
        );
        let log = dir.file("haproxy.log");
        let child = Command::new("ip")
            .args(["netns", "exec", &net.balancer.name, "haproxy", "-db", "-f"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start haproxy");
        let haproxy = Haproxy { child, stats, log };
        wait_until("haproxy's stats socket", T, || {
            UnixStream::connect(&haproxy.stats).is_ok()
        });
        haproxy
    }

    /// Each server of the backend as `show stat` sees it (CSV, fields
    /// named in HAProxy's management guide, section 9.1).
    fn servers(&self) -> Vec<Server> {
        let mut s = UnixStream::connect(&self.stats).expect("connect to haproxy's stats socket");
        s.set_read_timeout(Some(T)).unwrap();
        s.write_all(b"show stat\n").unwrap();
        let mut csv = String::new();
        s.read_to_string(&mut csv).expect("show stat");
        let number = |f: &str| f.parse().unwrap_or(0);
        csv.lines()
            .map(|l| l.split(',').collect::<Vec<_>>())
            .filter(|f| f.len() > 22 && f[0] == "forkd_http" && f[1].starts_with('h'))
            .map(|f| Server {
                name: f[1].to_string(),
                status: f[17].to_string(),
                sessions: number(f[7]),
                retries: number(f[15]),
                redispatches: number(f[16]),
                failed_checks: number(f[21]),
                downs: number(f[22]),
            })
            .collect()
    }

    fn status(&self, server: &str) -> String {
        self.servers()
            .into_iter()
            .find(|s| s.name == server)
            .map(|s| s.status)
            .unwrap_or_else(|| panic!("no server {server} in show stat"))
    }

    fn wait_status(&self, server: &str, want: &str) {
        let mut seen = String::new();
        let deadline = Instant::now() + T;
        while Instant::now() < deadline {
            seen = self.status(server);
            if seen == want {
                return;
            }
            pause();
        }
        panic!("haproxy says {server} is {seen:?}, not {want:?}");
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            eprintln!("--- haproxy's log ---\n{log}");
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One GET through the balancer on its own connection: the body (the
/// host's name) of a 200, or what went wrong. A connection per request
/// makes each request its own HAProxy session, so the balancing, retries
/// and redispatch decide every one of them; on the hosts' side HAProxy
/// keeps its own keep-alive connections, which is what forkd's drain
/// has to end cleanly.
fn get(addr: &str) -> Result<String, String> {
    let mut s = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: forkd\r\nConnection: close\r\n\r\n")
        .map_err(|e| format!("send: {e}"))?;
    let mut reply = Vec::new();
    s.read_to_end(&mut reply)
        .map_err(|e| format!("reply: {e}"))?;
    let reply = String::from_utf8_lossy(&reply);
    let (head, body) = reply
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no reply head in {reply:?}"))?;
    if !head.starts_with("HTTP/1.1 200 ") {
        return Err(head.lines().next().unwrap_or("").to_string());
    }
    Ok(body.trim().to_string())
}

#[test]
fn haproxy_over_three_forkd_hosts_loses_no_request_through_reload_restart_and_a_killed_worker() {
    if !running_as_root(TEST, "make network namespaces")
        || !have_tool("ip", TEST)
        || !have_tool("haproxy", TEST)
    {
        return;
    }
    let net = match Network::build() {
        Ok(net) => net,
        Err(why) => return skip(TEST, &format!("cannot make a network namespace: {why}")),
    };
    let modes = ["prefork", "event", "prefork"];
    let mut hosts: Vec<Host> = (0..HOSTS).map(|n| Host::new(&net, n, modes[n])).collect();
    for host in &mut hosts {
        host.start();
    }
    let dir = Scratch::new("lb");
    let haproxy = Haproxy::start(&net, &dir);
    for n in 0..HOSTS {
        haproxy.wait_status(&format!("h{}", n + 1), "UP");
    }

    let frontend = format!("127.0.0.1:{FRONTEND_PORT}");
    let done = AtomicBool::new(false);
    let served = Mutex::new([0usize; HOSTS]);
    let (made, errors) = std::thread::scope(|scope| {
        let clients: Vec<_> = (0..CLIENTS)
            .map(|c| {
                let (done, served, frontend) = (&done, &served, &frontend);
                let balancer = &net.balancer.name;
                scope.spawn(move || {
                    enter(balancer);
                    let started = Instant::now();
                    let (mut made, mut after, mut errors) = (0, 0, Vec::new());
                    while after < REQUESTS_AFTER {
                        if made == MAX_REQUESTS_EACH || started.elapsed() > MAX_TIME {
                            errors.push(format!("client {c}: out of bounds after {made}"));
                            break;
                        }
                        if done.load(Ordering::Relaxed) {
                            after += 1;
                        }
                        match get(frontend) {
                            Ok(body) => match body.strip_prefix('h').and_then(|n| n.parse().ok()) {
                                Some(n @ 1..=HOSTS) => served.lock().unwrap()[n - 1] += 1,
                                _ => errors.push(format!("client {c}: body {body:?}")),
                            },
                            Err(e) => errors.push(format!("client {c} request {made}: {e}")),
                        }
                        made += 1;
                    }
                    (made, errors)
                })
            })
            .collect();

        let scenario = || {
            wait_until("the clients under way", T, || {
                served.lock().unwrap().iter().all(|&n| n >= 50)
            });
            // Host 1: a reload that changes its service, so new workers
            // take the listener while the old ones drain.
            let h1 = &hosts[0];
            h1.write_config(&net.host_addr(0), modes[0], "61s");
            h1.forkd().signal(Signal::SIGHUP);
            h1.forkd().log.wait_line("reloaded ", T);
            h1.forkd()
                .log
                .wait_line("reload: web (replaced): every old process is down", T);

            // Host 2: stopped, seen DOWN, started again, seen UP.
            let h2 = &mut hosts[1];
            // Its /healthz says 503 while it drains, and nothing once it
            // is gone: HAProxy may see either.
            h2.forkd().signal(Signal::SIGTERM);
            haproxy.wait_status("h2", "DOWN");
            let code = h2.forkd.as_mut().unwrap().wait_exit(T);
            assert_eq!(code, Some(0), "host 2's forkd stops cleanly");
            h2.forkd = None;
            h2.start();
            haproxy.wait_status("h2", "UP");

            // Host 3: one worker SIGKILLed, replaced by forkd.
            let h3 = &hosts[2];
            let before = h3.worker_pids();
            let victim = before[0];
            kill(Pid::from_raw(victim as i32), Signal::SIGKILL).unwrap();
            wait_until("host 3's killed worker replaced", T, || {
                let now = h3.worker_pids();
                now.len() == before.len() && !now.contains(&victim)
            });
        };
        // The flag is set however the scenario ends, so that the clients
        // stop and a failed step is reported rather than waited out.
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(scenario));
        done.store(true, Ordering::Relaxed);
        let mut made = 0;
        let mut errors = Vec::new();
        for client in clients {
            let (m, e) = client.join().expect("client thread");
            made += m;
            errors.extend(e);
        }
        if let Err(panic) = outcome {
            std::panic::resume_unwind(panic);
        }
        (made, errors)
    });

    assert!(
        errors.is_empty(),
        "{} of {made} requests through haproxy failed, e.g. {:?}",
        errors.len(),
        &errors[..errors.len().min(5)]
    );
    let served = *served.lock().unwrap();
    assert_eq!(served.iter().sum::<usize>(), made);
    assert!(
        served.iter().all(|&n| n > 0),
        "every host served some of the {made} requests: {served:?}"
    );
    let totals = haproxy.servers();
    assert!(
        totals.iter().all(|s| s.status == "UP" && s.sessions > 0),
        "haproxy's view at the end: {totals:?}"
    );
    // Neither the reload nor the killed worker took a host out; the stop
    // did, once.
    let downs: Vec<u64> = totals.iter().map(|s| s.downs).collect();
    assert_eq!(downs, [0, 1, 0], "haproxy's view at the end: {totals:?}");
    eprintln!("{made} requests, served per host {served:?}; haproxy: {totals:?}");
}
