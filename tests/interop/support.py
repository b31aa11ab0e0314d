"""Helpers for the interop tests: gateways, server logs, clients, tripwire listeners.

Everything stays on loopback. Servers and gateways come from tests/peers.py (bounded in
time, always stopped); clients are curl/lftp subprocesses with hard timeouts, or ftplib
in the test process with socket timeouts.
"""

from __future__ import annotations

import contextlib
import dataclasses
import ftplib
import hashlib
import os
import re
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from tests.peers import (
    ClientResult,
    FtpServer,
    Gateway,
    curl,
    freePort,
    hostForUrl,
    lftp,
    runGateway,
)

#: Seconds after which a server or gateway of the interop tests is killed regardless.
LIFETIME = 300.0
#: Hard timeout of one client run (curl, lftp), in seconds.
CLIENT_TIMEOUT = 60.0
#: Socket timeout of ftplib sessions and raw sockets, in seconds.
SOCKET_TIMEOUT = 20.0

#: The gateway's source addresses toward the servers, one per session in turn.
EXTERNALS = ("127.0.0.2", "127.0.0.3")

#: curl's four data-channel modes over IPv4: the options, and the command the server sees.
CURL_MODES: dict[str, tuple[str, ...]] = {
    "EPSV": (),
    "PASV": ("--disable-epsv",),
    "EPRT": ("-P", "127.0.0.1"),
    "PORT": ("-P", "127.0.0.1", "--disable-eprt"),
}

DATA_VERBS = frozenset({"PASV", "EPSV", "PORT", "EPRT"})


# -- payloads ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Payload:
    """A file made once per test session, with its digest."""

    path: Path
    size: int
    sha256: str

    @property
    def name(self) -> str:
        """The file name (also its name in a server root)."""
        return self.path.name


@dataclasses.dataclass(frozen=True)
class Payloads:
    """The files the interop tests move, with their digests."""

    big: Payload
    """50 MiB, served for download where the acceptance criteria ask for 50 MiB."""
    bigUpload: Payload
    """50 MiB of other bytes, uploaded by the clients."""
    small: Payload
    """A few MiB, served everywhere else."""
    smallUpload: Payload
    """A few MiB of other bytes, uploaded everywhere else."""


RootFactory = Callable[[str, Sequence[Payload]], Path]
"""serverRoots(name, payloads): a new server root holding hard links to the payloads."""


def makeServerRoot(root: Path, payloads: Sequence[Payload]) -> Path:
    """Make `root` a server root (mode 0755) holding hard links to `payloads`."""
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o755)
    for payload in payloads:
        target = root / payload.name
        if target.exists():
            continue
        try:
            os.link(payload.path, target)
        except OSError:  # another file system (pytest --basetemp elsewhere)
            shutil.copyfile(payload.path, target)
            target.chmod(0o644)
    return root


# -- the gateway -----------------------------------------------------------------------------


def listenEndpoint(host: str, port: int) -> str:
    """A twistd server endpoint string for host:port (tcp6 with escaped colons for IPv6)."""
    if ":" in host:
        escaped = host.replace(":", "\\:")
        return f"tcp6:{port}:interface={escaped}"
    return f"tcp:{port}:interface={host}"


@contextlib.contextmanager
def ftpGateway(options: Sequence[str], host: str = "127.0.0.1") -> Iterator[Gateway]:
    """`twistd -n fwx ftp --listen <host:free port> *options` until the block ends."""
    port = freePort(host)
    argv = ["ftp", "--listen", listenEndpoint(host, port), *options]
    with runGateway(argv, (host, port), lifetime=LIFETIME) as gateway:
        yield gateway


def gatewayUrl(gateway: Gateway, path: str = "", user: str | None = None) -> str:
    """ftp:// URL of `path` through `gateway` (user given already URL-encoded)."""
    host, port = gateway.address
    login = f"{user}@" if user else ""
    return f"ftp://{login}{hostForUrl(host)}:{port}/{path.lstrip('/')}"


def gatewayLog(gateway: Gateway) -> str:
    """What the gateway has logged so far (its twistd log file)."""
    assert gateway.logPath is not None
    try:
        return gateway.logPath.read_text(errors="replace")
    except FileNotFoundError:
        return ""


