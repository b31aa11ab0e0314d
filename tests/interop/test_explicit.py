"""Explicit proxy mode: USER name@host:port reaches an allowed server, and only that.

The gateway runs with --explicit and an allow-list holding only vsftpd's address and
port. A login naming anything else gets 530 with the reason, and the gateway makes no
connection at all: a tripwire listener at the refused destination records any accept.
"""

from __future__ import annotations

import ftplib
import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.interop.support import (
    CURL_MODES,
    SOCKET_TIMEOUT,
    Payloads,
    RootFactory,
    ServerLog,
    Tripwire,
    assertDataVerbs,
    curlDownload,
    ftpGateway,
    ftplibDownload,
    ftpSession,
    gatewayLog,
    gatewayUrl,
    waitForLog,
)
from tests.peers import Gateway, Vsftpd, curl, freePort, sha256File

pytestmark = pytest.mark.peers


@pytest.fixture(scope="module")
def server(serverRoots: RootFactory, payloads: Payloads) -> Iterator[Vsftpd]:
    root = serverRoots("vsftpd-explicit", [payloads.small])
    with Vsftpd(root, lifetime=300) as vsftpd:
        yield vsftpd


@pytest.fixture(scope="module")
def closedPort() -> int:
    """An allowed destination port on which nothing listens."""
    return freePort()


@pytest.fixture(scope="module")
def gateway(server: Vsftpd, closedPort: int) -> Iterator[Gateway]:
    allowed = f"127.0.0.1/32:{server.port},{closedPort}"
    options = ["--explicit", "--allow-destination", allowed]
    with ftpGateway(options) as running:
        yield running


@pytest.fixture(params=["other-ip", "other-port"])
def refused(request: pytest.FixtureRequest) -> Iterator[Tripwire]:
    """A listener outside the allow-list: on another loopback IP, or another port."""
    with Tripwire("127.0.0.7" if request.param == "other-ip" else "127.0.0.1") as tripwire:
        yield tripwire


@pytest.mark.parametrize("passive", [True, False], ids=["passive", "active"])
def test_ftplibExplicitLogin(
    passive: bool, server: Vsftpd, gateway: Gateway, payloads: Payloads
) -> None:
    log = ServerLog(server)
    user = f"anonymous@127.0.0.1:{server.port}"
    with ftpSession(*gateway.address, user=user, password="x", passive=passive) as ftp:
        assert "log in as USER name@host" in ftp.getwelcome()
        assert ftplibDownload(ftp, payloads.small.name) == (
            payloads.small.sha256,
            payloads.small.size,
        )
    assertDataVerbs(log, ["PASV" if passive else "PORT"])
    # vsftpd got the plain name: the destination part is the gateway's business.
    users = [c.argument for c in log.commands() if c.verb == "USER"]
    assert users == ["anonymous"], log.text()


@pytest.mark.parametrize("mode", ["EPSV", "EPRT"])
def test_curlExplicitLogin(
    mode: str, server: Vsftpd, gateway: Gateway, payloads: Payloads, out: Path
) -> None:
    log = ServerLog(server)
    user = quote(f"anonymous@127.0.0.1:{server.port}", safe="") + ":x"
    assert user == f"anonymous%40127.0.0.1%3A{server.port}:x"
    curlDownload(gatewayUrl(gateway, payloads.small.name, user=user), out, CURL_MODES[mode])
    assert sha256File(out) == payloads.small.sha256
    assertDataVerbs(log, [mode])


def test_ftplibRefusedDestination(gateway: Gateway, refused: Tripwire) -> None:
    since = len(gatewayLog(gateway))
    destination = f"{refused.host}:{refused.port}"
    ftp = ftplib.FTP(timeout=SOCKET_TIMEOUT)
    try:
        ftp.connect(*gateway.address)
        with pytest.raises(ftplib.error_perm) as raised:
            ftp.login(f"anonymous@{destination}", "x")
        assert str(raised.value) == f"530 destination {destination} is not allowed"
        # The session is still there, not logged in anywhere.
        assert ftp.sendcmd("NOOP").startswith("200")
    finally:
        ftp.close()
    assert refused.settle() == []
    waitForLog(
        gateway,
        rf"explicit destination {re.escape(destination)} refused by allow-list",
        since=since,
    )


def test_curlRefusedDestination(gateway: Gateway, refused: Tripwire, out: Path) -> None:
    destination = f"{refused.host}:{refused.port}"
    user = quote(f"anonymous@{destination}", safe="") + ":x"
    result = curl(["-v", "-o", str(out), gatewayUrl(gateway, "small.bin", user)])
    assert result.returncode == 67, result  # CURLE_LOGIN_DENIED
    assert f"< 530 destination {destination} is not allowed" in result.stderr, result
    assert refused.settle() == []


def test_allowedButClosedDestination(gateway: Gateway, closedPort: int) -> None:
    """An allowed destination that refuses the connection: 421 with the reason."""
    ftp = ftplib.FTP(timeout=SOCKET_TIMEOUT)
    try:
        ftp.connect(*gateway.address)
        with pytest.raises(ftplib.error_temp) as raised:
            ftp.login(f"anonymous@127.0.0.1:{closedPort}", "x")
        expected = f"421 service not available: connection to 127.0.0.1:{closedPort} refused"
        assert str(raised.value) == expected
    finally:
        ftp.close()
    assert "Traceback" not in gatewayLog(gateway)
