"""Helpers of the reliability tests: fd counts, a raw FTP client, a scripted FTP server,
and an in-process gateway whose sockets, listeners and timers can be checked.

Everything stays on loopback and is bounded: sockets have timeouts, threads are joined
with timeouts, the subprocess gateways come from tests/peers.py (always stopped).
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.interfaces import IDelayedCall, IListeningPort
from twisted.logger import ILogObserver, formatEvent, globalLogPublisher
from zope.interface import implementer

from fwxtwisted.address import Address
from fwxtwisted.app.config import ListenerConfig
from fwxtwisted.app.primary import BoundListener
from fwxtwisted.app.service import FirewallService
from fwxtwisted.filters.ftp.filter import FTPFilter
from fwxtwisted.filters.ftp.options import parseFTPOptions
from fwxtwisted.logs import summaries
from fwxtwisted.permissions.gateway import Gateway as GatewayRuntime
from fwxtwisted.permissions.session import Session
from fwxtwisted.settings import GatewaySettings
from tests.interop.support import Payload, gatewayLog
from tests.peers import Gateway, makeFile

LOCAL = "127.0.0.1"
#: Socket timeout of every client and fake server socket, in seconds.
SOCKET_TIMEOUT = 10.0
#: How long a gateway may take to release what a session held, in seconds.
SETTLE = 10.0


# -- payloads --------------------------------------------------------------------------------


def makePayload(directory: Path, name: str, size: int, seed: int) -> Payload:
    """A pseudo-random file of `size` bytes in `directory`, with its digest."""
    path = directory / name
    return Payload(path, size, makeFile(path, size, seed=seed))


# -- file descriptors of a subprocess gateway ------------------------------------------------


def fdCount(pid: int) -> int:
    """How many file descriptors process `pid` has open now."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def fdTargets(pid: int) -> list[str]:
    """What each open descriptor of `pid` is (socket:[inode], pipe:[inode], a path ...)."""
    targets = []
    for name in sorted(os.listdir(f"/proc/{pid}/fd"), key=int):
        with contextlib.suppress(OSError):
            targets.append(f"{name} -> {os.readlink(f'/proc/{pid}/fd/{name}')}")
    return targets


def gatewayPid(gateway: Gateway) -> int:
    """The pid of the twistd process of `gateway` (setpriv execs it: the pid is twistd's)."""
    assert gateway.process is not None
    return gateway.process.pid


def settledFdCount(pid: int, quiet: float = 0.5, timeout: float = SETTLE) -> int:
    """The fd count of `pid` once it has not changed for `quiet` seconds."""
    deadline = time.monotonic() + timeout
    last = fdCount(pid)
    since = time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.05)
        now = fdCount(pid)
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return now
    raise AssertionError(f"the fd count of {pid} did not settle in {timeout} s: {last}")


def assertFdsBackTo(pid: int, baseline: int, timeout: float = SETTLE) -> None:
    """Wait (bounded) until `pid` has exactly `baseline` descriptors open, else fail
    with the list of what it holds."""
    deadline = time.monotonic() + timeout
    while True:
        now = fdCount(pid)
        if now == baseline:
            return
        if time.monotonic() >= deadline:
            listing = "\n".join(fdTargets(pid))
            raise AssertionError(
                f"gateway {pid} holds {now} fds, {baseline} before, after {timeout} s:\n{listing}"
            )
        time.sleep(0.05)


def assertCleanLog(gateway: Gateway) -> None:
    """The gateway logged no traceback and no unhandled error."""
    text = gatewayLog(gateway)
    for marker in ("Traceback", "Unhandled", "CRITICAL"):
        assert marker not in text, f"{marker!r} in the gateway log:\n{text}"


# -- a raw FTP client ------------------------------------------------------------------------


class FtpReplyError(AssertionError):
    """A reply other than the one expected."""