def waitForLog(
    gateway: Gateway, pattern: str, timeout: float = 5.0, since: int = 0
) -> re.Match[str]:
    """The first match of `pattern` in the gateway log past offset `since`, polled."""
    regex = re.compile(pattern, re.MULTILINE)
    deadline = time.monotonic() + timeout
    while True:
        match = regex.search(gatewayLog(gateway), since)
        if match:
            return match
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"no match for {pattern!r} in the gateway log after {timeout} s:\n"
                f"{gatewayLog(gateway)}"
            )
        time.sleep(0.05)


# -- server logs -----------------------------------------------------------------------------

_LOG_FILES = {"vsftpd": "vsftpd.log", "pure-ftpd": "syslog.log", "proftpd": "commands.log"}

_COMMAND_PATTERNS = {
    # Thu Nov 26 19:17:33 2026 [pid 2906] [ftp] FTP command: Client "127.0.0.3", "RETR big.bin"
    "vsftpd": re.compile(r'FTP command: Client "([^"]+)", "([^"\s]+) ?(.*)"$', re.MULTILINE),
    # 127.0.0.3 [4529] "PORT 127,0,0,3,94,138" 200 "PORT command successful"
    "proftpd": re.compile(r'^(\S+) \[\d+\] "([^"\s]+) ?(.*?)" \d{3} ', re.MULTILINE),
    # pure-ftpd: (ftp@127.0.0.3) [DEBUG] Command [port] [127,0,0,3,94,160]
    "pure-ftpd": re.compile(r"\([^@)]*@([^)]+)\) \[DEBUG\] Command \[(\w+)\] \[(.*)\]"),
}


@dataclasses.dataclass(frozen=True)
class ServerCommand:
    """One command as a server logged it: from which IP, verb (upper case), argument."""

    client: str
    verb: str
    argument: str


class ServerLog:
    """A server's command log from the moment this object was made (per test)."""

    def __init__(self, server: FtpServer) -> None:
        assert server.logDir is not None
        self.server = server
        self.path = server.logDir / _LOG_FILES[server.name]
        self.offset = self.path.stat().st_size if self.path.exists() else 0

    def text(self) -> str:
        """The log text written since this object was made."""
        try:
            with open(self.path, "rb") as log:
                log.seek(self.offset)
                return log.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def commands(self) -> list[ServerCommand]:
        """The commands logged since this object was made."""
        pattern = _COMMAND_PATTERNS[self.server.name]
        return [
            ServerCommand(m.group(1), m.group(2).upper(), m.group(3))
            for m in pattern.finditer(self.text())
        ]

    def dataCommands(self) -> list[ServerCommand]:
        """The PASV/EPSV/PORT/EPRT commands logged since this object was made."""
        return [c for c in self.commands() if c.verb in DATA_VERBS]

    def waitFor(self, test: Callable[[list[ServerCommand]], bool], timeout: float = 5.0) -> None:
        """Poll until test(commands()) holds (pure-ftpd's log arrives through syslog)."""
        deadline = time.monotonic() + timeout
        while not test(self.commands()):
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"{self.server.name} log did not show what was expected in {timeout} s:\n"
                    f"{self.text()}"
                )
            time.sleep(0.05)


def assertDataVerbs(log: ServerLog, expected: Sequence[str]) -> list[ServerCommand]:
    """The server saw exactly the data commands `expected`, in order; return them."""
    log.waitFor(
        lambda commands: len([c for c in commands if c.verb in DATA_VERBS]) >= len(expected)
    )
    seen = log.dataCommands()
    assert [c.verb for c in seen] == list(expected), (
        f"{log.server.name} saw data commands {[(c.verb, c.argument) for c in seen]}, "
        f"expected {list(expected)}:\n{log.text()}"
    )
    return seen


def assertSessionsFrom(log: ServerLog, allowed: Sequence[str]) -> set[str]:
    """Every command the server logged came from an IP in `allowed`; return those IPs."""
    sources = {command.client for command in log.commands()}
    assert sources, f"{log.server.name} logged no command:\n{log.text()}"
    assert sources <= set(allowed), (
        f"{log.server.name} saw commands from {sorted(sources)}, allowed {list(allowed)}:\n"
        f"{log.text()}"
    )
    return sources


