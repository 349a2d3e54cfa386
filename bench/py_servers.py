#!/usr/bin/env python3
"""Python standard-library peers for the front-end benchmark.

    python3 bench/py_servers.py forking|threading [PORT]

Serves the upper-case echo protocol (each read answered with the same bytes,
ASCII letters upper-cased; EOF ends the session) on 127.0.0.1:PORT with
socketserver.ForkingTCPServer or ThreadingTCPServer, and prints the bound port
as stdout's first line (PORT 0 or absent: the kernel picks one).
"""

import socketserver
import sys


class UpperHandler(socketserver.BaseRequestHandler):
    def handle(self):
        sock = self.request
        while True:
            data = sock.recv(16384)
            if not data:
                return
            sock.sendall(data.upper())  # bytes.upper() touches ASCII only


class Forking(socketserver.ForkingTCPServer):
    allow_reuse_address = True
    request_queue_size = 1024  # stock 5 would drop SYNs at concurrency 32
    # max_children keeps the stock 40: above the benchmark's 32 connections.


class Threading(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    request_queue_size = 1024
    daemon_threads = True
    block_on_close = False


def main():
    if len(sys.argv) not in (2, 3) or sys.argv[1] not in ("forking", "threading"):
        print(__doc__.strip(), file=sys.stderr)
        sys.exit(2)
    port = int(sys.argv[2]) if len(sys.argv) == 3 else 0
    cls = Forking if sys.argv[1] == "forking" else Threading
    with cls(("127.0.0.1", port), UpperHandler) as server:
        print(server.server_address[1], flush=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
