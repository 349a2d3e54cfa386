#!/usr/bin/env python3
"""IPC transport benchmark: forkd's ipc channels against the bare mechanism
and the ipc-channel crate, parent and forked child echoing frames.

Run from the repository root:

    python3 bench/ipc.py [--seconds 1] [--repeat 3] [--window 64]
                         [--bulk-window 4] [--only LIST] [--no-build]

Targets (--only takes a comma list):
  forkd-pipe forkd-mqueue forkd-shm  examples/ipc_bench.rs: forkd's
                                     ipc::Parent in a mio Poll, as the
                                     supervisor holds it, and a forked child
                                     echoing on the blocking ipc::Child
  raw-pipe raw-mqueue raw-shm        bench/c/ipc_raw.c: the same exchange
                                     over a bare pipe pair, POSIX queue pair
                                     (4 x 8 KiB, as forkd's) or shm ring
                                     (16 x 64 KiB page-aligned slots,
                                     sem_init pshared=1)
  ipc-channel                        examples/ipc_bench.rs over the
                                     ipc-channel crate's byte channels

Tests (each --seconds after a warm-up of a fifth of it):
  rate     64-byte frames, --window in flight: frames/s
  latency  64-byte frames, one in flight: round trip p50, p99, with the
           parent pinned to CPU 0 and the child to CPU 1, and again with
           both on CPU 0 ("same CPU": no wake-up across CPUs)
  bulk     1 MiB frames, --bulk-window in flight: GB/s of payload one way

Each repetition runs every target once (three process pairs: rate and
bulk unpinned, then each round trip), so targets alternate; the
table shows medians.  Goals: forkd / raw throughput >= 0.9 (frames/s and
GB/s), forkd p50 / raw p50 <= 1.2 (both placements), and forkd shm / forkd
pipe at 1 MiB >= 2.
"""

import argparse
import contextlib
import ctypes
import os
import tempfile
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib as B  # noqa: E402

IPC_BENCH = B.ROOT / "target" / "release" / "examples" / "ipc_bench"
RAW = B.OUT / "ipc_raw"
TRANSPORTS = ["pipe", "mqueue", "shm"]
TARGETS = ([f"forkd-{t}" for t in TRANSPORTS] + [f"raw-{t}" for t in TRANSPORTS]
           + ["ipc-channel"])
ORDER = ["forkd-pipe", "raw-pipe", "forkd-mqueue", "raw-mqueue", "forkd-shm", "raw-shm",
         "ipc-channel"]
METRICS = ["rate", "p50", "p99", "p50c", "p99c", "gbps"]


def build_bench():
    """cargo build --release --example ipc_bench; None or a reason."""
    try:
        r = subprocess.run(["cargo", "build", "--release", "--example", "ipc_bench"],
                           cwd=B.ROOT, capture_output=True, text=True, timeout=1800)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"cargo build --release --example ipc_bench failed: {e}"
    if r.returncode != 0:
        return "cargo build failed: " + " | ".join(r.stderr.strip().splitlines()[-3:])
    return None


def remove_names(pid):
    """The queues and segment a killed run of pid may have left (forkd's
    Parent and ipc_raw unlink them themselves when they get the chance)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        mq_unlink = libc.mq_unlink
    except (OSError, AttributeError):
        mq_unlink = None
    for name in (f"/forkd.{pid}.ipcbench.0.req", f"/forkd.{pid}.ipcbench.0.rsp",
                 f"/forkd-bench-raw.{pid}.req", f"/forkd-bench-raw.{pid}.rsp"):
        if mq_unlink:
            mq_unlink(name.encode())
    with contextlib.suppress(FileNotFoundError):
        os.unlink(f"/dev/shm/forkd.{pid}.ipcbench.0.shm")


def invoke(name, a, pin, tests):
    """One run of a target's program; returns its key=value lines parsed."""
    if name.startswith("raw-"):
        argv = [RAW, "-t", name[4:], "-s", a.seconds, "-w", a.window, "-W", a.bulk_window,
                "-p", pin, "-T", tests]
    else:
        transport = "ipc-channel" if name == "ipc-channel" else name[6:]
        argv = [IPC_BENCH, "--transport", transport, "--seconds", a.seconds,
                "--window", a.window, "--bulk-window", a.bulk_window, "--pin", pin,
                "--tests", tests]
    p = B.Proc(argv, name, stdout=subprocess.PIPE, stderr=a.tmp / f"{name}.stderr")
    try:
        out, _ = p.popen.communicate(timeout=3 * 1.2 * a.seconds + 30)
    except subprocess.TimeoutExpired:
        out = b""
    finally:
        p.stop()
        remove_names(p.pid)
    lines = [dict(kv.split("=", 1) for kv in line.split() if "=" in kv)
             for line in out.decode().splitlines()]
    if len(lines) < len(tests.split(",")):
        raise B.Unavailable(f"status {p.popen.returncode}, {p.stderr_tail() or 'no output'}")
    return lines


