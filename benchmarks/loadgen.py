"""Load generators and minimal peers for the benchmarks, each run as its own process.

    python benchmarks/loadgen.py echo     --port P                 echo-and-close server
    python benchmarks/loadgen.py connect  --port P --duration S    connection-rate client
    python benchmarks/loadgen.py ftp      --port P --duration S    FTP session driver (ftplib)
    python benchmarks/loadgen.py greeter  --port P                 FTP server that only logs in
    python benchmarks/loadgen.py hold     --port P --count N       N idle, logged-in FTP sessions

Everything is loopback only, every loop is bounded in time (and the clients in count),
and the clients print one JSON object on stdout when they are done.  Only the standard
library is used, so a generator costs the same whatever it is pointed at.
"""

from __future__ import annotations

import argparse
import errno
import ftplib
import ipaddress
import json
import os
import resource
import selectors
import socket
import sys
import threading
import time
from dataclasses import dataclass, field

#: Linux: let connect() pick the source port, so (src, dst) 4-tuples, not bound ports,
#: must be unique (and TIME_WAIT entries of other destinations do not block a port).
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)

#: A connection not finished after this many seconds counts as a timeout.
CONNECTION_TIMEOUT = 5.0


def loopbackOnly(host: str) -> str:
    """`host`, after checking that it is a loopback address."""
    if not ipaddress.ip_address(host).is_loopback:
        raise SystemExit(f"loadgen: {host} is not a loopback address")
    return host


def parseSources(text: str) -> list[str]:
    """``127.0.0.2-127.0.0.33`` or ``127.0.0.1``: a list of loopback IPv4 sources."""
    first, _, last = text.partition("-")
    low = ipaddress.IPv4Address(loopbackOnly(first))
    high = ipaddress.IPv4Address(loopbackOnly(last or first))
    return [str(ipaddress.IPv4Address(i)) for i in range(int(low), int(high) + 1)]


