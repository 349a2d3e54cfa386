#!/usr/bin/env python3
"""Worker-pool benchmark: jobs through a forkd pool against Python's
multiprocessing.Pool and a minimal C broker, and what two workers buy over
one on CPU-bound jobs.

Run from the repository root:

    python3 bench/pool.py [--via call|service] [--transport pipe|mqueue|shm]
                          [--seconds 3] [--repeat 3] [--clients 8]
                          [--window 16] [--calls 30] [--only e2e,sha256]
                          [--no-build] [--forkd PATH]

End to end (e2e): 64-byte jobs, a pool of 2 workers running builtin:upper.
  forkd     bench/out/frame_loadgen, --clients connections each keeping
            --window jobs in flight (jobs/s), then one connection with one
            job in flight (round trip p50); `forkctl call` wall time
            (process start included), separately
  c-broker  bench/out/pool_broker: one epoll loop, clients on a Unix
            socket -> pipe -> 2 forked workers -> pipe -> back, in order;
            the same two loads
  mp-*      bench/py_pool.py: multiprocessing.Pool(2), imap chunksize=1
            and apply_async (jobs/s), apply (round trip p50)
  goals: forkd >= 3x mp imap jobs/s, forkd p50 <= 0.3x mp apply p50,
         forkd >= 0.8x c-broker jobs/s.
  Where the time goes: CPU per job of the supervisor (or broker), of the
  workers and of the load generator, from /proc/PID/schedstat over the
  run, and the supervisor's share of one core: near 100% means its
  single-threaded loop is the limit.

Why pools exist (sha256): builtin:sha256 over 1 MiB payloads with 1 and 2
workers (same transport; 4 connections x 2 jobs in flight), the speed-up
next to multiprocessing.Pool 1 vs 2 on hashlib.sha256 of the same payloads
(goal for forkd >= 1.8).

How forkd is reached (--via): `call` (default) connects to the control
socket, sends {"command":"call","pool":"bench"} and reads the one-line
reply, then speaks frames; `service` adds a [[service]] handler = "pool",
mode = "event" on a Unix socket and connects there.  Both carry the same
frames.
"""

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib as B  # noqa: E402

LOADGEN = B.OUT / "frame_loadgen"
BROKER = B.OUT / "pool_broker"
FORKCTL = B.ROOT / "target" / "release" / "forkctl"
PY_POOL = B.BENCH / "py_pool.py"
POOL = "bench"
MIB = 1 << 20


def forkd_config(tmp, workers, worker, a):
    lines = [
        "[daemon]",
        f"control_socket = {B.toml_str(tmp / 'control.sock')}",
        "",
        "[[pool]]",
        f'name = "{POOL}"',
        f"workers = {workers}",
        f'transport = "{a.transport}"',
        f'worker = "builtin:{worker}"',
    ]
    if a.via == "service":
        lines += [
            "",
            "[[service]]",
            'name = "bench-pool"',
            'handler = "pool"',
            f'pool = "{POOL}"',
            f"listen = [{B.toml_str('unix:' + str(tmp / 'pool.sock'))}]",
            'mode = "event"',
        ]
    return "\n".join(lines) + "\n"


def probe(path, pool, payload, deadline_s=10.0):
    """One job over `path` (upgraded with a call when `pool` is given);
    raises Unavailable with the reason when none succeeds in time."""
    end = time.monotonic() + deadline_s
    last = "no attempt"
    while time.monotonic() < end:
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(2)
                s.connect(str(path))
                f = s.makefile("rwb")
                if pool:
                    f.write(json.dumps({"command": "call", "pool": pool}).encode() + b"\n")
                    f.flush()
                    reply = json.loads(f.readline() or b"{}")
                    if not reply.get("ok"):
                        raise B.Unavailable(f"forkd refused the call: {reply}")
                f.write(len(payload).to_bytes(4, "big") + payload)
                f.flush()
                n = int.from_bytes(f.read(4), "big")
                result = f.read(n)
                if result.startswith(b"ERR "):
                    last = result.decode(errors="replace")
                else:
                    return result
        except OSError as e:
            last = str(e)
        time.sleep(0.1)
    raise B.Unavailable(f"no job answered over {path} in {deadline_s:g}s ({last})")


