#!/usr/bin/env python3
"""Python's multiprocessing.Pool doing bench/pool.py's jobs, the peer of a
forkd pool.  Run by bench/pool.py (each run its own process, stopped by PID);
prints one key=value line.

    python3 bench/py_pool.py MODE [--workers 2] [--seconds 3] [--warmup 0.5]
                                  [--size 64]

Modes:
  imap         pool.imap(upper, payloads, chunksize=1): jobs/s
  apply_async  apply_async(upper, ...) with 256 results outstanding: jobs/s
  apply        pool.apply(upper, ...) one at a time: round trip p50, p99
  sha256       pool.imap(sha256 hex digest, 1 MiB payloads, chunksize=1):
               jobs/s (--size is ignored: 1 MiB)

Only results that arrive during the measured --seconds (after --warmup)
count; the pool is then terminated.
"""

import argparse
import collections
import hashlib
import multiprocessing
import statistics
import time


def upper(payload):
    return payload.upper()


def sha256(payload):
    return hashlib.sha256(payload).hexdigest().encode()


def endless(payloads):
    while True:
        yield from payloads


class Meter:
    """Counts results in the measured window."""

    def __init__(self, warmup, seconds):
        now = time.monotonic()
        self.start, self.end = now + warmup, now + warmup + seconds
        self.first = self.last = None
        self.done = 0

    def add(self):
        """One more result; False once the window is over."""
        now = time.monotonic()
        if self.first is None and now >= self.start:
            self.first = (self.done, now)
        self.done += 1
        if now >= self.end:
            self.last = (self.done, now)
            return False
        return True

    def rate(self):
        if not (self.first and self.last) or self.last[1] <= self.first[1]:
            return 0, 0.0
        n = self.last[0] - self.first[0]
        return n, n / (self.last[1] - self.first[1])


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["imap", "apply_async", "apply", "sha256"])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--warmup", type=float, default=0.5)
    ap.add_argument("--size", type=int, default=64)
    a = ap.parse_args()
    if not (1 <= a.workers <= 64 and 0 < a.seconds <= 600 and 0 <= a.warmup <= 60
            and 0 <= a.size <= 16 << 20):
        ap.error("--workers 1..64, --seconds (0, 600], --warmup 0..60, --size 0..16MiB")
    # The payloads frame_loadgen sends: lower-case letters from a shifted start.
    size = 1 << 20 if a.mode == "sha256" else a.size
    letters = b"abcdefghijklmnopqrstuvwxyz" * (size // 26 + 2)
    payloads = [letters[k:k + size] for k in range(8)]
    job = sha256 if a.mode == "sha256" else upper
    pool = multiprocessing.Pool(a.workers)
    try:
        meter = Meter(a.warmup, a.seconds)
        line = f"mode={a.mode} workers={a.workers} size={len(payloads[0])}"
        if a.mode in ("imap", "sha256"):
            for _ in pool.imap(job, endless(payloads), chunksize=1):
                if not meter.add():
                    break
            n, rate = meter.rate()
            print(f"{line} jobs={n} rate={rate:.1f}", flush=True)
        elif a.mode == "apply_async":
            outstanding = collections.deque()
            k = 0
            while True:
                if len(outstanding) < 256:
                    outstanding.append(pool.apply_async(job, (payloads[k % 8],)))
                    k += 1
                    continue
                outstanding.popleft().get(timeout=10)
                if not meter.add():
                    break
            n, rate = meter.rate()
            print(f"{line} jobs={n} rate={rate:.1f}", flush=True)
        else:
            samples = []
            k = 0
            while True:
                t = time.monotonic()
                pool.apply(job, (payloads[k % 8],))
                k += 1
                done = time.monotonic()
                if done >= meter.end:
                    break
                if t >= meter.start:
                    samples.append((done - t) * 1e6)
            samples.sort()
            p50 = statistics.median(samples) if samples else 0.0
            p99 = samples[min(len(samples) - 1, int(len(samples) * 0.99))] if samples else 0.0
            print(f"{line} samples={len(samples)} p50_us={p50:.1f} p99_us={p99:.1f}",
                  flush=True)
    finally:
        pool.terminate()
        pool.join()


if __name__ == "__main__":
    main()
