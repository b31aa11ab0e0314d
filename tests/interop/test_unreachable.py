"""An unreachable upstream: the client gets 421 with the reason, the gateway stays up."""

from __future__ import annotations

import ftplib
import socket
from collections.abc import Iterator

import pytest

from tests.interop.support import SOCKET_TIMEOUT, ftpGateway, gatewayLog, gatewayUrl, waitForLog
from tests.peers import Gateway, curl, freePort

pytestmark = pytest.mark.peers


def expectedReply(port: int) -> str:
    """The gateway's 421 for a refused connect to 127.0.0.1:`port`."""
    return f"421 service not available: connection to 127.0.0.1:{port} refused"


@pytest.fixture(scope="module")
def closedPort() -> int:
    """A loopback port nothing listens on (nothing of ours ever binds it)."""
    return freePort()


@pytest.fixture(scope="module")
def gateway(closedPort: int) -> Iterator[Gateway]:
    with ftpGateway(["--upstream", f"127.0.0.1:{closedPort}"]) as running:
        yield running


def test_ftplibGets421WithTheReason(gateway: Gateway, closedPort: int) -> None:
    ftp = ftplib.FTP(timeout=SOCKET_TIMEOUT)
    try:
        with pytest.raises(ftplib.error_temp) as raised:
            ftp.connect(*gateway.address)
        assert str(raised.value) == expectedReply(closedPort)
        # The gateway closes the session after its 421.
        assert ftp.file is not None
        assert ftp.file.readline() == ""
    finally:
        ftp.close()


def test_rawClientSees421ThenClose(gateway: Gateway, closedPort: int) -> None:
    with socket.create_connection(gateway.address, timeout=SOCKET_TIMEOUT) as client:
        received = b""
        while chunk := client.recv(4096):
            received += chunk
    assert received == expectedReply(closedPort).encode() + b"\r\n"


def test_curlReports421(gateway: Gateway, closedPort: int) -> None:
    result = curl(["-v", gatewayUrl(gateway, "file.bin")])
    assert result.returncode != 0, result
    assert f"< {expectedReply(closedPort)}" in result.stderr, result


def test_noTracebackAndStillServing(gateway: Gateway) -> None:
    since = len(gatewayLog(gateway))
    with pytest.raises(ftplib.error_temp, match="^421 "):
        with ftplib.FTP(timeout=SOCKET_TIMEOUT) as ftp:
            ftp.connect(*gateway.address)
    waitForLog(gateway, r"closing: ", since=since)
    assert gateway.returncode is None
    log = gatewayLog(gateway)
    assert "Traceback" not in log, log
    assert "Unhandled" not in log, log
