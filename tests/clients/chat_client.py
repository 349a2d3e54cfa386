#!/usr/bin/env python3
"""The classic UDP chat-room client, driven line by line: one UDP socket
for the whole run (the room knows a member by its address), one sendto
per message and one recvfrom(1024) per datagram, as the course's client
does.

Usage: chat_client.py HOST PORT, then one command per line on stdin:
  login NAME          send "LOGIN NAME", wait for the one reply (OK/FAIL)
  chat NAME TEXT      send "CHAT NAME TEXT" (TEXT keeps its spaces)
  exit NAME           send "EXIT NAME"
  say TEXT            send TEXT as it is
  raw HEX             send these bytes (for datagrams that are not UTF-8)
  recv N SECONDS      receive up to N datagrams, waiting SECONDS for each
  close               close the socket (the member becomes unreachable)
Each command prints one line: a JSON list of the datagrams received, each
as hex so the test compares them byte for byte (empty when none).
"""
import json
import socket
import sys

REPLY_TIMEOUT = 5.0


def receive(client, count, seconds):
    got = []
    client.settimeout(seconds)
    for _ in range(count):
        try:
            data, _ = client.recvfrom(1024)
        except socket.timeout:
            break
        got.append(data.hex())
    return got


def main():
    server = (sys.argv[1], int(sys.argv[2]))
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.bind(("127.0.0.1", 0))
    for line in sys.stdin:
        command, _, rest = line.rstrip("\n").partition(" ")
        got = []
        if command == "login":
            client.sendto(("LOGIN " + rest).encode("utf-8"), server)
            got = receive(client, 1, REPLY_TIMEOUT)
        elif command == "chat":
            client.sendto(("CHAT " + rest).encode("utf-8"), server)
        elif command == "exit":
            client.sendto(("EXIT " + rest).encode("utf-8"), server)
        elif command == "say":
            client.sendto(rest.encode("utf-8"), server)
        elif command == "raw":
            client.sendto(bytes.fromhex(rest), server)
        elif command == "recv":
            count, seconds = rest.split(" ")
            got = receive(client, int(count), float(seconds))
        elif command == "close":
            client.close()
        else:
            sys.exit("unknown command: " + command)
        print(json.dumps(got), flush=True)


if __name__ == "__main__":
    main()
