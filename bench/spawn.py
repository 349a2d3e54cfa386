#!/usr/bin/env python3
"""Spawn + reap throughput and idle memory of forkd, against a raw C loop.

Run from the repository root:

    python3 bench/spawn.py [--seconds 5] [--repeat 3] [--no-build]

1. raw: bench/out/forkexec_loop does fork + execv("/bin/true") + waitpid in
   a loop for SECONDS and prints spawns/s (one child at a time).
2. forkd: one [[program]] running /bin/true with restart = "always" and a
   zero back-off, instances = 1 and instances = 4.  forkd logs one
   "exited with code" line on stderr per reaped child; the rate is the
   number of such lines logged during a SECONDS window (after a 0.5 s
   warm-up) divided by the window's length.
   The sides alternate (raw, forkd x1, forkd x4) REPEAT times; medians and
   the ratios forkd/raw are printed.
3. idle RSS: forkd supervising 10 programs running `sleep 1000`, once all
   10 children exist: VmRSS of the forkd process in MiB.
"""

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib as B  # noqa: E402

MARK = b"exited with code"
WARMUP = 0.5


def run_raw(seconds):
    out = B.OUT / "forkexec_loop"
    r = subprocess.run([str(out), "-t", str(seconds)], capture_output=True, text=True,
                       timeout=seconds + 30)
    fields = dict(kv.split("=", 1) for kv in r.stdout.split())
    if r.returncode != 0 or "rate" not in fields:
        raise RuntimeError(f"forkexec_loop failed: {r.stdout} {r.stderr}")
    return float(fields["rate"])


def daemon_section(tmp):
    return f"[daemon]\ncontrol_socket = {B.toml_str(tmp / 'control.sock')}\n\n"


def spawn_config(tmp, instances):
    return daemon_section(tmp) + f"""[[program]]
name = "true"
command = ["/bin/true"]
restart = "always"
backoff_initial = "0s"
backoff_max = "0s"
start_retries = 1000000000
instances = {instances}
"""


def count_marks(path):
    """Complete log lines containing MARK written so far."""
    data = Path(path).read_bytes()
    data = data[: data.rfind(b"\n") + 1]
    return sum(1 for line in data.split(b"\n") if MARK in line)


def run_forkd(seconds, instances):
    with tempfile.TemporaryDirectory(prefix="forkd-bench-") as t:
        tmp = Path(t)
        cfg = tmp / "forkd.toml"
        cfg.write_text(spawn_config(tmp, instances))
        err = tmp / "stderr.log"
        proc = B.Proc([B.FORKD, "--config", cfg], f"forkd (instances={instances})",
                      stdout=tmp / "stdout.log", stderr=err)
        try:
            time.sleep(WARMUP)
            if not proc.alive():
                raise B.Unavailable(
                    f"forkd exited with status {proc.popen.returncode} during start-up"
                    + (f" ({proc.stderr_tail()})" if proc.stderr_tail() else ""))
            t0, c0 = time.monotonic(), count_marks(err)
            time.sleep(seconds)
            t1, c1 = time.monotonic(), count_marks(err)
            if not proc.alive():
                raise B.Unavailable(
                    f"forkd exited with status {proc.popen.returncode} during the run"
                    + (f" ({proc.stderr_tail()})" if proc.stderr_tail() else ""))
        finally:
            proc.stop()
        if c1 == c0:
            hint = ""
            if MARK in (tmp / "stdout.log").read_bytes():
                hint = " (they went to stdout, the contract says stderr)"
            raise B.Unavailable(f"forkd logged no '{MARK.decode()}' lines{hint}")
        return (c1 - c0) / (t1 - t0)


def idle_rss(nprog=10, deadline_s=10.0):
    with tempfile.TemporaryDirectory(prefix="forkd-bench-") as t:
        tmp = Path(t)
        cfg = tmp / "forkd.toml"
        text = daemon_section(tmp)
        for i in range(nprog):
            text += f'[[program]]\nname = "sleep{i}"\ncommand = ["/bin/sleep", "1000"]\n\n'
        cfg.write_text(text)
        proc = B.Proc([B.FORKD, "--config", cfg], "forkd (idle)",
                      stderr=tmp / "stderr.log")
        try:
            end = time.monotonic() + deadline_s
            while True:
                if not proc.alive():
                    raise B.Unavailable(
                        f"forkd exited with status {proc.popen.returncode}"
                        + (f" ({proc.stderr_tail()})" if proc.stderr_tail() else ""))
                kids = [c for c in B.children(proc.pid) if c[1] == "sleep"]
                if len(kids) >= nprog:
                    break
                if time.monotonic() > end:
                    raise B.Unavailable(
                        f"only {len(kids)} of {nprog} sleep children after {deadline_s}s")
                time.sleep(0.05)
            time.sleep(0.2)  # let start-up allocations settle
            return B.vm_rss_kib(proc.pid) / 1024.0, len(kids)
        finally:
            proc.stop()


def fmt(x):
    return "n/a" if x is None else f"{x:,.0f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=5.0, help="measurement window (default 5)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per side (default 3)")
    ap.add_argument("--no-build", action="store_true", help="skip cargo build --release")
    ap.add_argument("--forkd", metavar="PATH",
                    help="use this forkd binary (implies --no-build)")
    a = ap.parse_args()
    if a.forkd:
        B.FORKD = Path(a.forkd).resolve()
        a.no_build = True
    if not (0 < a.seconds <= 120 and 1 <= a.repeat <= 20):
        ap.error("--seconds must be in (0, 120] and --repeat in 1..20")
    B.setup()
    B.build_c()
    reason = B.forkd_unavailable(a.no_build)
    raw, fk = [], {1: [], 4: []}
    try:
        for i in range(a.repeat):
            raw.append(run_raw(a.seconds))
            B.log(f"run {i + 1}/{a.repeat}: raw {raw[-1]:,.0f}/s")
            for n in (1, 4):
                if reason:
                    continue
                try:
                    fk[n].append(run_forkd(a.seconds, n))
                    B.log(f"run {i + 1}/{a.repeat}: forkd instances={n} {fk[n][-1]:,.0f}/s")
                except B.Unavailable as e:
                    reason = str(e)
        rss = None
        if not reason:
            try:
                rss = idle_rss()
            except B.Unavailable as e:
                rss = str(e)
    finally:
        B.cleanup()

    print(f"\nspawn + reap of /bin/true, {a.seconds:g} s windows, median of {a.repeat}")
    raw_m = B.median(raw)
    print(f"  raw fork+exec+waitpid loop : {fmt(raw_m)} spawns/s   runs: "
          + ", ".join(fmt(x) for x in raw))
    if reason:
        print(f"  forkd: not available ({reason})")
    for n in (1, 4):
        if fk[n]:
            m = B.median(fk[n])
            print(f"  forkd instances={n}         : {fmt(m)} spawns/s   runs: "
                  + ", ".join(fmt(x) for x in fk[n]))
    for n in (1, 4):
        if fk[n] and raw_m:
            print(f"  ratio forkd(instances={n})/raw: {B.median(fk[n]) / raw_m:.2f}")
    if isinstance(rss, tuple):
        print(f"  forkd idle RSS with 10 sleeping children: {rss[0]:.1f} MiB")
    elif isinstance(rss, str):
        print(f"  forkd idle RSS: not available ({rss})")


if __name__ == "__main__":
    B.run_main(main)