def cpuSeconds() -> float:
    """CPU seconds (user + system) this process has used."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def waitUntil(wallTime: float) -> None:
    """Sleep until time.time() reaches `wallTime` (at most 30 s)."""
    delay = wallTime - time.time()
    if delay > 0:
        time.sleep(min(delay, 30.0))


def percentile(values: list[float], fraction: float) -> float | None:
    """The `fraction` quantile of `values` (nearest rank), None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def listeningSocket(host: str, port: int, reusePort: bool = False) -> socket.socket:
    """A non-blocking TCP listener on host:port with a deep accept queue."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reusePort:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    listener.bind((loopbackOnly(host), port))
    listener.listen(4096)
    listener.setblocking(False)
    return listener


def closeQuietly(sock: socket.socket) -> None:
    try:
        sock.close()
    except OSError:
        pass


# -- echo: the upstream of the connection-rate benchmark ------------------------------------


def runEcho(args: argparse.Namespace) -> None:
    """Echo what arrives, and close once the peer has half-closed (read EOF).

    A relay that passes half-close delivers the echo; one that closes both sides on the
    client's FIN (Twisted's portforward) loses it, which the client counts.
    """
    listener = listeningSocket(args.host, args.port, reusePort=True)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ, None)
    deadline = time.monotonic() + args.lifetime
    while time.monotonic() < deadline:
        for key, _ in selector.select(timeout=1.0):
            if key.data is None:
                for _ in range(64):
                    try:
                        conn, _ = listener.accept()
                    except (BlockingIOError, InterruptedError):
                        break
                    except OSError:
                        break
                    conn.setblocking(False)
                    selector.register(conn, selectors.EVENT_READ, True)
                continue
            peer = key.fileobj
            assert isinstance(peer, socket.socket)
            conn = peer
            try:
                data = conn.recv(65536)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                data = b""
            if data:
                try:
                    conn.send(data)
                except OSError:
                    pass
                continue
            selector.unregister(conn)
            closeQuietly(conn)


# -- connect: the connection-rate load generator --------------------------------------------

_CONNECTING, _READING = 1, 2


@dataclass
class _Attempt:
    sock: socket.socket
    started: float
    state: int = _CONNECTING
    received: int = 0


@dataclass
class _ConnectStats:
    completed: int = 0
    echoed: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1


def runConnect(args: argparse.Namespace) -> None:
    """Closed loop of `concurrency` connections: connect, send 1 byte, half-close, read
    to EOF, close, start the next one.  Counts what finishes inside the window
    [start + warmup, start + warmup + duration]; never more than `maxConnections`."""
    target = (loopbackOnly(args.host), args.port)
    sources = parseSources(args.sources)
    selector = selectors.DefaultSelector()
    stats = _ConnectStats()
    live: dict[int, _Attempt] = {}
    started = 0
    nextSource = 0

    waitUntil(args.start_at)
    now = time.monotonic()
    windowStart = now + args.warmup
    windowEnd = windowStart + args.duration
    hardEnd = windowEnd + 10.0
    cpuAtStart: float | None = None
    cpuAtEnd: float | None = None

    def finish(attempt: _Attempt, kind: str | None) -> None:
        fd = attempt.sock.fileno()
        live.pop(fd, None)
        try:
            selector.unregister(attempt.sock)
        except (KeyError, ValueError):
            pass
        closeQuietly(attempt.sock)
        at = time.monotonic()
        if not windowStart <= at < windowEnd:
            return
        if kind is None:
            stats.completed += 1
            stats.echoed += attempt.received > 0
            stats.latencies.append(at - attempt.started)
        else:
            stats.error(kind)

    def begin() -> None:
        nonlocal started, nextSource
        if started >= args.max_connections:
            return
        started += 1
        source = sources[nextSource % len(sources)]
        nextSource += 1
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        attempt = _Attempt(sock, time.monotonic())
        try:
            sock.setsockopt(socket.SOL_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            sock.bind((source, 0))
            code = sock.connect_ex(target)
        except OSError as e:
            code = e.errno or errno.EIO
        if code not in (0, errno.EINPROGRESS):
            live[sock.fileno()] = attempt
            finish(attempt, errno.errorcode.get(code, str(code)))
            return
        live[sock.fileno()] = attempt
        selector.register(sock, selectors.EVENT_WRITE, attempt)

    def step(attempt: _Attempt) -> None:
        sock = attempt.sock
        if attempt.state == _CONNECTING:
            code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if code:
                finish(attempt, errno.errorcode.get(code, str(code)))
                return
            try:
                sock.send(b"x")
                sock.shutdown(socket.SHUT_WR)
            except OSError as e:
                finish(attempt, errno.errorcode.get(e.errno or 0, "send"))
                return
            attempt.state = _READING
            selector.modify(sock, selectors.EVENT_READ, attempt)
            return
        try:
            data = sock.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            finish(attempt, errno.errorcode.get(e.errno or 0, "recv"))
            return
        if data:
            attempt.received += len(data)
            return
        finish(attempt, None)

    lastSweep = time.monotonic()
    while True:
        now = time.monotonic()
        if cpuAtStart is None and now >= windowStart:
            cpuAtStart = cpuSeconds()
        if cpuAtEnd is None and now >= windowEnd:
            cpuAtEnd = cpuSeconds()
        # Keep `concurrency` attempts in flight until the window closes, then drain.
        while now < windowEnd and len(live) < args.concurrency and started < args.max_connections:
            begin()
        if not live:
            break
        if now >= hardEnd:
            for attempt in list(live.values()):
                finish(attempt, "unfinished")
            break
        for key, _ in selector.select(timeout=0.05):
            step(key.data)
        if now - lastSweep > 0.5:
            lastSweep = now
            for attempt in list(live.values()):
                if now - attempt.started > CONNECTION_TIMEOUT:
                    finish(attempt, "timeout")
    if cpuAtStart is None:
        cpuAtStart = cpuSeconds()
    if cpuAtEnd is None:
        cpuAtEnd = cpuSeconds()
    report = {
        "completed": stats.completed,
        "echoed": stats.echoed,
        "errors": stats.errors,
        "window": args.duration,
        "cpu": cpuAtEnd - cpuAtStart,
        "p50": percentile(stats.latencies, 0.5),
        "p99": percentile(stats.latencies, 0.99),
        "started": started,
    }
    print(json.dumps(report), flush=True)


# -- ftp: sessions per second with ftplib -----------------------------------------------------


class _EpsvFTP(ftplib.FTP):
    """ftplib uses PASV over IPv4; the benchmark's sessions use EPSV."""

    def makepasv(self) -> tuple[str, int]:
        assert self.sock is not None
        host, port = ftplib.parse229(self.sendcmd("EPSV"), self.sock.getpeername())
        return host, port


def _ftpSession(host: str, port: int, path: str, size: int, source: str) -> None:
    received = 0

    def count(chunk: bytes) -> None:
        nonlocal received
        received += len(chunk)

    client = _EpsvFTP(timeout=CONNECTION_TIMEOUT * 2)
    try:
        client.connect(host, port, source_address=(source, 0))
        client.login()
        client.voidcmd("TYPE I")
        client.retrbinary(f"RETR {path}", count, blocksize=1 << 18)
        client.quit()
    finally:
        client.close()
    if received != size:
        raise ValueError(f"received {received} bytes of {size}")


