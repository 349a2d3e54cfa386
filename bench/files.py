#!/usr/bin/env python3
"""File transfer benchmark: forkd's `files` handler (put and get of one
large file) against a plain socat file copy over loopback.

Run from the repository root:

    python3 bench/files.py [--size-mib 100] [--repeat 5] [--mode fork]
                           [--no-build] [--forkd PATH] [--json FILE]

* **socat**: `socat -u TCP-LISTEN:PORT CREATE:dst` receives while
  `socat -u OPEN:src TCP:127.0.0.1:PORT` sends; the time from starting the
  sender until the receiver has exited (the file is written and closed).
* **forkd put**: one connection to a `files` service with its defaults
  (mode `--mode`, default fork, as the classic server): the put header,
  then the file's bytes with sendfile(2), then a `get` of a missing name,
  whose `"filesize": -1` reply proves the put was stored (a connection's
  requests are served in order); timed from connect to that reply.
* **forkd get**: the same file fetched back, written to a file, timed from
  the request to the last byte.

The file is random bytes in a temporary directory (the page cache holds
it, so the disk is not measured); every received copy is compared with the
source. The sides alternate `--repeat` times; medians and the forkd/socat
ratios (of throughput) are printed.
"""

import argparse
import filecmp
import json
import os
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib as B  # noqa: E402

GOAL = 0.9
CHUNK = 1 << 20


def frame(header):
    data = json.dumps(header).encode()
    return struct.pack("i", len(data)) + data