def start_forkd(tmp, workers, worker, a):
    """forkd with one pool; returns (Proc, socket path, pool for -P)."""
    cfg = tmp / f"forkd-{worker}-{workers}.toml"
    cfg.write_text(forkd_config(tmp, workers, worker, a))
    p = B.Proc([B.FORKD, "--config", cfg], "forkd", stderr=tmp / "forkd.stderr")
    path, pool = ((tmp / "control.sock", POOL) if a.via == "call"
                  else (tmp / "pool.sock", None))
    try:
        end = time.monotonic() + 10
        while not path.exists():
            if not p.alive() or time.monotonic() > end:
                raise B.Unavailable(f"forkd exited with status {p.popen.poll()} "
                                    f"({p.stderr_tail()})" if not p.alive()
                                    else f"{path} not there after 10 s")
            time.sleep(0.05)
        probe(path, pool, b"probe")
        # Every worker up: the pool reports them running.
        while time.monotonic() < end:
            st = pool_status(tmp / "control.sock")
            if st and sum(w.get("state") == "running" for w in st.get("workers", [])) == workers:
                break
            time.sleep(0.05)
    except B.Unavailable:
        p.stop()
        raise
    return p, path, pool


def pool_status(control):
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(2)
            s.connect(str(control))
            f = s.makefile("rwb")
            f.write(b'{"command":"status"}\n')
            f.flush()
            reply = json.loads(f.readline() or b"{}")
    except (OSError, ValueError):
        return None
    for item in reply.get("programs", []) + reply.get("pools", []):
        if item.get("name") == POOL:
            return item
    return None


def start_broker(tmp):
    path = tmp / "broker.sock"
    p = B.Proc([BROKER, path, "2", "upper"], "pool_broker", stdout=subprocess.PIPE,
               stderr=tmp / "broker.stderr")
    try:
        probe(path, None, b"probe")
    except B.Unavailable:
        p.stop()
        raise
    return p, path


def cpu_ns(pid):
    """Time pid has run on a CPU, in ns (schedstat), or 0 if it is gone."""
    try:
        with open(f"/proc/{pid}/schedstat") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 0


def pin_tree(pid, cpu):
    """Moves pid and its children (a server and its workers) to one CPU."""
    for p in [pid] + [k for k, _c, _s in B.children(pid)]:
        try:
            os.sched_setaffinity(p, {cpu})
        except OSError:
            pass


def taskset(argv, cpu):
    """argv run on one CPU (taskset execs it: the pid stays the program's)."""
    return (["taskset", "-c", str(cpu)] + argv) if cpu is not None else argv


def run_loadgen(path, pool, clients, window, size, seconds, check, server_pid=None, cpu=None):
    """Runs frame_loadgen (on `cpu` if given); with server_pid, also the
    CPU the server and its children used meanwhile.  Returns the parsed
    figures."""
    argv = taskset([LOADGEN, "-u", path, "-c", clients, "-w", window, "-s", size, "-d",
                    seconds, "-x", check], cpu)
    if pool:
        argv += ["-P", pool]
    kids = [pid for pid, _c, _s in B.children(server_pid)] if server_pid else []
    before = (cpu_ns(server_pid), sum(cpu_ns(k) for k in kids)) if server_pid else None
    t0 = time.monotonic()
    lg = B.Proc(argv, "frame_loadgen", stdout=subprocess.PIPE)
    try:
        out, _ = lg.popen.communicate(timeout=seconds + 30)
    except subprocess.TimeoutExpired:
        out = b""
    lg.stop()
    wall = time.monotonic() - t0
    fields = dict(kv.split("=", 1) for kv in out.decode().split() if "=" in kv)
    if "rate" not in fields:
        raise B.Unavailable("frame_loadgen printed nothing (timed out?)")
    res = {k: float(v) for k, v in fields.items()}
    res["wall"] = wall
    if before:
        res["server_cpu"] = (cpu_ns(server_pid) - before[0]) / 1e9
        res["workers_cpu"] = (sum(cpu_ns(k) for k in kids) - before[1]) / 1e9
    return res


