"""RTP-sized UDP load for the rtsp section, each side run as its own process.

    python benchmarks/rtspload.py blast --flows N     the media server's sockets: sends
    python benchmarks/rtspload.py sink  --flows N     the player's sockets: counts

Each binds N UDP sockets on an even port of 127.0.0.1 and prints {"ports": [...]} on
stdout, then obeys one JSON command per line on stdin and answers each with one JSON
line:

    blast: {"run": R, "targets": [[host, port], ...], "rate": PPS, "seconds": S}
           sends for S seconds, round robin over the flows, from flow i's socket to
           targets[i], paced at PPS datagrams/s in all (0: as fast as it can);
           answers {"sent": [per flow], "seconds": ..., "cpu": ...}
    sink:  {"run": R}      counts datagrams of run R from now on (per flow)
           {"report": 1}   answers {"received": [per flow], "cpu": ...}

A datagram is an RTP header (version 2, payload type 96, sequence number, timestamp,
SSRC = flow) then run and 32-bit sequence number; sizes cycle over 1,200-1,400 bytes.
Loopback only; the standard library only (the generator costs the same whatever it
is pointed at); every run is bounded in time.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import selectors
import socket
import struct
import sys
import time

HEADER = struct.Struct(">BBHIIII")
#: Datagram sizes, cycled (RTP video packets are 1,200-1,400 bytes; 1,316 = 7 TS cells).
SIZES = (1200, 1250, 1316, 1350, 1400, 1280, 1316, 1380)
#: Datagrams sent per pacing check, at most.
BATCH = 32
#: A blast never runs longer than this.
MAX_SECONDS = 60.0


def cpuSeconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def evenSockets(host: str, count: int, rcvbuf: int) -> list[socket.socket]:
    """C{count} UDP sockets, each bound on an even port of C{host}."""
    sockets: list[socket.socket] = []
    spare: list[socket.socket] = []
    while len(sockets) < count:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        if rcvbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.bind((host, 0))
        (sockets if sock.getsockname()[1] % 2 == 0 else spare).append(sock)
    for sock in spare:
        sock.close()
    return sockets


def commands() -> object:
    """JSON commands from stdin, one per line, until EOF."""
    for line in sys.stdin:
        if line.strip():
            yield json.loads(line)


def answer(payload: dict[str, object]) -> None:
    sys.stdout.write(json.dumps(payload) + "\n")
    sys.stdout.flush()


def runBlast(args: argparse.Namespace) -> None:
    sockets = evenSockets(args.host, args.flows, 0)
    answer({"ports": [s.getsockname()[1] for s in sockets]})
    buffers = [bytearray(os.urandom(size)) for size in SIZES]
    views = [memoryview(b) for b in buffers]
    for command in commands():
        assert isinstance(command, dict)
        run = int(command["run"])
        targets = [(str(h), int(p)) for h, p in command["targets"]]
        rate = float(command.get("rate", 0))
        seconds = min(float(command["seconds"]), MAX_SECONDS)
        flows = len(targets)
        sends = [sockets[i].sendto for i in range(flows)]
        sent = [0] * flows
        total = 0
        pack = HEADER.pack_into
        cycle = len(SIZES)
        cpu0 = cpuSeconds()
        start = time.perf_counter()
        now = start
        while True:
            now = time.perf_counter()
            elapsed = now - start
            if elapsed >= seconds:
                break
            if rate:
                due = int(elapsed * rate) + 1 - total
                if due <= 0:
                    time.sleep(min(0.0005, (total + 1) / rate - elapsed))
                    continue
                due = min(due, BATCH)
            else:
                due = BATCH
            for _ in range(due):
                flow = total % flows
                seq = sent[flow]
                which = seq % cycle
                pack(buffers[which], 0, 0x80, 96, seq & 0xFFFF, seq * 3000, flow, run, seq)
                try:
                    sends[flow](views[which], targets[flow])
                except OSError:
                    pass  # ENOBUFS/ECONNREFUSED: counted as sent, and so as lost
                sent[flow] = seq + 1
                total += 1
        answer({"sent": sent, "seconds": now - start, "cpu": cpuSeconds() - cpu0})


def runSink(args: argparse.Namespace) -> None:
    sockets = evenSockets(args.host, args.flows, args.rcvbuf)
    answer(
        {
            "ports": [s.getsockname()[1] for s in sockets],
            "rcvbuf": sockets[0].getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF),
        }
    )
    selector = selectors.DefaultSelector()
    for sock in sockets:
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ)
    stdin = sys.stdin.fileno()
    selector.register(stdin, selectors.EVENT_READ)
    flows = len(sockets)
    received = [0] * flows
    current = -1
    buffer = bytearray(2048)
    unpack = HEADER.unpack_from
    pending = b""
    cpu0 = cpuSeconds()
    while True:
        for key, _ in selector.select():
            if key.fileobj == stdin:
                chunk = os.read(stdin, 65536)
                if not chunk:
                    return
                pending += chunk
                while b"\n" in pending:
                    line, _, pending = pending.partition(b"\n")
                    command = json.loads(line)
                    if "run" in command:
                        current = int(command["run"])
                        received = [0] * flows
                        cpu0 = cpuSeconds()
                    else:
                        answer({"received": received, "cpu": cpuSeconds() - cpu0})
                continue
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            recv = sock.recv_into
            for _ in range(256):
                try:
                    size = recv(buffer)
                except BlockingIOError:
                    break
                if size < HEADER.size:
                    continue
                _, _, _, _, flow, run, _ = unpack(buffer)
                if run == current and flow < flows:
                    received[flow] += 1


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    commandsParser = parser.add_subparsers(dest="command", required=True)
    for name in ("blast", "sink"):
        sub = commandsParser.add_parser(name)
        sub.add_argument("--flows", type=int, default=1)
        sub.add_argument("--host", default="127.0.0.1")
        sub.add_argument("--rcvbuf", type=int, default=4 << 20, help="sink: SO_RCVBUF")
    args = parser.parse_args(argv)
    if not args.host.startswith("127."):
        raise SystemExit(f"rtspload: {args.host} is not a loopback address")
    {"blast": runBlast, "sink": runSink}[args.command](args)


if __name__ == "__main__":
    main()