def read_exact(sock, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise B.Unavailable("forkd closed the connection early")
        buf += chunk
    return bytes(buf)


def read_reply(sock):
    (hlen,) = struct.unpack("i", read_exact(sock, 4))
    return json.loads(read_exact(sock, hlen))


def connect(port):
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def forkd_put(port, src, size):
    start = time.monotonic()
    with connect(port) as s, open(src, "rb") as f:
        s.sendall(frame({"cmd": "put", "filename": "big.bin", "filesize": size}))
        s.sendfile(f)
        s.sendall(frame({"cmd": "get", "filename": "missing.bin"}))
        reply = read_reply(s)
    if reply.get("filesize") != -1:
        raise B.Unavailable(f"unexpected reply after put: {reply}")
    return time.monotonic() - start


def forkd_get(port, dst, size):
    start = time.monotonic()
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    with connect(port) as s, open(dst, "wb") as out:
        s.sendall(frame({"cmd": "get", "filename": "big.bin"}))
        reply = read_reply(s)
        if reply.get("filesize") != size:
            raise B.Unavailable(f"get answered {reply}")
        left = size
        while left:
            n = s.recv_into(view[:min(CHUNK, left)])
            if not n:
                raise B.Unavailable("forkd closed the connection mid-file")
            out.write(view[:n])
            left -= n
    return time.monotonic() - start


def socat_copy(src, dst, tmp):
    port = B.free_port()
    recv = B.Proc(["socat", "-u", f"TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr",
                   f"CREATE:{dst}"], "socat-recv", stderr=tmp / "socat-recv.stderr")
    end = time.monotonic() + 10
    while not listening(port):
        if time.monotonic() > end or not recv.alive():
            recv.stop()
            raise B.Unavailable("socat receiver did not listen")
        time.sleep(0.01)
    start = time.monotonic()
    send = B.Proc(["socat", "-u", f"OPEN:{src}", f"TCP:127.0.0.1:{port}"], "socat-send")
    try:
        recv.popen.wait(timeout=120)
        elapsed = time.monotonic() - start
        send.popen.wait(timeout=10)
    finally:
        send.stop()
        recv.stop()
    return elapsed


def listening(port):
    """Whether a socket listens on 127.0.0.1:port, from /proc/net/tcp (a
    probe connection would be the receiver's one connection)."""
    want = f"0100007F:{port:04X}"
    with open("/proc/net/tcp") as f:
        return any(line.split()[1] == want and line.split()[3] == "0A"
                   for line in f.readlines()[1:])


def start_forkd(tmp, root, mode):
    port = B.free_port()
    cfg = tmp / "forkd.toml"
    cfg.write_text(f"""[daemon]
control_socket = {B.toml_str(tmp / 'control.sock')}

[[service]]
name = "files"
listen = ["tcp://127.0.0.1:{port}"]
mode = "{mode}"
handler = "files"
root = {B.toml_str(root)}
""")
    p = B.Proc([B.FORKD, "--config", cfg], "forkd", stderr=tmp / "forkd.stderr")
    try:
        p.wait_accepting(port)
    except B.Unavailable:
        p.stop()
        raise
    return p, port


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mib", type=int, default=100, help="file size (default 100 MiB)")
    ap.add_argument("--repeat", type=int, default=5, help="repetitions, median taken")
    ap.add_argument("--mode", default="fork", choices=["fork", "prefork", "event"],
                    help="the files service's mode (default fork)")
    ap.add_argument("--no-build", action="store_true", help="skip cargo build --release")
    ap.add_argument("--forkd", metavar="PATH", help="use this forkd binary (implies --no-build)")
    ap.add_argument("--json", metavar="FILE", help="also write every run's raw figures here")
    a = ap.parse_args()
    if not (1 <= a.size_mib <= 4096 and 1 <= a.repeat <= 20):
        ap.error("--size-mib 1..4096, --repeat 1..20")
    if subprocess.run(["sh", "-c", "command -v socat"], capture_output=True).returncode:
        sys.exit("socat not installed (apt-get install -y socat)")
    if a.forkd:
        B.FORKD = Path(a.forkd).resolve()
        a.no_build = True
    B.setup()
    reason = B.forkd_unavailable(a.no_build)
    if reason:
        sys.exit(f"forkd: not available ({reason})")

    size = a.size_mib << 20
    times = {"socat": [], "forkd put": [], "forkd get": []}
    try:
        with tempfile.TemporaryDirectory(prefix="forkd-files-") as td:
            tmp = Path(td)
            root = tmp / "root"
            root.mkdir()
            src = tmp / "src.bin"
            with open(src, "wb") as f:
                for _ in range(a.size_mib):
                    f.write(os.urandom(1 << 20))
            try:
                forkd, port = start_forkd(tmp, root, a.mode)
            except B.Unavailable as e:
                sys.exit(f"forkd: not available ({e})")
            try:
                for rep in range(a.repeat):
                    dst = tmp / "socat.out"
                    t = socat_copy(src, dst, tmp)
                    if not filecmp.cmp(src, dst, shallow=False):
                        sys.exit("socat's copy differs from the source")
                    times["socat"].append(t)
                    (root / "big.bin").unlink(missing_ok=True)
                    times["forkd put"].append(forkd_put(port, src, size))
                    if not filecmp.cmp(src, root / "big.bin", shallow=False):
                        sys.exit("forkd's stored copy differs from the source")
                    dst = tmp / "get.out"
                    times["forkd get"].append(forkd_get(port, dst, size))
                    if not filecmp.cmp(src, dst, shallow=False):
                        sys.exit("forkd's served copy differs from the source")
                    B.log(f"rep {rep + 1}: " + ", ".join(
                        f"{k} {size / v[-1] / 1e6:,.0f} MB/s" for k, v in times.items()))
                    for p in (tmp / "socat.out", tmp / "get.out"):
                        p.unlink(missing_ok=True)
            finally:
                forkd.stop()
    finally:
        B.cleanup()

    med = {k: B.median(v) for k, v in times.items()}
    print(f"\nfiles benchmark: one {a.size_mib} MiB file over 127.0.0.1, median of "
          f"{a.repeat}; forkd files service with its defaults, mode = \"{a.mode}\"")
    for k, t in med.items():
        print(f"  {k:<10} {t * 1000:8.1f} ms  {size / t / 1e6:8,.0f} MB/s")
    print("forkd / socat (throughput):")
    for k in ("forkd put", "forkd get"):
        r = med["socat"] / med[k]
        print(f"  {k}: {r:.2f} (goal >= {GOAL:g})" + (" -> MET" if r >= GOAL else " -> NOT MET"))
    if a.json:
        Path(a.json).write_text(json.dumps({"seconds": times, "size": size}, indent=1))


if __name__ == "__main__":
    B.run_main(main)