class RawFtp:
    """A minimal FTP client on a plain socket, for what ftplib cannot do: reset a
    connection, leave without QUIT, read a data socket at a chosen pace."""

    def __init__(
        self,
        address: tuple[str, int],
        source: str | None = None,
        timeout: float = SOCKET_TIMEOUT,
    ) -> None:
        self.timeout = timeout
        self.source = source
        bind = (source, 0) if source is not None else None
        self.sock = socket.create_connection(address, timeout=timeout, source_address=bind)
        self._reader = self.sock.makefile("rb")

    def reply(self) -> tuple[int, str]:
        """The next complete reply: (code, text of its lines joined by LF).
        @raise EOFError: the connection closed first."""
        lines = []
        while True:
            raw = self._reader.readline(65536)
            if not raw:
                raise EOFError(f"connection closed after {lines!r}")
            line = raw.decode("latin-1").rstrip("\r\n")
            lines.append(line)
            if len(lines) == 1 and not re.match(r"\d{3}[ -]", line):
                raise FtpReplyError(f"not an FTP reply: {line!r}")
            if re.match(r"\d{3} ", line) and line[:3] == lines[0][:3]:
                return int(line[:3]), "\n".join(lines)

    def expect(self, code: int) -> str:
        """The next reply, which must have `code`."""
        got, text = self.reply()
        if got != code:
            raise FtpReplyError(f"expected {code}, got {text!r}")
        return text

    def send(self, line: str) -> None:
        """Send one command line."""
        self.sock.sendall(line.encode("latin-1") + b"\r\n")

    def command(self, line: str) -> tuple[int, str]:
        """Send `line` and return its reply."""
        self.send(line)
        return self.reply()

    def login(self, greeting: bool = True) -> None:
        """Read the greeting and log in anonymously (vsftpd with no_anon_password says
        230 to USER at once)."""
        if greeting:
            self.expect(220)
        code, text = self.command("USER anonymous")
        if code == 331:
            code, text = self.command("PASS x")
        if code != 230:
            raise FtpReplyError(f"login: {text!r}")

    def pasv(self) -> tuple[str, int]:
        """PASV: the offered (host, port)."""
        code, text = self.command("PASV")
        if code != 227:
            raise FtpReplyError(f"PASV: {text!r}")
        numbers = re.search(r"(\d+),(\d+),(\d+),(\d+),(\d+),(\d+)", text)
        assert numbers is not None, text
        parts = [int(n) for n in numbers.groups()]
        return ".".join(map(str, parts[:4])), parts[4] << 8 | parts[5]

    def port(self) -> socket.socket:
        """PORT naming a fresh listener on the control connection's own IP."""
        host = self.sock.getsockname()[0]
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind((host, 0))
        listener.listen(1)
        listener.settimeout(self.timeout)
        number = listener.getsockname()[1]
        code, text = self.command(f"PORT {host.replace('.', ',')},{number >> 8},{number & 255}")
        if code != 200:
            listener.close()
            raise FtpReplyError(f"PORT: {text!r}")
        return listener

    def dataConnection(self, offered: tuple[str, int]) -> socket.socket:
        """Connect to a passive data port, from the control connection's source IP."""
        bind = (self.source, 0) if self.source is not None else None
        return socket.create_connection(offered, timeout=self.timeout, source_address=bind)

    def close(self) -> None:
        """Close the control connection (FIN), without QUIT."""
        self._reader.close()
        self.sock.close()

    def reset(self) -> None:
        """Close the control connection with a RST (SO_LINGER 0)."""
        resetSocket(self.sock)
        self._reader.close()
        self.sock.close()

    def quit(self) -> None:
        """QUIT, read its 221, close."""
        try:
            self.send("QUIT")
            self.expect(221)
        finally:
            self.close()

    def __enter__(self) -> RawFtp:
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(OSError):
            self.close()