def forkctl_calls(control, n):
    """Median wall time of `forkctl call` (a new process each), in ms."""
    times = []
    for _ in range(n):
        t = time.monotonic()
        r = subprocess.run([FORKCTL, "--socket", control, "call", POOL], input=b"a" * 64,
                           capture_output=True, timeout=10)
        times.append((time.monotonic() - t) * 1e3)
        if r.returncode != 0 or r.stdout != b"A" * 64:
            raise B.Unavailable(f"forkctl call failed: {r.stderr.decode().strip()}")
    return statistics.median(times)


def run_py(mode, workers, seconds, tmp, cpu=None):
    argv = taskset([sys.executable, PY_POOL, mode, "--workers", workers, "--seconds", seconds,
                    "--size", 64], cpu)
    p = B.Proc(argv, f"py_pool {mode}", stdout=subprocess.PIPE, stderr=tmp / "py.stderr")
    try:
        out, _ = p.popen.communicate(timeout=seconds + 60)
    except subprocess.TimeoutExpired:
        out = b""
    p.stop()
    fields = dict(kv.split("=", 1) for kv in out.decode().split() if "=" in kv)
    if not fields:
        raise B.Unavailable(f"py_pool {mode}: no output ({p.stderr_tail()})")
    return {k: float(v) for k, v in fields.items() if k != "mode"}


def checked(res, what):
    bad = int(res.get("errors", 0) + res.get("err_frames", 0) + res.get("wrong", 0))
    if bad:
        B.log(f"{what}: {bad} errors/ERR frames/wrong results (figure suspect)")
    return bad


class Runs:
    """Figures per (target, metric) over the repetitions."""

    def __init__(self):
        self.data, self.unavailable, self.errors = {}, {}, {}

    def add(self, target, metric, value):
        self.data.setdefault((target, metric), []).append(value)

    def med(self, target, metric):
        return B.median(self.data.get((target, metric), []))

    def fail(self, target, reason):
        self.unavailable.setdefault(target, reason)
        print(f"{target}: not available ({reason})", flush=True)


def e2e_rep(r, tmp, a):
    lg = dict(clients=a.clients, window=a.window, size=64, seconds=a.seconds, check="upper")
    one = dict(clients=1, window=1, size=64, seconds=a.seconds, check="upper")
    if "forkd" not in r.unavailable:
        try:
            p, path, pool = start_forkd(tmp, 2, "upper", a)
            try:
                res = run_loadgen(path, pool, server_pid=p.pid, **lg)
                r.errors["forkd"] = r.errors.get("forkd", 0) + checked(res, "forkd")
                for k in ("rate", "server_cpu", "workers_cpu", "cpu_s", "jobs_total", "wall"):
                    r.add("forkd", k, res[k])
                res = run_loadgen(path, pool, **one)
                r.errors["forkd"] += checked(res, "forkd latency")
                r.add("forkd", "p50", res["p50_us"])
                r.add("forkd", "p99", res["p99_us"])
                r.add("forkd", "call_ms", forkctl_calls(tmp / "control.sock", a.calls))
                pin_tree(p.pid, 0)
                res = run_loadgen(path, pool, cpu=0, **one)
                r.add("forkd", "p50c", res["p50_us"])
                r.add("forkd", "p99c", res["p99_us"])
                B.log(f"forkd     {r.data[('forkd', 'rate')][-1]:>10,.0f} jobs/s  "
                      f"p50 {res['p50_us']:.1f} us")
            finally:
                p.stop()
        except B.Unavailable as e:
            r.fail("forkd", e)
    try:
        p, path = start_broker(tmp)
        try:
            res = run_loadgen(path, None, server_pid=p.pid, **lg)
            r.errors["c-broker"] = r.errors.get("c-broker", 0) + checked(res, "c-broker")
            for k in ("rate", "server_cpu", "workers_cpu", "cpu_s", "jobs_total", "wall"):
                r.add("c-broker", k, res[k])
            res = run_loadgen(path, None, **one)
            r.add("c-broker", "p50", res["p50_us"])
            r.add("c-broker", "p99", res["p99_us"])
            pin_tree(p.pid, 0)
            res = run_loadgen(path, None, cpu=0, **one)
            r.add("c-broker", "p50c", res["p50_us"])
            r.add("c-broker", "p99c", res["p99_us"])
            B.log(f"c-broker  {r.data[('c-broker', 'rate')][-1]:>10,.0f} jobs/s  "
                  f"p50 {res['p50_us']:.1f} us")
        finally:
            p.stop()
    except B.Unavailable as e:
        r.fail("c-broker", e)
    for mode in ("imap", "apply_async", "apply"):
        try:
            res = run_py(mode, 2, a.seconds, tmp)
        except B.Unavailable as e:
            r.fail(f"mp-{mode}", e)
            continue
        if mode == "apply":
            r.add("mp-apply", "p50", res["p50_us"])
            r.add("mp-apply", "p99", res["p99_us"])
            try:
                res = run_py(mode, 2, a.seconds, tmp, cpu=0)
            except B.Unavailable as e:
                r.fail("mp-apply", e)
                continue
            r.add("mp-apply", "p50c", res["p50_us"])
            r.add("mp-apply", "p99c", res["p99_us"])
        else:
            r.add(f"mp-{mode}", "rate", res["rate"])
        B.log(f"mp {mode:<11} " + (f"p50 {res['p50_us']:.1f} us" if mode == "apply"
                                   else f"{res['rate']:>10,.0f} jobs/s"))


