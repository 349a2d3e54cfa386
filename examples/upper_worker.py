#!/usr/bin/env python3
"""A forkd pool worker in Python: upper-cases UTF-8 text.

Configure it in forkd.toml (the pipe transport speaks frames on the
worker's stdin and stdout, so any language can be a worker):

    [[pool]]
    name      = "upper"
    transport = "pipe"
    command   = ["/usr/bin/python3", "/path/to/examples/upper_worker.py"]

and try it with `echo -n hello | forkctl call upper`.

The protocol: forkd writes one frame per job on stdin (a 4-byte big-endian
length, then that many bytes) and reads one result frame per job on stdout,
in the same order. A result starting with b"ERR " is a failed job (the
caller sees the reason). At end of file on stdin forkd has closed the
channel and the worker exits 0. stdout is the channel: write diagnostics
to stderr, never to stdout (print() would corrupt the frames).
"""

import os
import struct
import sys

HEADER = struct.Struct(">I")
# forkd never sends a frame over the pool's max_frame.
MAX_FRAME = int(os.environ.get("FORKD_MAX_FRAME", 16 << 20))


def read_exactly(stream, n):
    """n bytes from stream, or fewer at end of file."""
    chunks = []
    while n > 0:
        chunk = stream.read(n)
        if not chunk:
            break
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def read_frame(stream):
    """The next job's payload, or None at a clean end of file."""
    head = read_exactly(stream, HEADER.size)
    if not head:
        return None
    if len(head) < HEADER.size:
        raise EOFError("the channel ended inside a frame header")
    (length,) = HEADER.unpack(head)
    if length > MAX_FRAME:
        raise ValueError(f"a frame of {length} bytes is over max_frame ({MAX_FRAME})")
    payload = read_exactly(stream, length)
    if len(payload) < length:
        raise EOFError(f"the channel ended inside a {length}-byte frame")
    return payload


def write_frame(stream, payload):
    stream.write(HEADER.pack(len(payload)))
    stream.write(payload)
    # One flush per result: forkd is waiting for it.
    stream.flush()


def upper(job):
    """The job itself: a result, or b"ERR reason" for a job it cannot do."""
    try:
        text = job.decode("utf-8")
    except UnicodeDecodeError as e:
        return f"ERR not UTF-8 text: byte {job[e.start]:#04x} at offset {e.start}".encode()
    return text.upper().encode("utf-8")


def main():
    # The binary streams under sys.stdin/sys.stdout: no decoding, no
    # newline translation, so payloads may hold any bytes.
    jobs, results = sys.stdin.buffer, sys.stdout.buffer
    try:
        while (job := read_frame(jobs)) is not None:
            write_frame(results, upper(job))
    except BrokenPipeError:
        # forkd closed the result pipe: it is replacing or stopping us.
        return 0
    except (EOFError, ValueError) as e:
        print(f"upper_worker: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