def resetSocket(sock: socket.socket) -> None:
    """Make the next close of `sock` send a RST (SO_LINGER on, 0 s)."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def readAll(sock: socket.socket, limit: int | None = None) -> bytes:
    """What `sock` receives until EOF (or `limit` bytes), bounded by its timeout."""
    chunks = []
    size = 0
    while limit is None or size < limit:
        chunk = sock.recv(1 << 16 if limit is None else min(1 << 16, limit - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


# -- a scripted FTP server -------------------------------------------------------------------


class FakeControl:
    """One control connection of a L{FakeFtpServer}, as its script sees it."""

    def __init__(self, server: FakeFtpServer, sock: socket.socket, index: int) -> None:
        self.server = server
        self.sock = sock
        self.index = index
        self._reader = sock.makefile("rb")
        self._dataListener: socket.socket | None = None

    def send(self, data: str | bytes) -> None:
        """Send raw bytes, or a str line (CRLF added)."""
        raw = data if isinstance(data, bytes) else data.encode("latin-1") + b"\r\n"
        self.sock.sendall(raw)

    def readCommand(self) -> tuple[str, str] | None:
        """The next command (VERB upper-cased, argument), or None at EOF."""
        raw = self._reader.readline(65536)
        if not raw:
            return None
        verb, _, argument = raw.decode("latin-1").rstrip("\r\n").partition(" ")
        return verb.upper(), argument

    def openPassive(self) -> tuple[str, int]:
        """Listen for one data connection; the (host, port) to advertise."""
        self.closeData()
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind((LOCAL, 0))
        listener.listen(1)
        listener.settimeout(SOCKET_TIMEOUT)
        self._dataListener = listener
        self.server.track(listener)
        return LOCAL, listener.getsockname()[1]

    def acceptData(self) -> socket.socket:
        """The data connection made to the port of L{openPassive}."""
        assert self._dataListener is not None, "no PASV before the transfer"
        connection, _ = self._dataListener.accept()
        connection.settimeout(SOCKET_TIMEOUT)
        self.server.track(connection)
        self.closeData()
        return connection

    def closeData(self) -> None:
        if self._dataListener is not None:
            self._dataListener.close()
            self._dataListener = None

    def kill(self, *others: socket.socket, reset: bool = True) -> None:
        """End this control connection and `others` at once, with RST or FIN."""
        for sock in (*others, self.sock):
            if reset:
                resetSocket(sock)
            with contextlib.suppress(OSError):
                sock.close()
        self._reader.close()

    def serve(
        self,
        files: Mapping[str, bytes],
        overrides: Mapping[str, Callable[[FakeControl, str], bool]] | None = None,
        greeting: bool = True,
    ) -> None:
        """Behave as an ordinary anonymous FTP server until QUIT or EOF. An override for
        a verb handles it instead, returning False to end the session."""
        if greeting:
            self.send("220 fake FTP server ready")
        while True:
            command = self.readCommand()
            if command is None:
                return
            verb, argument = command
            override = (overrides or {}).get(verb)
            if override is not None:
                if not override(self, argument):
                    return
                continue
            if verb == "QUIT":
                self.send("221 Goodbye.")
                return
            self.send(self._answer(verb, argument, files))

    def _answer(self, verb: str, argument: str, files: Mapping[str, bytes]) -> str:
        if verb == "USER":
            return "331 Please specify the password."
        if verb == "PASS":
            return "230 Login successful."
        if verb in ("TYPE", "NOOP", "MODE", "STRU"):
            return "200 OK."
        if verb == "SYST":
            return "215 UNIX Type: L8"
        if verb == "PWD":
            return '257 "/" is the current directory'
        if verb == "PASV":
            host, port = self.openPassive()
            return f"227 Entering Passive Mode ({host.replace('.', ',')},{port >> 8},{port & 255})."
        if verb == "EPSV":
            return f"229 Entering Extended Passive Mode (|||{self.openPassive()[1]}|)"
        if verb == "RETR":
            if argument not in files:
                return "550 Failed to open file."
            data = self.acceptData()
            self.send(f"150 Opening BINARY mode data connection for {argument}.")
            with data:
                data.sendall(files[argument])
            return "226 Transfer complete."
        return "502 Command not implemented."


class FakeFtpServer:
    """An FTP server in threads on 127.0.0.1 running `script(control)` per connection.

    Bounded: every socket has a timeout, and close() closes every socket and joins the
    threads (5 s each).
    """

    def __init__(self, script: Callable[[FakeControl], None]) -> None:
        self._script = script
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.bind((LOCAL, 0))
        self._listener.listen(16)
        self._listener.settimeout(0.05)
        self.address: tuple[str, int] = (LOCAL, self._listener.getsockname()[1])
        self.connections = 0
        self.errors: list[BaseException] = []
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._acceptor = threading.Thread(target=self._accept, daemon=True)
        self._acceptor.start()

    def track(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            connection.settimeout(SOCKET_TIMEOUT)
            self.track(connection)
            self.connections += 1
            worker = threading.Thread(
                target=self._run, args=(connection, self.connections - 1), daemon=True
            )
            with self._lock:
                self._threads.append(worker)
            worker.start()

    def _run(self, connection: socket.socket, index: int) -> None:
        control = FakeControl(self, connection, index)
        try:
            self._script(control)
        except (OSError, EOFError):
            pass  # the peer went away: the scripts' business is only what they send
        except BaseException as error:  # noqa: B036 - reported by close()
            self.errors.append(error)
        finally:
            control.closeData()
            with contextlib.suppress(OSError):
                connection.close()

    def close(self) -> None:
        self._stop.set()
        self._listener.close()
        self._acceptor.join(5)
        with self._lock:
            sockets, threads = list(self._sockets), list(self._threads)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()
        for worker in threads:
            worker.join(5)

    def __enter__(self) -> FakeFtpServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
        assert not self.errors, f"the fake server's script failed: {self.errors!r}"


@contextlib.contextmanager
def fakeServer(script: Callable[[FakeControl], None]) -> Iterator[FakeFtpServer]:
    """A L{FakeFtpServer} running `script` until the block ends."""
    with FakeFtpServer(script) as server:
        yield server


# -- an in-process gateway -------------------------------------------------------------------


class TrackingClock:
    """The reactor's clock, remembering every call the gateway schedules on it (its
    idle, login and permission timers), so a test can see none is left running."""

    def __init__(self) -> None:
        self.calls: list[IDelayedCall] = []

    def seconds(self) -> float:
        return float(reactor.seconds())

    def callLater(self, delay: float, f: Callable[..., Any], *a: Any, **kw: Any) -> IDelayedCall:
        call = reactor.callLater(delay, f, *a, **kw)
        self.calls.append(call)
        return call

    def getDelayedCalls(self) -> list[IDelayedCall]:
        """The gateway's timers still pending."""
        return [call for call in self.calls if call.active()]


