#!/usr/bin/env python3
"""Control-path benchmark: forkctl/forkd against supervisorctl/supervisord.

Starts forkd with 50 programs (`sleep 1000`) and times:
  * `forkctl --json status` end to end (median of N runs),
  * raw control requests per second on one connection (status, pipelined
    one at a time: send, read reply),
  * connect-per-request status requests per second.
If supervisor can be installed from PyPI (into a cached venv), runs
supervisord with the same 50 programs on a unix socket and times
`supervisorctl status` the same way, then prints the ratio.

Unix sockets only; everything runs in a temp dir; every process started is
stopped by PID at the end. Run on demand, never in CI:

    python3 bench/control.py [--runs 30] [--programs 50]
"""
import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV = os.path.join(tempfile.gettempdir(), "forkd-bench-venv")


def wait_for(what, cond, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.05)


def median_run(argv, runs, env=None):
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        out = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
        times.append(time.perf_counter() - t)
        if out.returncode != 0:
            raise SystemExit(f"{argv} failed: {out.stderr.decode()}")
    return statistics.median(times)


def stop(proc, name):
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        print(f"{name} (pid {proc.pid}) did not stop; SIGKILL", file=sys.stderr)
        proc.kill()
        proc.wait()


def forkd_side(tmp, args):
    subprocess.run(["cargo", "build", "--release", "--quiet", "--bins"], cwd=ROOT, check=True)
    forkd = os.path.join(ROOT, "target/release/forkd")
    forkctl = os.path.join(ROOT, "target/release/forkctl")
    sock = os.path.join(tmp, "control.sock")
    conf = os.path.join(tmp, "forkd.toml")
    with open(conf, "w") as f:
        f.write(f'[daemon]\ncontrol_socket = "{sock}"\nlog_level = "warn"\n')
        for i in range(args.programs):
            f.write(f'[[program]]\nname = "p{i}"\ncommand = ["sleep", "1000"]\n')
    proc = subprocess.Popen([forkd, "--config", conf], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=open(os.path.join(tmp, "forkd.log"), "w"))
    try:
        def all_running():
            out = subprocess.run([forkctl, "--socket", sock, "--json", "status"], capture_output=True)
            if out.returncode != 0:
                return False
            progs = json.loads(out.stdout)["programs"]
            return len(progs) == args.programs and all(p["state"] == "running" for p in progs)
        wait_for("forkd's programs running", all_running)
        cli = median_run([forkctl, "--socket", sock, "--json", "status"], args.runs)

        request = b'{"command":"status"}\n'
        conn = socket.socket(socket.AF_UNIX)
        conn.connect(sock)
        reader = conn.makefile("rb")
        n = args.requests
        t = time.perf_counter()
        for _ in range(n):
            conn.sendall(request)
            line = reader.readline()
            assert line.startswith(b'{"ok":true'), line[:200]
        one_conn = n / (time.perf_counter() - t)
        conn.close()

        n2 = max(1, n // 4)
        t = time.perf_counter()
        for _ in range(n2):
            c = socket.socket(socket.AF_UNIX)
            c.connect(sock)
            c.sendall(request)
            c.makefile("rb").readline()
            c.close()
        per_conn = n2 / (time.perf_counter() - t)
        return cli, one_conn, per_conn
    finally:
        stop(proc, "forkd")


def supervisor_available():
    python = os.path.join(VENV, "bin/python")
    if not os.path.exists(python):
        if subprocess.run([sys.executable, "-m", "venv", VENV]).returncode != 0:
            return None
    probe = subprocess.run([python, "-c", "import supervisor"], capture_output=True)
    if probe.returncode != 0:
        inst = subprocess.run([python, "-m", "pip", "install", "--quiet", "supervisor"])
        if inst.returncode != 0:
            return None
    return VENV


def supervisor_side(tmp, args, venv):
    sock = os.path.join(tmp, "supervisor.sock")
    conf = os.path.join(tmp, "supervisord.conf")
    with open(conf, "w") as f:
        f.write(f"""[unix_http_server]
file = {sock}
chmod = 0700
[supervisord]
nodaemon = true
logfile = {tmp}/supervisord.log
pidfile = {tmp}/supervisord.pid
childlogdir = {tmp}
loglevel = warn
[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface
[supervisorctl]
serverurl = unix://{sock}
""")
        for i in range(args.programs):
            f.write(f"[program:p{i}]\ncommand = sleep 1000\nstartsecs = 0\n")
    supervisord = os.path.join(venv, "bin/supervisord")
    supervisorctl = os.path.join(venv, "bin/supervisorctl")
    proc = subprocess.Popen([supervisord, "-c", conf], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def all_running():
            out = subprocess.run([supervisorctl, "-c", conf, "status"], capture_output=True, text=True)
            return out.stdout.count("RUNNING") == args.programs
        wait_for("supervisord's programs running", all_running, timeout=60)
        return median_run([supervisorctl, "-c", conf, "status"], args.runs)
    finally:
        stop(proc, "supervisord")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--programs", type=int, default=50)
    parser.add_argument("--requests", type=int, default=4000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="forkd-bench-") as tmp:
        cli, one_conn, per_conn = forkd_side(tmp, args)
        print(f"{args.programs} programs, median of {args.runs} runs")
        print(f"forkctl --json status:            {cli * 1000:8.2f} ms")
        print(f"status requests, one connection:  {one_conn:8.0f} /s")
        print(f"status requests, connect each:    {per_conn:8.0f} /s")
        venv = supervisor_available()
        if venv is None:
            print("supervisor not installable (PyPI unreachable?): no peer comparison")
            return
        sup = supervisor_side(tmp, args, venv)
        print(f"supervisorctl status:             {sup * 1000:8.2f} ms")
        print(f"ratio supervisorctl / forkctl:    {sup / cli:8.1f}x")


if __name__ == "__main__":
    main()
