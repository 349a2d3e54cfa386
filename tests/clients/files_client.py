#!/usr/bin/env python3
"""A files client written the way the classic course writes it: Python's
socket module, struct.pack('i'), json.dumps, one recv per read.

usage: files_client.py HOST PORT put LOCAL NAME [get NAME OUT]...
Runs each request in order on one connection; prints one line per get:
"NAME SIZE" (SIZE -1 and the error when refused)."""
import json
import socket
import struct
import sys


def put(sock, local, name):
    with open(local, "rb") as f:
        data = f.read()
    header = json.dumps({"cmd": "put", "filename": name, "filesize": len(data)})
    header = header.encode()
    sock.sendall(struct.pack("i", len(header)) + header + data)


def get(sock, name, out):
    header = json.dumps({"cmd": "get", "filename": name}).encode()
    sock.sendall(struct.pack("i", len(header)) + header)
    hlen = struct.unpack("i", sock.recv(4))[0]
    reply = json.loads(sock.recv(hlen).decode())
    size = reply["filesize"]
    if size < 0:
        print(name, size, reply.get("error", ""))
        return
    got = b""
    while len(got) < size:
        chunk = sock.recv(min(65536, size - len(got)))
        if not chunk:
            break
        got += chunk
    with open(out, "wb") as f:
        f.write(got)
    print(name, len(got))


def main():
    host, port, rest = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.connect((host, port))
    while rest:
        verb, a, b = rest[0], rest[1], rest[2]
        rest = rest[3:]
        if verb == "put":
            put(sock, a, b)
        else:
            get(sock, a, b)
    sock.close()


main()