class TrackedFTPFilter(FTPFilter):
    """The FTP filter, remembering every session it was attached to."""

    def __init__(self) -> None:
        self.sessions: list[Session] = []

    def attachToSession(self, session: Any) -> Any:
        self.sessions.append(session)
        return super().attachToSession(session)


@implementer(ILogObserver)
class LogCapture:
    """Every Twisted log event while it is attached, formatted."""

    def __init__(self) -> None:
        self._events: list[dict[str, Any]] = []

    def __call__(self, event: dict[str, Any]) -> None:
        self._events.append(event)

    @property
    def events(self) -> list[dict[str, Any]]:
        """What was logged so far, the summaries the gateway still holds included."""
        summaries.flush()
        return self._events

    def text(self) -> str:
        return "\n".join(formatEvent(event) or "" for event in self.events)

    def transfers(self) -> list[dict[str, Any]]:
        """The FTP filter's transfer events (fwx_event="ftp.transfer")."""
        return [event for event in self.events if event.get("fwx_event") == "ftp.transfer"]

    def failures(self) -> list[str]:
        """Events carrying a traceback, or saying something was unhandled."""
        found = []
        for event in self.events:
            text = formatEvent(event) or ""
            if "log_failure" in event or "Unhandled" in text or "Traceback" in text:
                failure = event.get("log_failure")
                found.append(f"{text}\n{failure.getTraceback() if failure else ''}")
        return found

    @contextlib.contextmanager
    def attached(self) -> Iterator[LogCapture]:
        globalLogPublisher.addObserver(self)
        try:
            yield self
        finally:
            globalLogPublisher.removeObserver(self)


