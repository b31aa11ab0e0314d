"""Hardening the edges: clients that leave before logging in, clients that flood
commands without reading, and data connections that outlive their session.

Subprocess gateways (twistd) in front of the shared vsftpd, judged from outside: the
log, session slots, and the gateway's resident memory read from /proc.
"""

from __future__ import annotations

import ftplib
import re
import select
import socket
import threading
import time
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.interop.support import curlDownload, ftpGateway, gatewayLog, gatewayUrl, waitForLog
from tests.peers import Gateway, sha256File
from tests.reliability.conftest import Files, Upstream
from tests.reliability.support import SOCKET_TIMEOUT, RawFtp, assertCleanLog, gatewayPid

pytestmark = pytest.mark.peers

#: Every gateway of this module: sessions left at its stop get a second, not 30.
GRACE = ["--shutdown-grace", "1"]

#: A session ended within a second by its client: its EOF, or its reset (a client that
#: closes with the greeting unread resets), or past the greeting of reverse mode the
#: server closing on the EOF passed on to it.
ENDED_AT_ONCE = re.compile(
    r"closed \((client closed the connection|client connection lost: [^)]*|normal close)\) "
    r"after 0\."
)


def connectAndClose(address: tuple[str, int], say: bytes | None = None) -> None:
    """A port scan or health check: connect, maybe read the greeting and say one line
    (read its answer), then close."""
    with socket.create_connection(address, timeout=SOCKET_TIMEOUT) as sock:
        if say is not None:
            sock.recv(4096)
            sock.sendall(say)
            sock.recv(4096)


def closedSessions(gateway: Gateway) -> list[str]:
    """The reasons of the sessions that ended at once."""
    return [match.group(1) for match in ENDED_AT_ONCE.finditer(gatewayLog(gateway))]


def waitForClosed(gateway: Gateway, count: int, timeout: float = 5.0) -> None:
    """Wait until `count` sessions have been logged as closed by their client."""
    deadline = time.monotonic() + timeout
    while len(closedSessions(gateway)) < count:
        assert time.monotonic() < deadline, gatewayLog(gateway)
        time.sleep(0.02)


@pytest.mark.parametrize("explicit", [True, False], ids=["explicit", "reverse"])
def test_clientsLeavingBeforeLoginFreeTheirSlotsAtOnce(
    explicit: bool, upstream: Upstream, files: Files
) -> None:
    """--max-sessions 2: five clients that connect and close (some after a refused
    login) leave no session behind; a real login right after succeeds, and the log
    says the clients closed."""
    mode = (
        ["--explicit", "--allow-destination", f"127.0.0.1/32:{upstream.server.port}"]
        if explicit
        else ["--upstream", upstream.address]
    )
    with ftpGateway([*mode, "--max-sessions", "2", "--login-timeout", "60", *GRACE]) as gateway:
        started = time.monotonic()
        for count, say in enumerate((None, None, b"USER nobody\r\n", b"PASS x\r\n", None)):
            connectAndClose(gateway.address, say)
            # Each is gone at once (not at the 60 s login timeout), one after the other.
            waitForClosed(gateway, count + 1)
        user = f"anonymous@127.0.0.1:{upstream.server.port}" if explicit else "anonymous"
        ftp = ftplib.FTP(timeout=SOCKET_TIMEOUT)
        try:
            deadline = time.monotonic() + 2.0
            while True:
                ftp.connect(*gateway.address)
                if not ftp.getwelcome().startswith("421"):
                    break
                ftp.close()
                assert time.monotonic() < deadline, "slots still held"
                time.sleep(0.05)
            ftp.login(user, "x")
            assert files.small.name in ftp.nlst()
            ftp.quit()
        finally:
            ftp.close()
        assert time.monotonic() - started < 10
        text = gatewayLog(gateway)
        reasons = closedSessions(gateway)
        assert len(reasons) == 5, text
        if explicit:
            # No upstream ever existed: the gateway itself saw each client go.
            assert "normal close" not in reasons, text
            assert reasons.count("client closed the connection") >= 2, text
        assertCleanLog(gateway)


# -- memory per session ------------------------------------------------------------------------

#: How much the gateway's resident memory may grow while one client floods it.
RSS_BOUND = 8 * 1024 * 1024
FLOOD_SECONDS = 5.0