# -- clients ---------------------------------------------------------------------------------


def curlDownload(url: str, out: Path, options: Sequence[str] = ()) -> ClientResult:
    """curl `url` to `out` (checked: exit status 0)."""
    return curl([*options, "-g", "-o", str(out), url], timeout=CLIENT_TIMEOUT).check()


def curlUpload(source: Path, url: str, options: Sequence[str] = ()) -> ClientResult:
    """curl -T `source` `url` (checked: exit status 0)."""
    return curl([*options, "-g", "-T", str(source), url], timeout=CLIENT_TIMEOUT).check()


def lftpRun(gateway: Gateway, passive: bool, commands: str) -> ClientResult:
    """lftp, passive or active, logged in anonymously through `gateway`, runs `commands`."""
    mode = "on" if passive else "off"
    script = f"set ftp:passive-mode {mode}; open {gatewayUrl(gateway)}; {commands}"
    return lftp(script, timeout=CLIENT_TIMEOUT).check()


@contextlib.contextmanager
def ftpSession(
    host: str,
    port: int,
    user: str = "anonymous",
    password: str = "x",
    passive: bool = True,
) -> Iterator[ftplib.FTP]:
    """An ftplib session, logged in, passive or active; always closed."""
    ftp = ftplib.FTP(timeout=SOCKET_TIMEOUT)
    try:
        ftp.connect(host, port)
        ftp.login(user, password)
        ftp.set_pasv(passive)
        yield ftp
    finally:
        with contextlib.suppress(OSError, EOFError, ftplib.Error):
            ftp.quit()
        ftp.close()


def ftplibDownload(ftp: ftplib.FTP, name: str) -> tuple[str, int]:
    """RETR `name`: (sha256 hex, size) of the bytes received."""
    digest = hashlib.sha256()
    size = 0

    def received(block: bytes) -> None:
        nonlocal size
        digest.update(block)
        size += len(block)

    reply = ftp.retrbinary(f"RETR {name}", received, blocksize=1 << 16)
    assert reply.startswith("226"), reply
    return digest.hexdigest(), size


def ftplibUpload(ftp: ftplib.FTP, source: Path, remote: str) -> None:
    """STOR `source` as `remote`."""
    with open(source, "rb") as data:
        reply = ftp.storbinary(f"STOR {remote}", data, blocksize=1 << 16)
    assert reply.startswith("226"), reply


def retrieveAfterIntruder(
    ftp: ftplib.FTP, verb: str, name: str, intruder: str
) -> tuple[tuple[str, int], bytes]:
    """PASV/EPSV, then a connection from `intruder` to the offered port (which must be
    closed without a byte), then the client's own RETR `name` through that port.

    Returns the offered (host, port) and the bytes the client received.
    """
    ftp.voidcmd("TYPE I")
    reply = ftp.sendcmd(verb)
    if verb == "PASV":
        offered = ftplib.parse227(reply)
    else:
        assert ftp.sock is not None
        offered = ftplib.parse229(reply, ftp.sock.getpeername())
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as attacker:
        attacker.settimeout(SOCKET_TIMEOUT)
        attacker.bind((intruder, 0))
        attacker.connect(offered)
        try:
            stolen = readToEnd(attacker)
        except ConnectionResetError:
            stolen = b""
        assert stolen == b"", f"the intruder from {intruder} got {len(stolen)} bytes"
    with socket.create_connection(offered, timeout=SOCKET_TIMEOUT) as data:
        preliminary = ftp.sendcmd(f"RETR {name}")
        assert preliminary.startswith("150"), preliminary
        received = readToEnd(data)
    final = ftp.voidresp()
    assert final.startswith("226"), final
    return offered, received


def waitForRefusalLogged(
    gateway: Gateway, intruder: str, offered: tuple[str, int], client: str, since: int
) -> None:
    """The gateway logged that it refused `intruder` on the port offered to `client`."""
    host, port = offered
    waitForLog(
        gateway,
        rf"refused data connection from {re.escape(intruder)}:\d+ to "
        rf"{re.escape(host)}:{port}: only {re.escape(client)} may connect",
        since=since,
    )