def sha_rep(r, tmp, a):
    for workers in (1, 2):
        t = f"forkd-sha256-{workers}"
        if "forkd" not in r.unavailable and t not in r.unavailable:
            try:
                p, path, pool = start_forkd(tmp, workers, "sha256", a)
                try:
                    res = run_loadgen(path, pool, 4, 2, MIB, a.seconds, "sha256",
                                      server_pid=p.pid)
                    r.errors[t] = r.errors.get(t, 0) + checked(res, t)
                    for k in ("rate", "server_cpu", "workers_cpu", "cpu_s", "jobs_total", "wall"):
                        r.add(t, k, res[k])
                    B.log(f"{t} {res['rate']:>8,.1f} jobs/s")
                finally:
                    p.stop()
            except B.Unavailable as e:
                r.fail(t, e)
        t = f"mp-sha256-{workers}"
        try:
            res = run_py("sha256", workers, a.seconds, tmp)
            r.add(t, "rate", res["rate"])
            B.log(f"{t} {res['rate']:>8,.1f} jobs/s")
        except B.Unavailable as e:
            r.fail(t, e)


def fmt(x, spec):
    return "-" if x is None else format(x, spec)


def ratio(r, num, nm, den, dm):
    x, y = r.med(num, nm), r.med(den, dm)
    return x / y if x and y else None


def goal_line(label, value, goal, at_least=True):
    if value is None:
        return f"  {label}: n/a"
    ok = value >= goal if at_least else value <= goal
    return (f"  {label}: {value:.2f} (goal {'>=' if at_least else '<='} {goal:g}) "
            f"-> {'MET' if ok else 'NOT MET'}")


def cpu_lines(r, targets):
    print("\nwhere the time goes (CPU per job over the whole load run, warm-up "
          "included; share = CPU / wall time, 100% = one core):")
    print(f"  {'target':<16}{'supervisor':>22}{'workers (sum)':>22}{'load generator':>20}")
    for t in targets:
        jobs = r.med(t, "jobs_total")
        wall = r.med(t, "wall")
        if not jobs or not wall:
            continue

        def cell(metric):
            cpu = r.med(t, metric)
            return f"{cpu / jobs * 1e6:7.2f} us ({cpu / wall * 100:3.0f}%)"
        print(f"  {t:<16}{cell('server_cpu'):>22}{cell('workers_cpu'):>22}"
              f"{cell('cpu_s'):>20}")
    print("  (c-broker's supervisor column is the broker process)")