class InProcessFTPGateway:
    """A FirewallService running the FTP filter in this process, one listener per
    upstream, on the real reactor (timers on a L{TrackingClock}).

    L{leftovers} lists what its finished sessions still hold: open sessions, unfinished
    permissions, pending timers, sockets on the reactor beyond its own listeners.
    """

    def __init__(
        self,
        upstreams: Mapping[str, tuple[str, int]],
        settings: GatewaySettings | None = None,
        ftpOptions: Mapping[str, object] | None = None,
    ) -> None:
        self._readers = set(reactor.getReaders())
        self._writers = set(reactor.getWriters())
        self.clock = TrackingClock()
        self.filter = TrackedFTPFilter()
        options = parseFTPOptions(dict(ftpOptions or {}), hasUpstream=True)
        listeners = [
            BoundListener(
                ListenerConfig(name, "ftp", f"tcp:0:interface={LOCAL}", Address(*upstream)),
                self.filter,
                options,
            )
            for name, upstream in upstreams.items()
        ]
        runtime = GatewayRuntime(
            reactor, settings or GatewaySettings(shutdownGrace=1.0), clock=self.clock
        )
        self.service = FirewallService(runtime, listeners)
        self.service.startService()
        self.addresses: dict[str, tuple[str, int]] = {
            name: (LOCAL, port.getHost().port)
            for name, port in zip(upstreams, self.service.ports, strict=True)
        }

    @property
    def sessions(self) -> list[Session]:
        """Every session the gateway made, finished or not."""
        return list(self.filter.sessions)

    def leftovers(self) -> list[str]:
        """What is still held although every session of the gateway has ended."""
        problems = []
        for session in self.filter.sessions:
            if not session.closed:
                problems.append(f"{session!r} is not closed")
            if session.actions:
                problems.append(f"{session!r} still has permissions {list(session.actions)}")
        if self.service.sessions:
            problems.append(f"the service still counts sessions {self.service.sessions}")
        timers = self.clock.getDelayedCalls()
        if timers:
            problems.append(f"timers still pending: {timers}")
        ours = set(self.service.ports)
        readers = [r for r in set(reactor.getReaders()) - self._readers if r not in ours]
        writers = [w for w in set(reactor.getWriters()) - self._writers if w not in ours]
        if readers:
            problems.append(f"sockets still read by the reactor: {readers}")
        if writers:
            problems.append(f"sockets still written by the reactor: {writers}")
        listening = [r for r in readers if IListeningPort.providedBy(r)]
        if listening:
            problems.append(f"listeners still open: {listening}")
        return problems

    async def assertReleased(self, timeout: float = 5.0) -> None:
        """Wait (bounded) until L{leftovers} is empty, else fail listing them."""
        from twisted.internet import task

        deadline = time.monotonic() + timeout
        while True:
            problems = self.leftovers()
            if not problems:
                return
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"after {timeout} s the gateway still holds:\n" + "\n".join(problems)
                )
            await task.deferLater(reactor, 0.05, lambda: None)

    async def stop(self) -> None:
        from twisted.internet.defer import maybeDeferred

        await maybeDeferred(self.service.stopService)