def runFtp(args: argparse.Namespace) -> None:
    """`clients` threads, each running sessions back to back: connect, log in
    (anonymous), TYPE I, EPSV, RETR `path`, QUIT.  Counts sessions that end inside the
    window; at most `maxSessions` are started."""
    host = loopbackOnly(args.host)
    sources = parseSources(args.sources)
    lock = threading.Lock()
    completed = 0
    errors: dict[str, int] = {}
    latencies: list[float] = []
    started = 0

    waitUntil(args.start_at)
    windowStart = time.monotonic() + args.warmup
    windowEnd = windowStart + args.duration

    def worker(index: int) -> None:
        nonlocal completed, started
        source = sources[index % len(sources)]
        while time.monotonic() < windowEnd:
            with lock:
                if started >= args.max_sessions:
                    return
                started += 1
            began = time.monotonic()
            kind: str | None = None
            try:
                _ftpSession(host, args.port, args.path, args.size, source)
            except (OSError, EOFError, ftplib.Error, ValueError) as e:
                kind = type(e).__name__
            ended = time.monotonic()
            if not windowStart <= ended < windowEnd:
                continue
            with lock:
                if kind is None:
                    completed += 1
                    latencies.append(ended - began)
                else:
                    errors[kind] = errors.get(kind, 0) + 1

    cpuBefore = cpuSeconds()
    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(args.clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=max(0.0, windowEnd - time.monotonic()) + 30.0)
    report = {
        "completed": completed,
        "errors": errors,
        "window": args.duration,
        "cpu": cpuSeconds() - cpuBefore,
        "p50": percentile(latencies, 0.5),
        "p99": percentile(latencies, 0.99),
        "started": started,
    }
    print(json.dumps(report), flush=True)


# -- greeter: an FTP server that logs clients in and holds them ------------------------------

_GREETER_REPLIES = {
    b"USER": b"331 Any password will do.\r\n",
    b"PASS": b"230 Logged in.\r\n",
    b"NOOP": b"200 NOOP ok.\r\n",
    b"SYST": b"215 UNIX Type: L8\r\n",
    b"QUIT": b"221 Goodbye.\r\n",
}


def runGreeter(args: argparse.Namespace) -> None:
    """Answer 220, then USER/PASS/NOOP/SYST/QUIT (502 to anything else); hold sessions.

    A few hundred bytes of state per session: the gateway's memory is what is measured.
    """
    listener = listeningSocket(args.host, args.port)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ, None)
    buffers: dict[int, bytes] = {}
    deadline = time.monotonic() + args.lifetime

    def drop(conn: socket.socket) -> None:
        buffers.pop(conn.fileno(), None)
        selector.unregister(conn)
        closeQuietly(conn)

    while time.monotonic() < deadline:
        for key, _ in selector.select(timeout=1.0):
            if key.data is None:
                for _ in range(256):
                    try:
                        conn, _ = listener.accept()
                    except OSError:
                        break
                    conn.setblocking(False)
                    try:
                        conn.send(b"220 fwx benchmark greeter ready.\r\n")
                    except OSError:
                        closeQuietly(conn)
                        continue
                    buffers[conn.fileno()] = b""
                    selector.register(conn, selectors.EVENT_READ, True)
                continue
            peer = key.fileobj
            assert isinstance(peer, socket.socket)
            conn = peer
            try:
                data = conn.recv(4096)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                data = b""
            if not data:
                drop(conn)
                continue
            pending = buffers[conn.fileno()] + data
            quit = False
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                verb = line.strip().split(b" ", 1)[0].upper()
                reply = _GREETER_REPLIES.get(verb, b"502 Not implemented.\r\n")
                try:
                    conn.send(reply)
                except OSError:
                    quit = True
                    break
                quit = quit or verb == b"QUIT"
            if quit or len(pending) > 4096:
                drop(conn)
            else:
                buffers[conn.fileno()] = pending


# -- hold: many idle, logged-in FTP control connections -------------------------------------


@dataclass
class _Held:
    sock: socket.socket
    buffer: bytes = b""
    stage: int = 0  # 0: want 220, 1: want 331/230 after USER, 2: want 230 after PASS, 3: idle