def report_e2e(r, a):
    print(f"\nend to end: 64-byte jobs, builtin:upper (C workers upper-case too), 2 workers, "
          f"forkd transport {a.transport}, via {a.via}; {a.seconds:g} s per run, median of "
          f"{a.repeat}")
    print(f"\n{'':<16}{'':>12}{'round trip, us':>20}{'one CPU, us':>18}")
    print(f"{'target':<16}{'jobs/s':>12}{'p50':>10}{'p99':>10}{'p50':>9}{'p99':>9}")
    rows = [("forkd", f"{a.clients} clients x {a.window} in flight; p50: 1 x 1"),
            ("c-broker", "same loads"),
            ("mp-imap", "imap(chunksize=1)"),
            ("mp-apply_async", "256 outstanding"),
            ("mp-apply", "apply, one at a time")]
    for t, note in rows:
        if t in r.unavailable:
            print(f"{t:<16}  not available ({r.unavailable[t]})")
            continue
        print(f"{t:<16}{fmt(r.med(t, 'rate'), ',.0f'):>12}{fmt(r.med(t, 'p50'), '.1f'):>10}"
              f"{fmt(r.med(t, 'p99'), '.1f'):>10}{fmt(r.med(t, 'p50c'), '.1f'):>9}"
              f"{fmt(r.med(t, 'p99c'), '.1f'):>9}   {note}")
    print("(round trip: where the scheduler puts the processes; one CPU: every "
          "process of the target and the client on CPU 0, no wake-up across CPUs)")
    call = r.med("forkd", "call_ms")
    print(f"forkctl call wall time (process start included), median of {a.calls}: "
          + (f"{call:.2f} ms" if call else "n/a"))
    bad = {t: n for t, n in r.errors.items() if n}
    print("errors: " + (", ".join(f"{t} {n}" for t, n in bad.items()) if bad else "none"))
    print("\ngoals:")
    print(goal_line("forkd / mp-imap jobs/s", ratio(r, "forkd", "rate", "mp-imap", "rate"), 3))
    print(goal_line("forkd p50 / mp-apply p50", ratio(r, "forkd", "p50", "mp-apply", "p50"),
                    0.3, at_least=False))
    print(goal_line("forkd p50 / mp-apply p50, one CPU",
                    ratio(r, "forkd", "p50c", "mp-apply", "p50c"), 0.3, at_least=False))
    print(goal_line("forkd / c-broker jobs/s", ratio(r, "forkd", "rate", "c-broker", "rate"),
                    0.8))
    print("context:")
    for label, v in (("forkd / mp-apply_async jobs/s",
                      ratio(r, "forkd", "rate", "mp-apply_async", "rate")),
                     ("forkd p50 / c-broker p50", ratio(r, "forkd", "p50", "c-broker", "p50")),
                     ("forkd p50 / c-broker p50, one CPU",
                      ratio(r, "forkd", "p50c", "c-broker", "p50c"))):
        print(f"  {label}: " + (f"{v:.2f}" if v else "n/a"))
    cpu_lines(r, ["forkd", "c-broker"])


