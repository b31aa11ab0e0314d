"""IPv6: vsftpd on ::1 behind the gateway listening on ::1 (RFC 2428 EPSV and EPRT)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.interop.support import (
    Payloads,
    RootFactory,
    ServerLog,
    assertDataVerbs,
    assertSessionsFrom,
    curlDownload,
    ftpGateway,
    ftplibDownload,
    ftpSession,
    gatewayUrl,
)
from tests.peers import Gateway, Vsftpd, requireIPv6Loopback, sha256File

pytestmark = pytest.mark.peers

LOOPBACK6 = "::1"


@pytest.fixture(scope="module")
def server(serverRoots: RootFactory, payloads: Payloads) -> Iterator[Vsftpd]:
    requireIPv6Loopback()
    root = serverRoots("vsftpd-ipv6", [payloads.small])
    with Vsftpd(root, ipv6=True, lifetime=300) as vsftpd:
        assert vsftpd.host == LOOPBACK6
        yield vsftpd


@pytest.fixture(scope="module")
def gateway(server: Vsftpd) -> Iterator[Gateway]:
    with ftpGateway(["--upstream", f"[{LOOPBACK6}]:{server.port}"], host=LOOPBACK6) as running:
        yield running


@pytest.mark.parametrize(
    ("mode", "options"), [("EPSV", ()), ("EPRT", ("-P", LOOPBACK6))], ids=["EPSV", "EPRT"]
)
def test_curlDownload(
    mode: str,
    options: tuple[str, ...],
    server: Vsftpd,
    gateway: Gateway,
    payloads: Payloads,
    out: Path,
) -> None:
    log = ServerLog(server)
    url = gatewayUrl(gateway, payloads.small.name)
    assert url.startswith(f"ftp://[{LOOPBACK6}]:")
    curlDownload(url, out, options)
    assert sha256File(out) == payloads.small.sha256
    (command,) = assertDataVerbs(log, [mode])
    if mode == "EPRT":
        assert command.argument.startswith(f"|2|{LOOPBACK6}|"), command
    assertSessionsFrom(log, [LOOPBACK6])


@pytest.mark.parametrize("passive", [True, False], ids=["passive", "active"])
def test_ftplibDownload(
    passive: bool, server: Vsftpd, gateway: Gateway, payloads: Payloads
) -> None:
    """ftplib over IPv6 uses EPSV (passive) and EPRT (active) by itself."""
    log = ServerLog(server)
    with ftpSession(*gateway.address, passive=passive) as ftp:
        assert ftplibDownload(ftp, payloads.small.name) == (
            payloads.small.sha256,
            payloads.small.size,
        )
    assertDataVerbs(log, ["EPSV" if passive else "EPRT"])
    assertSessionsFrom(log, [LOOPBACK6])