def vmRSS(pid: int) -> int:
    """The resident memory of process `pid`, in bytes (/proc/PID/status VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


class Flooder:
    """A client that sends `line` over and over for `seconds` and never reads."""

    def __init__(self, address: tuple[str, int], line: bytes, first: bytes = b"") -> None:
        self.sock = socket.create_connection(address, timeout=SOCKET_TIMEOUT)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.line = line
        self.first = first
        self.sent = 0

    def flood(self, seconds: float) -> None:
        # The greeting, then never a read again.
        greeting = b""
        while b"\r\n" not in greeting:
            greeting += self.sock.recv(1)
        assert greeting.startswith(b"220 "), greeting
        chunk = self.line * (65536 // len(self.line))
        self.sock.sendall(self.first)
        self.sock.setblocking(False)
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                self.sent += self.sock.send(chunk)
            except BlockingIOError:
                select.select([], [self.sock], [], min(left, 0.1))

    def close(self) -> None:
        self.sock.close()


@pytest.mark.parametrize(
    "mode, line, first",
    [
        ("reverse", b"NOOP\r\n", b"USER anonymous\r\nPASS x\r\n"),
        ("reverse", b"LPSV\r\n", b"USER anonymous\r\nPASS x\r\n"),
        ("explicit", b"NOOP\r\n", b""),
    ],
    ids=["noop-forwarded", "lpsv-answered-by-gateway", "noop-before-explicit-login"],
)
def test_aClientFloodingWithoutReadingHoldsBoundedMemory(
    mode: str, line: bytes, first: bytes, upstream: Upstream, files: Files, tmp_path: Path
) -> None:
    """A client pipelines one command for 5 s without reading a reply: the gateway's
    RSS grows by less than RSS_BOUND, a curl download beside it stays intact, and the
    flooder's session ends once it leaves."""
    port = upstream.server.port
    options = (
        ["--explicit", "--allow-destination", f"127.0.0.1/32:{port}"]
        if mode == "explicit"
        else ["--upstream", upstream.address]
    )
    user = quote(f"anonymous@127.0.0.1:{port}") if mode == "explicit" else None
    with ftpGateway([*options, *GRACE]) as gateway:
        pid = gatewayPid(gateway)
        # A first download warms the gateway up (imports, buffers) before the baseline.
        out = tmp_path / "warm.bin"
        curlDownload(gatewayUrl(gateway, files.small.name, user), out)
        before = vmRSS(pid)
        flooder = Flooder(gateway.address, line, first)
        download: dict[str, object] = {}

        def fetch() -> None:
            target = tmp_path / "beside.bin"
            try:
                curlDownload(gatewayUrl(gateway, files.medium.name, user), target)
                download["sha256"] = sha256File(target)
            except Exception as e:  # reported below
                download["error"] = e

        beside = threading.Thread(target=fetch)
        try:
            beside.start()
            flooder.flood(FLOOD_SECONDS)
            peak = vmRSS(pid)
        finally:
            beside.join(60)
            flooder.close()
        grown = peak - before
        print(
            f"{mode} {line!r}: RSS {before / 2**20:.1f} -> {peak / 2**20:.1f} MiB, "
            f"client sent {flooder.sent / 2**20:.1f} MiB"
        )
        assert grown < RSS_BOUND, f"RSS grew by {grown / 2**20:.1f} MiB"
        assert download.get("sha256") == files.medium.sha256, download
        # The flooder's session ends once it is gone: two sessions ended (the warm-up
        # download and the flooder) besides the download beside it.
        deadline = time.monotonic() + 5
        while gatewayLog(gateway).count(") closed (") < 3:
            assert time.monotonic() < deadline, gatewayLog(gateway)
            time.sleep(0.05)
        assertCleanLog(gateway)


# -- data connections and their session -------------------------------------------------------


def closedWithin(sock: socket.socket, seconds: float) -> float:
    """Seconds until the gateway closes `sock` (EOF or reset), failing past `seconds`."""
    started = time.monotonic()
    sock.settimeout(seconds)
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        pass
    except TimeoutError:
        raise AssertionError(f"data connection still open after {seconds} s") from None
    return time.monotonic() - started


@pytest.mark.parametrize("ending", ["reset", "quit"])
def test_dataConnectionsEndWithTheirSession(ending: str, upstream: Upstream) -> None:
    """A data connection whose control session ends is closed at once with it."""
    with ftpGateway(["--upstream", upstream.address, *GRACE]) as gateway:
        control = RawFtp(gateway.address)
        control.login()
        data = control.dataConnection(control.pasv())
        try:
            if ending == "reset":
                control.reset()
            else:
                control.quit()
            assert closedWithin(data, 3.0) < 3.0
        finally:
            data.close()
        waitForLog(gateway, r"closed \(.*\) after")
        assertCleanLog(gateway)


def test_anIdleDataConnectionIsClosedAfterTheIdleTimeout(upstream: Upstream) -> None:
    """--idle-timeout 2: a data connection that moves no byte is closed within two idle
    timeouts, and the control connection goes on."""
    with ftpGateway(["--upstream", upstream.address, "--idle-timeout", "2", *GRACE]) as gateway:
        with RawFtp(gateway.address) as control:
            control.login()
            data = control.dataConnection(control.pasv())
            try:
                assert closedWithin(data, 6.0) < 6.0
            finally:
                data.close()
            waitForLog(gateway, r"data connection idle for 2 s; closing it")
            assert control.command("NOOP")[0] == 200
            control.quit()
        assertCleanLog(gateway)
