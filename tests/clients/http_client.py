#!/usr/bin/env python3
"""An HTTP client written the way the classic course writes it: Python's
socket module, one request per connection, one recv for the reply.

usage: http_client.py HOST PORT PATH...
For each PATH: connect, send "GET PATH HTTP/1.1" with Host, recv(65536)
once, close; prints "STATUS BODY_BYTES_IN_THAT_RECV CONTENT_LENGTH"."""
import socket
import sys


def fetch(host, port, path):
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.connect((host, port))
    request = "GET %s HTTP/1.1\r\nHost: %s:%d\r\n\r\n" % (path, host, port)
    sock.send(request.encode())
    data = sock.recv(65536)
    sock.close()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = lines[0].split(" ")[1]
    length = "-"
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.lower() == "content-length":
            length = value.strip()
    print(status, len(body), length)


def main():
    host, port = sys.argv[1], int(sys.argv[2])
    for path in sys.argv[3:]:
        fetch(host, port, path)


if __name__ == "__main__":
    main()
