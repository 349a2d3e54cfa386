"""Shared plumbing for the forkd benchmarks: building, starting and always
stopping processes, free loopback ports, medians.

Every process a benchmark starts goes through `Proc`, which starts it in its
own session and remembers it in a registry; `cleanup()` (called from a
`finally` and on SIGINT/SIGTERM) stops each one by PID, then kills any of its
descendants recorded before the stop, and finally its process group.
"""

import contextlib
import os
import selectors
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
OUT = BENCH / "out"
FORKD = ROOT / "target" / "release" / "forkd"

_registry = []


class Unavailable(Exception):
    """A target could not be started; the message says why."""


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def setup():
    """Turn SIGTERM into KeyboardInterrupt so `finally` blocks run, and make
    this process a child subreaper: a killed server's orphans then become
    our children (not init's), so `reap_orphans` can collect them."""

    def on_term(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_term)
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_CHILD_SUBREAPER = 36
        libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def reap_orphans():
    """Kill and reap children of ours that no Proc owns (orphans adopted as
    subreaper).  Live Proc children are left to their Popen."""
    owned = {p.pid for p in _registry}
    for pid, _comm, _start in children(os.getpid()):
        if pid in owned:
            continue
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)


def build_c():
    """Compile the C tools and peers with gcc -O2 into bench/out/."""
    r = subprocess.run(["make", "-s", "-C", str(BENCH)], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"building bench/c failed:\n{r.stdout}{r.stderr}")


def build_forkd():
    """cargo build --release at the repo root; returns None or a reason."""
    try:
        r = subprocess.run(
            ["cargo", "build", "--release"], cwd=ROOT, capture_output=True, text=True,
            timeout=1800,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"cargo build --release failed: {e}"
    if r.returncode != 0:
        tail = r.stderr.strip().splitlines()[-3:]
        return "cargo build --release failed: " + " | ".join(tail)
    if not FORKD.exists():
        return f"{FORKD} missing after build"
    return None


def forkd_unavailable(no_build):
    """Builds forkd unless `no_build`; None when FORKD is there to run,
    else the reason it is not."""
    reason = None if no_build else build_forkd()
    if reason is None and not FORKD.exists():
        reason = f"{FORKD} not found"
    return reason


def free_port():
    """A port that was free a moment ago (bind 0, read it, close).  Only for
    programs that cannot bind port 0 and report it themselves."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_accepts(port, timeout=0.2):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout):
            return True
    except OSError:
        return False


def _stat(pid):
    """(ppid, starttime) of pid from /proc, or None if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    rest = data[data.rindex(b")") + 2:].split()
    # fields after comm: state ppid pgrp session tty tpgid flags minflt
    # cminflt majflt cmajflt utime stime cutime cstime priority nice
    # num_threads itrealvalue starttime ...
    return int(rest[1]), int(rest[19])


def children(pid):
    """[(child pid, comm, starttime)] of direct children of pid."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                data = f.read()
        except OSError:
            continue
        lp, rp = data.index(b"("), data.rindex(b")")
        rest = data[rp + 2:].split()
        if int(rest[1]) == pid:
            found.append((int(entry), data[lp + 1:rp].decode(errors="replace"),
                          int(rest[19])))
    return found


def descendants(pid):
    """[(pid, starttime)] of every descendant of pid, at this moment."""
    table = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = _stat(int(entry))
            if st:
                table[int(entry)] = st
    out, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        for p, (ppid, start) in table.items():
            if ppid == parent:
                out.append((p, start))
                frontier.append(p)
    return out


def vm_rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


class Proc:
    """A started process that is guaranteed to be stopped."""

    def __init__(self, argv, name, stdout=subprocess.DEVNULL, stderr=None, cwd=None):
        """stdout: DEVNULL, PIPE or a file path; stderr: None or a file path."""
        self.name = name
        self.argv = [str(a) for a in argv]
        self.stderr_path = stderr
        errf = open(stderr, "wb") if stderr else subprocess.DEVNULL
        if isinstance(stdout, (str, Path)):
            stdout = open(stdout, "wb")
        try:
            self.popen = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=stdout, stderr=errf,
                cwd=cwd, start_new_session=True,
            )
        except OSError as e:
            raise Unavailable(f"{name}: cannot start {self.argv[0]}: {e}")
        finally:
            if errf is not subprocess.DEVNULL:
                errf.close()
            if hasattr(stdout, "close"):
                stdout.close()
        self.pid = self.popen.pid
        _registry.append(self)

    def alive(self):
        return self.popen.poll() is None

    def stderr_tail(self, n=3):
        if not self.stderr_path:
            return ""
        try:
            lines = Path(self.stderr_path).read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return " | ".join(lines[-n:])

    def read_port_line(self, deadline_s=5.0):
        """Read the first stdout line (the bound port) within a deadline."""
        sel = selectors.DefaultSelector()
        sel.register(self.popen.stdout, selectors.EVENT_READ)
        buf = b""
        end = time.monotonic() + deadline_s
        try:
            while b"\n" not in buf:
                left = end - time.monotonic()
                if left <= 0 or not sel.select(left):
                    raise Unavailable(f"{self.name}: no port printed within {deadline_s}s")
                chunk = os.read(self.popen.stdout.fileno(), 256)
                if not chunk:
                    raise Unavailable(
                        f"{self.name}: exited before printing its port "
                        f"(status {self.popen.wait()}) {self.stderr_tail()}")
                buf += chunk
        finally:
            sel.close()
        try:
            return int(buf.split(b"\n", 1)[0].strip())
        except ValueError:
            raise Unavailable(f"{self.name}: first line is not a port: {buf[:80]!r}")

    def wait_accepting(self, port, deadline_s=10.0):
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            if not self.alive():
                tail = self.stderr_tail()
                raise Unavailable(
                    f"exited with status {self.popen.returncode} before accepting on "
                    f"127.0.0.1:{port}" + (f" ({tail})" if tail else ""))
            if port_accepts(port):
                return
            time.sleep(0.05)
        raise Unavailable(f"not accepting on 127.0.0.1:{port} after {deadline_s}s")

    def stop(self, grace=5.0):
        """SIGTERM by PID, SIGKILL after `grace`; then kill recorded
        descendants (by PID, if still the same process) and the group."""
        if self in _registry:
            _registry.remove(self)
        kids = descendants(self.pid) if self.alive() else []
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, signal.SIGKILL)
                self.popen.wait()
        else:
            self.popen.wait()
        for pid, start in kids:
            st = _stat(pid)
            if st and st[1] == start:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        if self.popen.stdout:
            self.popen.stdout.close()
        reap_orphans()
        return self.popen.returncode


def cleanup():
    """Stop every process still registered (newest first)."""
    while _registry:
        p = _registry[-1]
        try:
            p.stop(grace=2.0)
        except Exception as e:  # keep going: the rest must still be stopped
            log(f"cleanup: stopping {p.name} (pid {p.pid}) failed: {e}")
            if p in _registry:
                _registry.remove(p)
    reap_orphans()


def median(xs):
    return statistics.median(xs) if xs else None


def toml_str(s):
    return '"' + str(s).replace("\\", "\\\\").replace('"', '\\"') + '"'


def run_main(main):
    """Runs a benchmark's main; Ctrl-C stops everything it started."""
    try:
        main()
    except KeyboardInterrupt:
        cleanup()
        sys.exit(130)
