"""Peers of the namespace tests, run inside a namespace by path (no project imports).

peers.py server PORT...          echo on [::]:PORT (IPv4 too); one line per
                                 connection: "accepted PORT PEER-IP"
peers.py client HOST PORT BYTES  send BYTES random bytes, half-close, read the echo;
                                 prints a JSON line; exit 0 only when intact
peers.py probe HOST PORT         exit 0 if a connection opens and echoes, else 3
peers.py grant HOST PORT OTHER   hold a primary connection to PORT (one byte echoed),
                                 then two connections to OTHER; prints a JSON line
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import sys
import threading
import time

CONNECT_TIMEOUT = 3.0
LIFETIME = 300.0


def serve(ports: list[int]) -> None:
    for port in ports:
        listener = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        listener.bind(("::", port))
        listener.listen(64)
        threading.Thread(target=accepting, args=(listener, port), daemon=True).start()
    print("ready", flush=True)
    time.sleep(LIFETIME)


def accepting(listener: socket.socket, port: int) -> None:
    while True:
        connection, peer = listener.accept()
        host = peer[0].removeprefix("::ffff:")
        print(f"accepted {port} {host}", flush=True)
        threading.Thread(target=echo, args=(connection,), daemon=True).start()


def echo(connection: socket.socket) -> None:
    with connection:
        while data := connection.recv(1 << 20):
            connection.sendall(data)
        connection.shutdown(socket.SHUT_WR)


def exchange(host: str, port: int, size: int) -> dict[str, object]:
    """Send size random bytes, half-close, read everything back."""
    try:
        connection = socket.create_connection((host, port), timeout=CONNECT_TIMEOUT)
    except OSError as e:
        return {"ok": False, "error": f"connect: {e}"}
    connection.settimeout(30)
    sent = hashlib.sha256()
    received = hashlib.sha256()
    count = 0

    def send() -> None:
        left = size
        while left:
            chunk = os.urandom(min(left, 1 << 20))
            sent.update(chunk)
            connection.sendall(chunk)
            left -= len(chunk)
        connection.shutdown(socket.SHUT_WR)

    sender = threading.Thread(target=send)
    sender.start()
    try:
        while data := connection.recv(1 << 20):
            received.update(data)
            count += len(data)
    except OSError as e:
        sender.join()
        return {"ok": False, "error": f"recv: {e}", "received": count}
    sender.join()
    connection.close()
    intact = sent.hexdigest() == received.hexdigest() and count == size
    return {"ok": intact, "received": count, "sha256": received.hexdigest()}


def grant(host: str, port: int, other: int) -> dict[str, object]:
    primary = socket.create_connection((host, port), timeout=CONNECT_TIMEOUT)
    primary.settimeout(10)
    primary.sendall(b"x")
    echoed = primary.recv(1)
    first = exchange(host, other, 1 << 20)
    second = exchange(host, other, 1024)
    primary.close()
    return {"echoed": echoed.decode(), "first": first, "second": second}


def main(argv: list[str]) -> int:
    command = argv[0]
    if command == "server":
        serve([int(p) for p in argv[1:]])
        return 0
    if command == "client":
        result = exchange(argv[1], int(argv[2]), int(argv[3]))
        print(json.dumps(result), flush=True)
        return 0 if result["ok"] else 3
    if command == "probe":
        result = exchange(argv[1], int(argv[2]), 16)
        print(json.dumps(result), flush=True)
        return 0 if result["ok"] else 3
    if command == "grant":
        print(json.dumps(grant(argv[1], int(argv[2]), int(argv[3]))), flush=True)
        return 0
    raise SystemExit(f"unknown command {command!r}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