def report_sha(r, a):
    print(f"\nwhy pools exist: sha256 of 1 MiB payloads, 1 vs 2 workers; forkd over "
          f"{a.transport} via {a.via}, 4 connections x 2 in flight; multiprocessing imap "
          f"chunksize=1; {a.seconds:g} s per run, median of {a.repeat}")
    print(f"\n{'target':<14}{'1 worker':>12}{'2 workers':>12}{'speed-up':>10}")
    for side in ("forkd", "mp"):
        one, two = r.med(f"{side}-sha256-1", "rate"), r.med(f"{side}-sha256-2", "rate")
        up = two / one if one and two else None
        print(f"{side:<14}{fmt(one, ',.1f'):>12}{fmt(two, ',.1f'):>12}{fmt(up, '.2f'):>10}"
              "   jobs/s")
    bad = {t: n for t, n in r.errors.items() if n and "sha256" in t}
    print("errors: " + (", ".join(f"{t} {n}" for t, n in bad.items()) if bad else "none"))
    one, two = r.med("forkd-sha256-1", "rate"), r.med("forkd-sha256-2", "rate")
    print(goal_line("forkd 2 workers / 1 worker", two / one if one and two else None, 1.8))
    # What this machine allows: per job, the workers' CPU w can be split
    # over workers, the supervisor's and the load generator's s cannot,
    # and all of it shares the cores.
    t = "forkd-sha256-2"
    jobs = r.med(t, "jobs_total")
    if jobs:
        w = r.med(t, "workers_cpu") / jobs
        s = (r.med(t, "server_cpu") + r.med(t, "cpu_s")) / jobs
        cores = os.cpu_count() or 1
        best = [min(n / w, cores / (w + s)) for n in (1, 2)]
        print(f"  ceiling on this machine ({cores} cores): per job {w * 1e6:.0f} us in a "
              f"worker, {s * 1e6:.0f} us in the supervisor and load generator; 1 worker "
              f"<= {best[0]:,.0f} jobs/s, 2 workers <= {best[1]:,.0f} jobs/s: speed-up <= "
              f"{best[1] / best[0]:.2f}")
    cpu_lines(r, ["forkd-sha256-1", "forkd-sha256-2"])


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--via", choices=["call", "service"], default="call",
                    help="how the load reaches forkd (default call)")
    ap.add_argument("--transport", choices=["pipe", "mqueue", "shm"], default="pipe",
                    help="the pool's transport (default pipe)")
    ap.add_argument("--seconds", type=float, default=3.0, help="seconds per run (default 3)")
    ap.add_argument("--repeat", type=int, default=3, help="repetitions, median taken (default 3)")
    ap.add_argument("--clients", type=int, default=8, help="pipelining clients (default 8)")
    ap.add_argument("--window", type=int, default=16,
                    help="jobs in flight per client (default 16)")
    ap.add_argument("--calls", type=int, default=30,
                    help="forkctl call runs for its median (default 30)")
    ap.add_argument("--only", default="e2e,sha256", help="e2e, sha256 or both (default)")
    ap.add_argument("--no-build", action="store_true", help="skip cargo build --release")
    ap.add_argument("--forkd", metavar="PATH", help="use this forkd binary (implies --no-build; "
                    "forkctl is taken from beside it)")
    a = ap.parse_args()
    parts = [p.strip() for p in a.only.split(",")]
    if not (0 < a.seconds <= 60 and 1 <= a.repeat <= 20 and 1 <= a.clients <= 256
            and 1 <= a.window <= 256 and 1 <= a.calls <= 1000) \
            or not set(parts) <= {"e2e", "sha256"}:
        ap.error("--seconds (0, 60], --repeat 1..20, --clients 1..256, --window 1..256, "
                 "--calls 1..1000, --only e2e,sha256")
    global FORKCTL
    if a.forkd:
        B.FORKD = Path(a.forkd).resolve()
        FORKCTL = B.FORKD.parent / "forkctl"
        a.no_build = True

    B.setup()
    B.build_c()
    r = Runs()
    reason = B.forkd_unavailable(a.no_build)
    if reason:
        r.fail("forkd", reason)
    est = a.repeat * a.seconds * (("e2e" in parts) * 7 + ("sha256" in parts) * 4) * 1.4
    B.log(f"about {est / 60:.1f} min")
    try:
        with tempfile.TemporaryDirectory(prefix="forkd-pool-") as td:
            tmp = Path(td)
            for rep in range(a.repeat):
                B.log(f"repetition {rep + 1} of {a.repeat}")
                if "e2e" in parts:
                    e2e_rep(r, tmp, a)
                if "sha256" in parts:
                    sha_rep(r, tmp, a)
    finally:
        B.cleanup()
    if "e2e" in parts:
        report_e2e(r, a)
    if "sha256" in parts:
        report_sha(r, a)


if __name__ == "__main__":
    B.run_main(main)
