#!/usr/bin/env python3
"""Front-end benchmark: forkd's connection modes against classic peers.

Run from the repository root:

    python3 bench/frontend.py [--only LIST] [--duration 3] [--repeat 3]
                              [--prefork-workers 32] [--event-workers 1]
                              [--forkd-set KEY=VALUE] [--no-build]
                              [--forkd PATH] [--json FILE]

Protocol: upper-case echo (every read answered with the same bytes, ASCII
letters upper-cased; EOF ends the session), 64-byte requests.

Workloads (bench/out/loadgen):
  conn-1, conn-8, conn-32  connections/s: connect, one request, reply,
                           close; 1, 8 or 32 client threads
  ka-8, ka-32              requests/s over 8 or 32 kept-alive connections

Targets (--only takes a comma list of these names, or the groups
"forkd" and "peers"; fork, prefork, event and exec alone mean forkd's):
  forkd-fork forkd-prefork forkd-event forkd-exec
  c-fork c-prefork c-epoll py-forking py-threading socat tcpserver

Each repetition starts every target afresh, runs all workloads against it
and stops it.  A forkd target and the peer its goal names run back to
back, the forkd one first in odd repetitions and second in even ones, so
that the machine's drift over the minutes of a run hits both alike (wholly
so for an even --repeat); the
table shows the median of the repetitions, the goals the ratio of the
medians, with the range of the repetitions' own ratios under each.  forkd runs with its defaults
except the settings printed with the results (prefork and event workers
matched to the C peers, and --forkd-set).  forkd targets that cannot
start are reported as "forkd: not available (reason)" and skipped.
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib as B  # noqa: E402

WORKLOADS = [  # name, loadgen mode, concurrency
    ("conn-1", "conn", 1),
    ("conn-8", "conn", 8),
    ("conn-32", "conn", 32),
    ("ka-8", "keepalive", 8),
    ("ka-32", "keepalive", 32),
]
FORKD_TARGETS = ["forkd-fork", "forkd-prefork", "forkd-event", "forkd-exec"]
PEER_TARGETS = ["c-fork", "c-prefork", "c-epoll", "py-forking", "py-threading",
                "socat", "tcpserver"]
ALL_TARGETS = FORKD_TARGETS + PEER_TARGETS
ALL_WL = [w[0] for w in WORKLOADS]
KA_WL = ["ka-8", "ka-32"]
CONN_WL = ["conn-1", "conn-8", "conn-32"]

# (numerator, denominator, minimum ratio or None, workloads it is judged on).
# Every line shows all workloads; the verdict uses the judged ones.  The 3x
# over Python is judged on connection rates only: with kept-alive
# connections both servers are one process per connection doing read/write,
# and even the C fork server is only about 1x Python there.
GOALS = [
    ("forkd-fork", "c-fork", 0.9, ALL_WL),
    ("forkd-fork", "py-forking", 3.0, CONN_WL),
    ("forkd-exec", "tcpserver", 1.2, ALL_WL),
    ("forkd-event", "c-epoll", 0.9, KA_WL),
    ("forkd-prefork", "c-prefork", 0.9, ["ka-8"]),
]
# Each forkd target's peer, the first goal that names it: run next to it.
PAIRS = {}
for _num, _den, _goal, _wl in GOALS:
    if _den in PEER_TARGETS and not _den.startswith("py-"):
        PAIRS.setdefault(_num, _den)


def run_order(targets, rep):
    """The targets of repetition `rep` (0-based): each forkd target next to
    its peer, first in even repetitions and second in odd ones, then the
    rest."""
    order = []
    for forkd, peer in PAIRS.items():
        pair = [t for t in ((forkd, peer) if rep % 2 == 0 else (peer, forkd)) if t in targets]
        order += [t for t in pair if t not in order]
    return order + [t for t in targets if t not in order]


CONTEXT = [  # informative ratios, no goal
    ("forkd-exec", "socat", None, ALL_WL),
    ("c-fork", "py-forking", None, ALL_WL),  # headroom for the 3x goal
    ("tcpserver", "socat", None, ALL_WL),
    ("c-epoll", "c-fork", None, ALL_WL),
]

UPPER = B.OUT / "upper_filter"


def non_defaults(mode, a):
    """The service keys a forkd target sets beyond what it must (listen,
    mode, handler), each with the reason: benchmarks run forkd with the
    defaults a user gets.  per_ip is not set (the default is meant to be 0,
    no limit); pass --forkd-set per_ip=0 where the build still defaults
    to a limit below the 32 clients of conn-32 and ka-32."""
    keys = []
    if mode == "prefork":
        keys.append(("workers", str(a.prefork_workers),
                     "matched to c-prefork's worker count (--prefork-workers)"))
    if mode == "event":
        keys.append(("workers", str(a.event_workers),
                     "matched to c-epoll's process count (--event-workers)"))
    for item in a.forkd_set:
        key, value = item.split("=", 1)
        keys.append((key.strip(), value.strip(), "given with --forkd-set"))
    return keys


def forkd_config(tmp, mode, port, a):
    lines = [
        "[daemon]",
        f"control_socket = {B.toml_str(tmp / 'control.sock')}",
        "",
        "[[service]]",
        'name = "bench"',
        f'listen = ["tcp://127.0.0.1:{port}"]',
        f'mode = "{"fork" if mode == "exec" else mode}"',
    ]
    lines += [f"{key} = {value}" for key, value, _ in non_defaults(mode, a)]
    if mode == "exec":
        lines += ['handler = "exec"', f"command = [{B.toml_str(UPPER)}]"]
    else:
        lines += ['handler = "echo"']
    return "\n".join(lines) + "\n"


def start_target(name, tmp, a):
    """Start a target; returns (Proc, port).  Raises Unavailable."""
    err = tmp / f"{name}.stderr"
    out = B.OUT
    if name.startswith("forkd-"):
        mode = name.split("-", 1)[1]
        port = B.free_port()
        cfg = tmp / f"{name}.toml"
        cfg.write_text(forkd_config(tmp, mode, port, a))
        p = B.Proc([B.FORKD, "--config", cfg], name, stderr=err)
        try:
            p.wait_accepting(port)
        except B.Unavailable:
            p.stop()
            raise
        return p, port
    if name in ("socat",):
        port = B.free_port()
        p = B.Proc(["socat", f"TCP-LISTEN:{port},reuseaddr,fork,bind=127.0.0.1,backlog=1024",
                    f"EXEC:{UPPER}"], name, stderr=err)
        p.wait_accepting(port)
        return p, port
    argv = {
        "c-fork": [out / "fork_server", "0"],
        "c-prefork": [out / "prefork_server", "0", str(a.prefork_workers)],
        "c-epoll": [out / "epoll_server", "0", str(a.event_workers)],
        "py-forking": [sys.executable, B.BENCH / "py_servers.py", "forking", "0"],
        "py-threading": [sys.executable, B.BENCH / "py_servers.py", "threading", "0"],
        # -1 prints the port; -l 0 and -H skip the per-connection DNS lookups;
        # -c/-b lift the 40-connection and 20-SYN defaults above 32 clients.
        "tcpserver": ["tcpserver", "-1", "-q", "-R", "-H", "-l", "0", "-c", "1024",
                      "-b", "1024", "127.0.0.1", "0", UPPER],
    }[name]
    p = B.Proc(argv, name, stdout=subprocess.PIPE, stderr=err)
    try:
        port = p.read_port_line()
        p.wait_accepting(port)
    except B.Unavailable:
        p.stop()
        raise
    return p, port


def run_load(port, mode, conc, duration):
    argv = [str(B.OUT / "loadgen"), "-p", str(port), "-m", mode, "-c", str(conc),
            "-d", str(duration)]
    lg = B.Proc(argv, "loadgen", stdout=subprocess.PIPE)
    try:
        out, _ = lg.popen.communicate(timeout=duration + 20)
    except subprocess.TimeoutExpired:
        lg.stop()
        return {"rps": 0.0, "errors": -1, "note": "loadgen timed out"}
    lg.stop()
    fields = dict(kv.split("=", 1) for kv in out.decode().split() if "=" in kv)
    if "rps" not in fields:
        return {"rps": 0.0, "errors": -1, "note": "no output from loadgen"}
    res = {k: (float(v) if k in ("rps", "seconds") else int(v))
           for k, v in fields.items() if k not in ("mode",)}
    return res


def parse_only(text):
    if not text:
        return list(ALL_TARGETS)
    chosen = []
    for item in text.split(","):
        item = item.strip()
        if item == "forkd":
            names = FORKD_TARGETS
        elif item == "peers":
            names = PEER_TARGETS
        elif item in ("fork", "prefork", "event", "exec"):
            names = [f"forkd-{item}"]
        elif item in ALL_TARGETS:
            names = [item]
        else:
            sys.exit(f"--only: unknown target {item!r}; known: "
                     + ", ".join(ALL_TARGETS + ["forkd", "peers"]))
        chosen += [n for n in names if n not in chosen]
    return [t for t in ALL_TARGETS if t in chosen]


def fmt(x):
    return "-" if x is None else f"{x:,.0f}"


def print_table(targets, med, errs, unavailable):
    w0 = max(len(t) for t in targets) + 2
    print(f"\n{'target':<{w0}}" + "".join(f"{w:>11}" for w in ALL_WL))
    for t in targets:
        if t in unavailable:
            print(f"{t:<{w0}}  not available ({unavailable[t]})")
            continue
        print(f"{t:<{w0}}" + "".join(f"{fmt(med[t].get(w)):>11}" for w in ALL_WL))
    print("(median req/s: conn-* = connections/s, ka-* = requests/s on kept-alive "
          "connections)")
    bad = [(t, w, n) for (t, w), n in sorted(errs.items()) if n]
    if bad:
        print("errors (summed over repetitions): "
              + ", ".join(f"{t}/{w}: {n}" for t, w, n in bad))
    else:
        print("errors: none")


def ratio_line(num, den, goal, judged, med, unavailable):
    label = f"{num} / {den}"
    if goal:
        scope = "all" if judged == ALL_WL else ("conn-*" if judged == CONN_WL
                                                 else ", ".join(judged))
        label += f" (goal >= {goal:g} on {scope})"
    missing = [t for t in (num, den) if t not in med or t in unavailable]
    if missing:
        why = "; ".join(f"{t} {'not available' if t in unavailable else 'not run'}"
                        for t in missing)
        return f"  {label}: n/a ({why})"
    parts, ok = [], True
    for w in ALL_WL:
        n, d = med[num].get(w), med[den].get(w)
        if not n or not d:
            parts.append(f"{w} n/a")
            ok = ok and w not in judged
            continue
        r = n / d
        parts.append(f"{w} {r:.2f}")
        if goal and w in judged and r < goal:
            ok = False
    verdict = (" -> MET" if ok else " -> NOT MET") if goal else ""
    return f"  {label}: " + ", ".join(parts) + verdict


def rep_spread(num, den, raw):
    """The lowest and highest of the repetitions' own num / den ratios, per
    workload: how far one repetition can stray from the ratio of medians."""
    rps = {(r["target"], r["workload"], r["rep"]): r["rps"] for r in raw}
    parts = []
    for w in ALL_WL:
        ratios = [rps[(num, w, rep)] / rps[(den, w, rep)]
                  for (t, wl, rep) in rps
                  if t == num and wl == w and rps.get((den, w, rep))]
        if ratios:
            parts.append(f"{w} {min(ratios):.2f}-{max(ratios):.2f}")
    return ", ".join(parts)


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", help="comma list of targets (default: all)")
    ap.add_argument("--duration", type=float, default=3.0,
                    help="seconds per workload run (default 3)")
    ap.add_argument("--repeat", type=int, default=3, help="repetitions, median taken (default 3)")
    ap.add_argument("--prefork-workers", type=int, default=32,
                    help="workers for forkd prefork and c-prefork (default 32: one "
                         "connection per worker at a time, so ka-32 needs 32)")
    ap.add_argument("--event-workers", type=int, default=1,
                    help="worker processes for forkd event and c-epoll (default 1: "
                         "the single-process epoll server)")
    ap.add_argument("--forkd-set", metavar="KEY=VALUE", action="append", default=[],
                    help="add a key to every forkd [[service]] (repeatable; printed "
                         "with the results as a non-default setting)")
    ap.add_argument("--no-build", action="store_true", help="skip cargo build --release")
    ap.add_argument("--forkd", metavar="PATH", help="use this forkd binary (implies --no-build)")
    ap.add_argument("--json", metavar="FILE", help="also write every run's raw figures here")
    a = ap.parse_args()
    if not (0 < a.duration <= 60 and 1 <= a.repeat <= 20 and 1 <= a.prefork_workers <= 256
            and 1 <= a.event_workers <= 64):
        ap.error("--duration in (0, 60], --repeat 1..20, --prefork-workers 1..256, "
                 "--event-workers 1..64")
    if any("=" not in item for item in a.forkd_set):
        ap.error("--forkd-set takes KEY=VALUE, e.g. --forkd-set per_ip=0")
    targets = parse_only(a.only)
    if a.forkd:
        B.FORKD = Path(a.forkd).resolve()
        a.no_build = True

    B.setup()
    B.build_c()
    unavailable = {}
    if any(t.startswith("forkd-") for t in targets):
        reason = B.forkd_unavailable(a.no_build)
        if reason:
            print(f"forkd: not available ({reason})", flush=True)
            for t in targets:
                if t.startswith("forkd-"):
                    unavailable[t] = reason
    for tool in ("socat", "tcpserver"):
        if tool in targets and subprocess.run(["sh", "-c", f"command -v {tool}"],
                                              capture_output=True).returncode:
            unavailable[tool] = f"{tool} not installed (apt-get install -y " \
                                f"{'socat' if tool == 'socat' else 'ucspi-tcp'})"

    runs = {t: {w: [] for w in ALL_WL} for t in targets}
    raw = []
    est = a.repeat * len(targets) * len(WORKLOADS) * (a.duration + 0.5)
    B.log(f"{len(targets)} targets x {len(WORKLOADS)} workloads x {a.repeat} "
          f"repetitions, about {est / 60:.1f} min")
    try:
        with tempfile.TemporaryDirectory(prefix="forkd-frontend-") as td:
            tmp = Path(td)
            for rep in range(a.repeat):
                for t in run_order(targets, rep):
                    if t in unavailable:
                        continue
                    try:
                        proc, port = start_target(t, tmp, a)
                    except B.Unavailable as e:
                        unavailable[t] = str(e)
                        if t.startswith("forkd-"):
                            print(f"forkd: not available ({t}: {e})", flush=True)
                        else:
                            print(f"{t}: not available ({e})", flush=True)
                        continue
                    try:
                        for wname, mode, conc in WORKLOADS:
                            res = run_load(port, mode, conc, a.duration)
                            runs[t][wname].append(res)
                            raw.append({"rep": rep, "target": t, "workload": wname, **res})
                            B.log(f"rep {rep + 1} {t:<14} {wname:<8} {res['rps']:>10,.0f}/s"
                                  f"  errors={res.get('errors')}")
                            time.sleep(0.3)
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
    print(f"\nfront-end benchmark: 64-byte upper-case echo on 127.0.0.1, "
          f"{a.duration:g} s per run, median of {a.repeat}; prefork workers "
          f"{a.prefork_workers}, event workers {a.event_workers}")
    settings = [(t, key, value, why) for t in targets if t.startswith("forkd-")
                for key, value, why in non_defaults(t.split("-", 1)[1], a)]
    if settings:
        print("forkd settings other than the defaults: " + "; ".join(
            f"{t}: {key} = {value} ({why})" for t, key, value, why in settings))
    else:
        print("forkd settings: the defaults")
    print_table(targets, med, errs, unavailable)
    print("\ngoals:")
    for g in GOALS:
        print(ratio_line(*g, med, unavailable))
        spread = rep_spread(g[0], g[1], raw)
        if spread:
            print(f"    per repetition: {spread}")
    print("context:")
    for g in CONTEXT:
        print(ratio_line(*g, med, unavailable))
    if a.json:
        Path(a.json).write_text(json.dumps({"runs": raw, "median": med,
                                            "unavailable": unavailable}, indent=1))


if __name__ == "__main__":
    B.run_main(main)
