#!/usr/bin/env python3
"""Static HTTP benchmark: forkd's `http` handler against nginx serving the
same directory with the same number of worker processes.

Run from the repository root:

    python3 bench/http.py [--only LIST] [--duration 3] [--repeat 3]
                          [--connections 16] [--event-workers N]
                          [--prefork-workers 16] [--no-build] [--forkd PATH]
                          [--json FILE]

Load: wrk (Debian package wrk), 2 threads, `--connections` connections,
GET of a 1 KiB and of a 1 MiB file, with keep-alive (wrk's default) and
without (`Connection: close` on every request, so each request is a new
connection, as classic clients do).

Targets (--only takes a comma list):
  forkd-event    forkd, mode = "event", `--event-workers` workers
                 (default: the CPU count, forkd's own default)
  nginx-event    nginx with worker_processes = the same count
  forkd-prefork  forkd, mode = "prefork", `--prefork-workers` workers (one
                 connection per worker at a time, so at least --connections)
  nginx-prefork  nginx with worker_processes = that count

nginx runs with Debian's stock nginx.conf settings that matter here
(sendfile on, tcp_nopush on, keepalive defaults) and access_log off, since
forkd logs no line per request. forkd runs with its defaults except
`workers` (printed with the results). Each repetition starts every target
afresh and stops it, so targets alternate and drift hits all alike; the
table shows medians and the forkd/nginx ratios of one run.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib as B  # noqa: E402

FILES = {"1k": 1024, "1m": 1 << 20}
WORKLOADS = [  # name, file, keep-alive
    ("1k-ka", "1k", True),
    ("1k-close", "1k", False),
    ("1m-ka", "1m", True),
    ("1m-close", "1m", False),
]
ALL_WL = [w[0] for w in WORKLOADS]
TARGETS = ["forkd-event", "nginx-event", "forkd-prefork", "nginx-prefork"]
# (forkd target, nginx target, {workload: goal})
GOALS = [
    ("forkd-event", "nginx-event",
     {"1k-ka": 1.0, "1k-close": 0.9, "1m-ka": 0.9, "1m-close": 0.9}),
    ("forkd-prefork", "nginx-prefork",
     {"1k-ka": 0.9, "1k-close": 0.9, "1m-ka": 0.9, "1m-close": 0.9}),
]


def workers(target, a):
    return a.event_workers if target.endswith("-event") else a.prefork_workers


def make_root(tmp):
    root = tmp / "root"
    root.mkdir()
    for name, size in FILES.items():
        (root / f"{name}.bin").write_bytes(os.urandom(size))
    (root / "index.html").write_text("<h1>forkd</h1>\n")
    # nginx's workers run as an unprivileged user: let them read the root.
    for p in (tmp, root, *root.iterdir()):
        p.chmod(0o755 if p.is_dir() else 0o644)
    return root


def nginx_config(tmp, target, port, root, a):
    return f"""worker_processes {workers(target, a)};
daemon off;
master_process on;
pid {tmp / (target + '.pid')};
error_log {tmp / (target + '.error.log')} warn;
events {{ worker_connections 4096; }}
http {{
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    server {{
        listen 127.0.0.1:{port};
        root {root};
    }}
}}
"""


def forkd_config(tmp, target, port, root, a):
    mode = target.split("-", 1)[1]
    return f"""[daemon]
control_socket = {B.toml_str(tmp / (target + '.sock'))}

