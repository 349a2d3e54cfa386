#!/usr/bin/env python3
"""The classic remote-shell client: one send per command line, then the
reply frame read the way the course reads it (4-byte length, JSON header,
a recv loop for data_size bytes).

Usage: command_client.py HOST PORT LINE...
Prints a JSON list with each reply body (UTF-8, invalid bytes replaced).
"""
import json
import socket
import struct
import sys


def main():
    host, port, lines = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    client.connect((host, port))
    bodies = []
    for line in lines:
        client.send(line.encode("utf-8"))
        header_size = struct.unpack("i", client.recv(4))[0]
        header = json.loads(client.recv(header_size).decode("utf-8"))
        data_size = header["data_size"]
        received = b""
        while len(received) < data_size:
            chunk = client.recv(1024)
            if not chunk:
                break
            received += chunk
        bodies.append(received.decode("utf-8", "replace"))
    client.close()
    print(json.dumps(bodies))


if __name__ == "__main__":
    main()
