"""Hardening the edges: clients that leave before logging in, clients that flood
commands without reading, and data connections that outlive their session.

Subprocess gateways (twistd) in front of the shared vsftpd, judged from outside: the
log, session slots, and the gateway's resident memory read from /proc.
"""

from __future__ import annotations

import ftplib
import socket
import time

import pytest

from tests.interop.support import ftpGateway, gatewayLog
from tests.peers import Gateway
from tests.reliability.conftest import Files, Upstream
from tests.reliability.support import SOCKET_TIMEOUT, assertCleanLog

pytestmark = pytest.mark.peers

#: Every gateway of this module: sessions left at its stop get a second, not 30.
GRACE = ["--shutdown-grace", "1"]

CLIENT_CLOSED = "closed (client closed the connection) after 0."
#: Past the greeting of reverse mode the client's EOF goes to the server, which closes.
SERVER_CLOSED = "closed (normal close) after 0."


def connectAndClose(address: tuple[str, int], say: bytes | None = None) -> None:
    """A port scan or health check: connect, maybe read the greeting and say one line
    (read its answer), then close."""
    with socket.create_connection(address, timeout=SOCKET_TIMEOUT) as sock:
        if say is not None:
            sock.recv(4096)
            sock.sendall(say)
            sock.recv(4096)


def closedSessions(gateway: Gateway) -> int:
    """How many sessions ended within a second, closed by their client (or by the
    server it sent its EOF to)."""
    text = gatewayLog(gateway)
    return text.count(CLIENT_CLOSED) + text.count(SERVER_CLOSED)


def waitForClosed(gateway: Gateway, count: int, timeout: float = 2.0) -> None:
    """Wait until `count` sessions have been logged as closed by their client."""
    deadline = time.monotonic() + timeout
    while closedSessions(gateway) < count:
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
        assert closedSessions(gateway) == 5, text
        if explicit:
            # No upstream ever existed: the gateway itself saw each client go.
            assert text.count(CLIENT_CLOSED) == 5, text
        assert "login timeout" not in text
        assertCleanLog(gateway)