[[service]]
name = "http"
listen = ["tcp://127.0.0.1:{port}"]
mode = "{mode}"
handler = "http"
root = {B.toml_str(root)}
workers = {workers(target, a)}
"""


def start_target(target, tmp, root, a):
    port = B.free_port()
    err = tmp / f"{target}.stderr"
    cfg = tmp / f"{target}.conf"
    if target.startswith("forkd-"):
        cfg.write_text(forkd_config(tmp, target, port, root, a))
        argv = [B.FORKD, "--config", cfg]
    else:
        cfg.write_text(nginx_config(tmp, target, port, root, a))
        argv = ["nginx", "-c", cfg, "-p", tmp]
    p = B.Proc(argv, target, stderr=err)
    try:
        p.wait_accepting(port)
    except B.Unavailable:
        p.stop()
        raise
    return p, port


def run_wrk(port, file, keepalive, a):
    argv = ["wrk", "-t", "2", "-c", str(a.connections), "-d", f"{a.duration:g}s",
            "--timeout", "5s", f"http://127.0.0.1:{port}/{file}.bin"]
    if not keepalive:
        argv[1:1] = ["-H", "Connection: close"]
    w = B.Proc(argv, "wrk", stdout=subprocess.PIPE)
    try:
        out, _ = w.popen.communicate(timeout=a.duration + 30)
    except subprocess.TimeoutExpired:
        w.stop()
        return {"rps": 0.0, "errors": -1, "note": "wrk timed out"}
    w.stop()
    text = out.decode(errors="replace")
    m = re.search(r"Requests/sec:\s+([\d.]+)", text)
    if not m:
        return {"rps": 0.0, "errors": -1, "note": "no Requests/sec in wrk output"}
    errors = 0
    e = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                  text)
    if e:
        # With Connection: close, wrk counts the server's orderly close
        # after a reply as a read "error" on some builds; connect, write
        # and timeout errors are real.
        errors += int(e.group(1)) + int(e.group(3)) + int(e.group(4))
        if keepalive:
            errors += int(e.group(2))
    n = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    if n:
        errors += int(n.group(1))
    return {"rps": float(m.group(1)), "errors": errors}


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", help="comma list of targets (default: all)")
    ap.add_argument("--duration", type=float, default=3.0,
                    help="seconds per workload run (default 3)")
    ap.add_argument("--repeat", type=int, default=3, help="repetitions, median taken")
    ap.add_argument("--connections", type=int, default=16,
                    help="concurrent wrk connections (default 16)")
    ap.add_argument("--event-workers", type=int, default=os.cpu_count() or 1,
                    help="forkd event and nginx-event workers (default: CPU count)")
    ap.add_argument("--prefork-workers", type=int, default=16,
                    help="forkd prefork and nginx-prefork workers (default 16)")
    ap.add_argument("--no-build", action="store_true", help="skip cargo build --release")
    ap.add_argument("--forkd", metavar="PATH", help="use this forkd binary (implies --no-build)")
    ap.add_argument("--json", metavar="FILE", help="also write every run's raw figures here")
    a = ap.parse_args()
    if not (0 < a.duration <= 60 and 1 <= a.repeat <= 20 and 1 <= a.connections <= 1024
            and 1 <= a.event_workers <= 64 and 1 <= a.prefork_workers <= 256):
        ap.error("--duration in (0, 60], --repeat 1..20, --connections 1..1024, "
                 "--event-workers 1..64, --prefork-workers 1..256")
    targets = TARGETS
    if a.only:
        wanted = [t.strip() for t in a.only.split(",")]
        unknown = [t for t in wanted if t not in TARGETS]
        if unknown:
            ap.error(f"--only: unknown {unknown}; known: {', '.join(TARGETS)}")
        targets = [t for t in TARGETS if t in wanted]
    if a.forkd:
        B.FORKD = Path(a.forkd).resolve()
        a.no_build = True

    B.setup()
    unavailable = {}
    for tool, package in (("wrk", "wrk"), ("nginx", "nginx")):
        if subprocess.run(["sh", "-c", f"command -v {tool}"],
                          capture_output=True).returncode:
            if tool == "wrk":
                sys.exit("wrk not installed (apt-get install -y wrk)")
            for t in targets:
                if t.startswith("nginx-"):
                    unavailable[t] = f"nginx not installed (apt-get install -y {package})"
    if any(t.startswith("forkd-") for t in targets):
        reason = B.forkd_unavailable(a.no_build)
        if reason:
            print(f"forkd: not available ({reason})", flush=True)
            for t in targets:
                if t.startswith("forkd-"):
                    unavailable[t] = reason

    runs = {t: {w: [] for w in ALL_WL} for t in targets}
    raw = []
    est = a.repeat * len(targets) * len(WORKLOADS) * (a.duration + 0.5)
    B.log(f"{len(targets)} targets x {len(WORKLOADS)} workloads x {a.repeat} "
          f"repetitions, about {est / 60:.1f} min")
    try:
        with tempfile.TemporaryDirectory(prefix="forkd-http-") as td:
            tmp = Path(td)
            root = make_root(tmp)
            for rep in range(a.repeat):
                for t in targets:
                    if t in unavailable:
                        continue
                    try:
                        proc, port = start_target(t, tmp, root, a)
                    except B.Unavailable as e:
                        unavailable[t] = str(e)
                        print(f"{t}: not available ({e})", flush=True)
                        continue
                    try:
                        for wname, file, keepalive in WORKLOADS:
                            res = run_wrk(port, file, keepalive, a)
                            runs[t][wname].append(res)
                            raw.append({"rep": rep, "target": t, "workload": wname, **res})
                            B.log(f"rep {rep + 1} {t:<14} {wname:<9} {res['rps']:>10,.0f}/s"
                                  f"  errors={res.get('errors')}")
                            if not proc.alive():
                                raise B.Unavailable(
                                    f"died during {wname} (status {proc.popen.returncode})")
                    except B.Unavailable as e:
                        unavailable[t] = str(e)
                        print(f"{t}: {e}", flush=True)
                    finally:
                        proc.stop()
    finally:
        B.cleanup()

    med = {t: {w: B.median([r["rps"] for r in runs[t][w]]) for w in ALL_WL}
           for t in targets if any(runs[t][w] for w in ALL_WL)}
    errs = {(t, w): sum(max(r.get("errors", 0), 0) for r in runs[t][w])
            for t in targets for w in ALL_WL}
    print(f"\nstatic HTTP benchmark: wrk -t 2 -c {a.connections}, {a.duration:g} s per "
          f"run, median of {a.repeat}; event workers {a.event_workers}, prefork "
          f"workers {a.prefork_workers} (forkd and nginx alike)")
    print("forkd settings other than the defaults: workers (matched to nginx's "
          "worker_processes); nginx: access_log off, sendfile on, tcp_nopush on")
    w0 = max(len(t) for t in targets) + 2
    print(f"\n{'target':<{w0}}" + "".join(f"{w:>11}" for w in ALL_WL))
    for t in targets:
        if t in unavailable or t not in med:
            print(f"{t:<{w0}}  not available ({unavailable.get(t, 'no runs')})")
            continue
        print(f"{t:<{w0}}" + "".join(
            f"{'-' if med[t][w] is None else format(med[t][w], ',.0f'):>11}"
            for w in ALL_WL))
    print("(median requests/s; *-close: a new connection per request)")
    bad = [(t, w, n) for (t, w), n in sorted(errs.items()) if n]
    print("errors: " + (", ".join(f"{t}/{w}: {n}" for t, w, n in bad) if bad else "none"))
    print("\nforkd / nginx:")
    for num, den, goals in GOALS:
        if num not in med or den not in med:
            print(f"  {num} / {den}: n/a")
            continue
        parts, ok = [], True
        for w in ALL_WL:
            n, d = med[num][w], med[den][w]
            if not n or not d:
                parts.append(f"{w} n/a")
                ok = False
                continue
            r = n / d
            ok = ok and r >= goals[w]
            parts.append(f"{w} {r:.2f} (goal {goals[w]:g})")
        print(f"  {num} / {den}: " + ", ".join(parts) + (" -> MET" if ok else " -> NOT MET"))
    if a.json:
        Path(a.json).write_text(json.dumps({"runs": raw, "median": med,
                                            "unavailable": unavailable}, indent=1))


if __name__ == "__main__":
    B.run_main(main)