def run_target(name, a):
    """A target's figures: rate and bulk where the scheduler puts the two
    processes, then a round trip with the parent on CPU 0 and the child on
    CPU 1 (split), then one with both on CPU 0 (same).  Unpinned round
    trips are bimodal (a wake-up across CPUs costs more than one on the
    same CPU); pinned rate and bulk suffer from any other load on the
    machine.  Returns {metric: value}; raises Unavailable."""
    res = {}
    for f in invoke(name, a, "none", "rate,bulk"):
        if f["test"] == "rate":
            res["rate"] = float(f["per_sec"])
        elif f["test"] == "bulk":
            res["gbps"] = float(f["gb_per_sec"])
    for pin, p50, p99 in (("split", "p50", "p99"), ("same", "p50c", "p99c")):
        for f in invoke(name, a, pin, "latency"):
            res[p50], res[p99] = float(f["p50_us"]), float(f["p99_us"])
    return res


def load_average():
    with open("/proc/loadavg") as f:
        return f.read().split()[0]


def fmt(x, spec):
    return "-" if x is None else format(x, spec)


def verdict(ok):
    return "MET" if ok else "NOT MET"


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=1.0,
                    help="measured seconds per test (default 1)")
    ap.add_argument("--repeat", type=int, default=3, help="repetitions, median taken (default 3)")
    ap.add_argument("--window", type=int, default=64,
                    help="64-byte frames in flight in the rate test (default 64)")
    ap.add_argument("--bulk-window", type=int, default=4,
                    help="1 MiB frames in flight in the bulk test (default 4)")
    ap.add_argument("--only", help="comma list of targets (default: all)")
    ap.add_argument("--no-build", action="store_true",
                    help="skip cargo build --release --example ipc_bench")
    a = ap.parse_args()
    if not (0 < a.seconds <= 30 and 1 <= a.repeat <= 20 and 1 <= a.window <= 4096
            and 1 <= a.bulk_window <= 64):
        ap.error("--seconds in (0, 30], --repeat 1..20, --window 1..4096, --bulk-window 1..64")
    targets = ORDER
    if a.only:
        wanted = [t.strip() for t in a.only.split(",")]
        unknown = [t for t in wanted if t not in TARGETS]
        if unknown:
            ap.error(f"--only: unknown {', '.join(unknown)}; known: {', '.join(TARGETS)}")
        targets = [t for t in ORDER if t in wanted]

    B.setup()
    B.build_c()
    unavailable = {}
    reason = None if a.no_build else build_bench()
    if reason is None and not IPC_BENCH.exists():
        reason = f"{IPC_BENCH} not found"
    if reason:
        for t in targets:
            if not t.startswith("raw-"):
                unavailable[t] = reason
    runs = {t: {m: [] for m in METRICS} for t in targets}
    load_start = load_average()
    B.log(f"{len(targets)} targets x {a.repeat} repetitions, about "
          f"{len(targets) * a.repeat * (4.8 * a.seconds + 0.5) / 60:.1f} min")
    try:
        with tempfile.TemporaryDirectory(prefix="forkd-ipc-") as td:
            a.tmp = Path(td)
            for rep in range(a.repeat):
                for t in targets:
                    if t in unavailable:
                        continue
                    try:
                        res = run_target(t, a)
                    except B.Unavailable as e:
                        unavailable[t] = str(e)
                        print(f"{t}: not available ({e})", flush=True)
                        continue
                    for m in METRICS:
                        runs[t][m].append(res[m])
                    B.log(f"rep {rep + 1} {t:<13} {res['rate']:>10,.0f}/s  p50 {res['p50']:.1f} us"
                          f" (same CPU {res['p50c']:.1f})  p99 {res['p99']:.1f} us"
                          f"  {res['gbps']:.2f} GB/s")
    finally:
        B.cleanup()

    med = {t: {m: B.median(runs[t][m]) for m in METRICS} for t in targets}
    print(f"\nIPC transports: parent + forked echo child, {a.seconds:g} s per test, median "
          f"of {a.repeat}; rate = 64 B frames, {a.window} in flight; round trip = one 64 B "
          f"frame in flight, parent on CPU 0 and child on CPU 1 ('same CPU': both on CPU 0); "
          f"bulk = 1 MiB frames, {a.bulk_window} in flight; load average {load_start} at the "
          f"start, {load_average()} at the end")
    print(f"\n{'':<14}{'64 B':>13}{'round trip, us':>18}{'same CPU, us':>16}{'1 MiB':>9}")
    print(f"{'target':<14}{'frames/s':>13}{'p50':>9}{'p99':>9}{'p50':>8}{'p99':>8}"
          f"{'GB/s':>9}")
    for t in targets:
        if t in unavailable:
            print(f"{t:<14}  not available ({unavailable[t]})")
            continue
        m = med[t]
        print(f"{t:<14}{fmt(m['rate'], ',.0f'):>13}{fmt(m['p50'], '.2f'):>9}"
              f"{fmt(m['p99'], '.2f'):>9}{fmt(m['p50c'], '.2f'):>8}{fmt(m['p99c'], '.2f'):>8}"
              f"{fmt(m['gbps'], '.3f'):>9}")

    def get(t, m):
        return med.get(t, {}).get(m) if t not in unavailable else None

    print("\nratios (goals: forkd/raw throughput >= 0.9, forkd/raw p50 <= 1.2):")
    for tr in TRANSPORTS:
        f, r = f"forkd-{tr}", f"raw-{tr}"
        parts = []
        for m, label, good in (("rate", "frames/s", lambda x: x >= 0.9),
                               ("gbps", "GB/s", lambda x: x >= 0.9),
                               ("p50", "p50", lambda x: x <= 1.2),
                               ("p50c", "p50 same CPU", lambda x: x <= 1.2)):
            x, y = get(f, m), get(r, m)
            if x and y:
                parts.append(f"{label} {x / y:.2f} {verdict(good(x / y))}")
            else:
                parts.append(f"{label} n/a")
        print(f"  {tr:<7} forkd/raw: " + ", ".join(parts))
    print("shm vs pipe at 1 MiB (goal for forkd >= 2):")
    for side in ("forkd", "raw"):
        x, y = get(f"{side}-shm", "gbps"), get(f"{side}-pipe", "gbps")
        tail = f" {verdict(x / y >= 2)}" if side == "forkd" and x and y else ""
        print(f"  {side:<5} shm/pipe: " + (f"{x / y:.2f}{tail}" if x and y else "n/a"))
    print("context, forkd / ipc-channel:")
    ic = {m: get("ipc-channel", m) for m in METRICS}
    for tr in TRANSPORTS:
        f = f"forkd-{tr}"
        if not ic["rate"] or not get(f, "rate"):
            print(f"  {tr:<7} n/a")
            continue
        print(f"  {tr:<7} frames/s {get(f, 'rate') / ic['rate']:.2f}, GB/s "
              f"{get(f, 'gbps') / ic['gbps']:.2f}, p50 {get(f, 'p50') / ic['p50']:.2f}, "
              f"p50 same CPU {get(f, 'p50c') / ic['p50c']:.2f}")


if __name__ == "__main__":
    B.run_main(main)