def runHold(args: argparse.Namespace) -> None:
    """Open `count` control connections (at most `inFlight` logging in at once), log each
    in (USER anonymous, PASS), print {"ready": n, ...}, then hold them all until stdin
    closes or `lifetime` seconds pass."""
    target = (loopbackOnly(args.host), args.port)
    sources = parseSources(args.sources)
    selector = selectors.DefaultSelector()
    held: list[socket.socket] = []
    failures: dict[str, int] = {}
    opened = 0
    loggingIn = 0
    began = time.monotonic()
    deadline = began + args.timeout

    def fail(entry: _Held, kind: str) -> None:
        nonlocal loggingIn
        loggingIn -= 1
        failures[kind] = failures.get(kind, 0) + 1
        selector.unregister(entry.sock)
        closeQuietly(entry.sock)

    def openOne() -> None:
        nonlocal opened, loggingIn
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_IP, IP_BIND_ADDRESS_NO_PORT, 1)
        sock.bind((sources[opened % len(sources)], 0))
        sock.setblocking(False)
        opened += 1
        loggingIn += 1
        code = sock.connect_ex(target)
        entry = _Held(sock)
        selector.register(sock, selectors.EVENT_READ, entry)
        if code not in (0, errno.EINPROGRESS):
            fail(entry, errno.errorcode.get(code, str(code)))

    def send(entry: _Held, line: bytes) -> None:
        entry.sock.sendall(line)

    while (opened < args.count or loggingIn) and time.monotonic() < deadline:
        while opened < args.count and loggingIn < args.in_flight:
            openOne()
        for key, _ in selector.select(timeout=0.2):
            entry = key.data
            try:
                data = entry.sock.recv(4096)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError as e:
                fail(entry, errno.errorcode.get(e.errno or 0, "recv"))
                continue
            if not data:
                fail(entry, "closed")
                continue
            entry.buffer += data
            while b"\n" in entry.buffer:
                line, entry.buffer = entry.buffer.split(b"\n", 1)
                if not (line[:3].isdigit() and line[3:4] in (b" ", b"\r")):
                    continue  # a line inside a multi-line reply
                code = line[:3]
                try:
                    if entry.stage == 0 and code == b"220":
                        send(entry, b"USER anonymous\r\n")
                        entry.stage = 1
                    elif entry.stage == 1 and code == b"331":
                        send(entry, b"PASS benchmark@\r\n")
                        entry.stage = 2
                    elif entry.stage in (1, 2) and code == b"230":
                        entry.stage = 3
                        loggingIn -= 1
                        selector.unregister(entry.sock)
                        held.append(entry.sock)
                    else:
                        fail(entry, f"reply {code.decode('latin-1')}")
                except OSError as e:
                    fail(entry, errno.errorcode.get(e.errno or 0, "send"))
                if entry.stage == 3 or entry.sock.fileno() == -1:
                    break
    stages: dict[str, int] = {}
    for key in selector.get_map().values():
        entry = key.data
        name = f"stage {entry.stage}, buffered {entry.buffer[:40]!r}"
        stages[name] = stages.get(name, 0) + 1
    report = {
        "ready": len(held),
        "failed": failures,
        "unfinished": loggingIn,
        "stuck": stages,
        "seconds": time.monotonic() - began,
    }
    print(json.dumps(report), flush=True)
    # Hold the sessions until the parent closes our stdin (bounded by lifetime).
    stdinReady = selectors.DefaultSelector()
    stdinReady.register(sys.stdin, selectors.EVENT_READ)
    holdUntil = time.monotonic() + args.lifetime
    while time.monotonic() < holdUntil:
        if stdinReady.select(timeout=1.0) and not os.read(sys.stdin.fileno(), 4096):
            break
    for sock in held:
        closeQuietly(sock)


# -- command line ---------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    def command(name: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name)
        sub.add_argument("--host", default="127.0.0.1")
        sub.add_argument("--port", type=int, required=True)
        return sub

    echo = command("echo")
    echo.add_argument("--lifetime", type=float, default=3600.0)
    connect = command("connect")
    connect.add_argument("--concurrency", type=int, default=16)
    connect.add_argument("--duration", type=float, default=5.0)
    connect.add_argument("--warmup", type=float, default=1.0)
    connect.add_argument("--max-connections", type=int, default=1_000_000)
    connect.add_argument("--sources", default="127.0.0.1")
    connect.add_argument("--start-at", type=float, default=0.0)
    ftp = command("ftp")
    ftp.add_argument("--clients", type=int, default=4)
    ftp.add_argument("--duration", type=float, default=5.0)
    ftp.add_argument("--warmup", type=float, default=1.0)
    ftp.add_argument("--max-sessions", type=int, default=100_000)
    ftp.add_argument("--path", required=True)
    ftp.add_argument("--size", type=int, required=True)
    ftp.add_argument("--sources", default="127.0.0.1")
    ftp.add_argument("--start-at", type=float, default=0.0)
    greeter = command("greeter")
    greeter.add_argument("--lifetime", type=float, default=3600.0)
    hold = command("hold")
    hold.add_argument("--count", type=int, required=True)
    hold.add_argument("--in-flight", type=int, default=200)
    hold.add_argument("--sources", default="127.0.0.1")
    hold.add_argument("--timeout", type=float, default=120.0)
    hold.add_argument("--lifetime", type=float, default=600.0)
    args = parser.parse_args(argv)
    handlers = {
        "echo": runEcho,
        "connect": runConnect,
        "ftp": runFtp,
        "greeter": runGreeter,
        "hold": runHold,
    }
    handlers[args.command](args)


if __name__ == "__main__":
    main()