def readToEnd(sock: socket.socket) -> bytes:
    """Everything `sock` receives until EOF (bounded by its timeout)."""
    chunks = []
    while chunk := sock.recv(1 << 16):
        chunks.append(chunk)
    return b"".join(chunks)


# -- tripwires -------------------------------------------------------------------------------


class Tripwire:
    """A listening socket that records every connection it accepts (a thread accepts).

    Where nothing may connect: a test asserts `accepted` stays empty.
    """

    def __init__(self, host: str, port: int = 0) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._socket = socket.socket(family, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((host, port))
        self._socket.listen(16)
        self._socket.settimeout(0.05)
        self.host = host
        self.port: int = self._socket.getsockname()[1]
        self.accepted: list[tuple[str, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                connection, peer = self._socket.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted.append((peer[0], peer[1]))
            connection.close()

    def settle(self, seconds: float = 0.5) -> list[tuple[str, int]]:
        """Wait `seconds` for anything late, then return what was accepted."""
        time.sleep(seconds)
        return list(self.accepted)

    def close(self) -> None:
        """Stop accepting and close the socket."""
        self._stop.set()
        self._thread.join(5)
        self._socket.close()

    def __enter__(self) -> Tripwire:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def freeLowPort(host: str = "127.0.0.1") -> int:
    """A free port below 1024 on `host` (binding one needs root)."""
    for port in range(1023, 900, -1):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind((host, port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port below 1024 on {host}")


# -- gateway log hygiene ---------------------------------------------------------------------

#: What a gateway log never shows when the gateway handled everything it met.
LOG_FAILURE_MARKERS = ("Unhandled Error", "Traceback")


def assertCleanLog(gateway: Gateway, since: int = 0) -> None:
    """The gateway logged no unhandled error and no traceback (past offset `since`).
    Call it once the sessions under test have ended: a close path's traceback comes last."""
    text = gatewayLog(gateway)[since:]
    for marker in LOG_FAILURE_MARKERS:
        assert marker not in text, f"{marker!r} in the gateway log:\n{text}"


class FakeFTPServer:
    """A scripted FTP server on loopback, one thread per session: it greets, records
    every command (with whether it came under TLS), answers from `replies` (verb ->
    raw bytes, sent in one write: a hostile server may pipeline forged replies), and
    after answering AUTH with a 234 it takes the TLS handshake (`tls`: a server
    certificate and key)."""

    def __init__(
        self,
        replies: dict[str, bytes],
        tls: tuple[Path, Path] | None = None,
        greeting: bytes = b"220 fake ready\r\n",
    ) -> None:
        self.replies = replies
        self.greeting = greeting
        self.commands: list[tuple[str, bool]] = []
        self._context = None
        if tls is not None:
            import ssl

            self._context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self._context.load_cert_chain(str(tls[0]), str(tls[1]))
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind(("127.0.0.1", 0))
        self._socket.listen(8)
        self._socket.settimeout(0.1)
        self.port: int = self._socket.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self._socket.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(connection,), daemon=True).start()

    def _serve(self, connection: socket.socket) -> None:
        connection.settimeout(SOCKET_TIMEOUT)
        stream = connection
        secured = False
        buffer = b""
        with contextlib.suppress(OSError):
            stream.sendall(self.greeting)
            while not self._stop.is_set():
                while b"\n" not in buffer:
                    chunk = stream.recv(4096)
                    if not chunk:
                        return
                    buffer += chunk
                line, _, buffer = buffer.partition(b"\n")
                verb = line.strip().split(b" ", 1)[0].decode("latin-1").upper()
                self.commands.append((verb, secured))
                answer = self.replies.get(verb, b"502 not here\r\n")
                stream.sendall(answer)
                if verb == "QUIT":
                    return
                if verb == "AUTH" and answer.startswith(b"234") and self._context is not None:
                    buffer = b""
                    stream = self._context.wrap_socket(connection, server_side=True)
                    secured = True
        with contextlib.suppress(OSError):
            stream.close()

    def verbs(self) -> list[str]:
        return [verb for verb, _ in self.commands]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._socket.close()

    def __enter__(self) -> FakeFTPServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
