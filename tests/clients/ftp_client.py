#!/usr/bin/env python3
"""The classic text FTP client, written the way the course writes it: Python's
socket module, one send per request, one recv per read, a whole recv(128)
compared to b"OK", the download read with recv(1024) until a read is
exactly b"##", the upload sent in 1024-byte pieces and b"##" after a
time.sleep pause.

usage: ftp_client.py HOST PORT COMMAND...
COMMAND is one of: list | get NAME OUT | put LOCAL NAME | exit
Runs them in order on one connection and prints one line each:
  list      "OK" then the names, one a line, or the reply (e.g. "FAIL")
  get       "OK SIZE" (bytes written to OUT) or the reply
  put       "OK" or the reply
  exit      "closed" once the server has closed the connection
"""
import socket
import sys
import time


def do_list(sock):
    sock.send(b"LIST")
    data = sock.recv(128)
    if data != b"OK":
        print(data.decode())
        return
    names = sock.recv(4096).decode()
    print("OK")
    for name in names.split("\n"):
        print(name)


def do_get(sock, name, out):
    sock.send(("GET " + name).encode())
    data = sock.recv(128)
    if data != b"OK":
        print(data.decode())
        return
    size = 0
    with open(out, "wb") as f:
        while True:
            data = sock.recv(1024)
            # The course's loop ends only at "##"; a closed connection
            # would spin it forever.
            if data == b"##" or not data:
                break
            f.write(data)
            size += len(data)
    print("OK", size)


def do_put(sock, local, name):
    with open(local, "rb") as f:
        sock.send(("PUT " + name).encode())
        data = sock.recv(128)
        if data != b"OK":
            print(data.decode())
            return
        while True:
            data = f.read(1024)
            if not data:
                time.sleep(0.1)
                sock.send(b"##")
                break
            sock.send(data)
    print("OK")
    # Back at the course client's prompt: a person types the next command
    # well after the server's quiet time following "##".
    time.sleep(0.3)


def do_exit(sock):
    sock.send(b"EXIT")
    if sock.recv(128) == b"":
        print("closed")


def main():
    host, port, rest = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(10)
    sock.connect((host, port))
    while rest:
        verb = rest.pop(0)
        if verb == "list":
            do_list(sock)
        elif verb == "get":
            do_get(sock, rest.pop(0), rest.pop(0))
        elif verb == "put":
            do_put(sock, rest.pop(0), rest.pop(0))
        elif verb == "exit":
            do_exit(sock)
        else:
            sys.exit("unknown command " + verb)
    sock.close()


main()
