"""Hostile clients: FTP bounce, passive-port hijacking, over-long and NUL lines.

vsftpd sits behind the gateway; tripwire listeners record any connection made where
none may be. The attacker's connections come from other loopback IPs than the client's.
"""

from __future__ import annotations

import ftplib
import hashlib
from collections.abc import Iterator

import pytest

from tests.interop.support import (
    Payloads,
    RootFactory,
    ServerLog,
    Tripwire,
    assertDataVerbs,
    freeLowPort,
    ftpGateway,
    ftplibDownload,
    ftpSession,
    gatewayLog,
    retrieveAfterIntruder,
    waitForLog,
    waitForRefusalLogged,
)
from tests.peers import Gateway, Vsftpd

pytestmark = pytest.mark.peers

CLIENT = "127.0.0.1"
ATTACKER = "127.0.0.5"
THIRD_PARTY = "127.0.0.9"


@pytest.fixture(scope="module")
def server(serverRoots: RootFactory, payloads: Payloads) -> Iterator[Vsftpd]:
    root = serverRoots("vsftpd-hostile", [payloads.small])
    with Vsftpd(root, lifetime=300) as vsftpd:
        yield vsftpd


@pytest.fixture(scope="module")
def gateway(server: Vsftpd) -> Iterator[Gateway]:
    options = ["--upstream", f"127.0.0.1:{server.port}", "--external-address", "127.0.0.2"]
    with ftpGateway(options) as running:
        yield running


def portArgument(host: str, port: int) -> str:
    return f"{host.replace('.', ',')},{port >> 8},{port & 0xFF}"


def assertRefused(ftp: ftplib.FTP, command: str, reply: str) -> None:
    with pytest.raises(ftplib.error_perm) as raised:
        ftp.sendcmd(command)
    assert str(raised.value) == reply


def test_bounceToThirdAddressRefused(server: Vsftpd, gateway: Gateway, payloads: Payloads) -> None:
    """PORT/EPRT naming another host than the client's: 500, and nothing connects there."""
    log = ServerLog(server)
    with Tripwire(THIRD_PARTY) as target, ftpSession(*gateway.address) as ftp:
        ftp.voidcmd("TYPE I")
        assertRefused(
            ftp,
            f"PORT {portArgument(THIRD_PARTY, target.port)}",
            "500 Illegal PORT command: the address is not the client's own",
        )
        assertRefused(
            ftp,
            f"EPRT |1|{THIRD_PARTY}|{target.port}|",
            "500 Illegal EPRT command: the address is not the client's own",
        )
        # No data channel was set up: the server has none to use.
        with pytest.raises(ftplib.error_temp, match="^425 "):
            ftp.sendcmd(f"RETR {payloads.small.name}")
        # The session goes on: a passive download still works.
        assert ftplibDownload(ftp, payloads.small.name) == (
            payloads.small.sha256,
            payloads.small.size,
        )
        assert target.settle() == []
    assertDataVerbs(log, ["PASV"])


def test_portBelow1024Refused(server: Vsftpd, gateway: Gateway) -> None:
    """PORT/EPRT naming the client's own IP but a port below 1024: 500, no connection."""
    log = ServerLog(server)
    lowPort = freeLowPort(CLIENT)
    with Tripwire(CLIENT, lowPort) as target, ftpSession(*gateway.address) as ftp:
        assertRefused(
            ftp,
            f"PORT {portArgument(CLIENT, lowPort)}",
            "500 Illegal PORT command: ports below 1024 are refused",
        )
        assertRefused(
            ftp,
            f"EPRT |1|{CLIENT}|{lowPort}|",
            "500 Illegal EPRT command: ports below 1024 are refused",
        )
        assert ftp.sendcmd("NOOP").startswith("200")
        assert target.settle() == []
    assert log.dataCommands() == []


@pytest.mark.parametrize("verb", ["PASV", "EPSV"])
def test_passivePortHijackRefused(verb: str, gateway: Gateway, payloads: Payloads) -> None:
    """Another IP connecting first to the advertised passive port is closed without a
    byte; the real client's transfer then succeeds."""
    since = len(gatewayLog(gateway))
    with ftpSession(*gateway.address) as ftp:
        offered, received = retrieveAfterIntruder(ftp, verb, payloads.small.name, ATTACKER)
    assert offered[0] == CLIENT
    assert len(received) == payloads.small.size
    assert hashlib.sha256(received).hexdigest() == payloads.small.sha256
    waitForRefusalLogged(gateway, ATTACKER, offered, CLIENT, since)


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("NOOP " + "x" * 5000, "line longer than 2048 bytes"),
        ("NOOP a\0b", "NUL byte in line"),
    ],
    ids=["overlong", "nul"],
)
def test_badLineEndsOnlyItsSession(
    line: str, reason: str, server: Vsftpd, gateway: Gateway, payloads: Payloads
) -> None:
    """A line the gateway cannot frame gets 500 and ends that session (it never reaches
    the server); a second session, open all along, keeps working."""
    log = ServerLog(server)
    since = len(gatewayLog(gateway))
    with ftpSession(*gateway.address) as bystander:
        with ftpSession(*gateway.address) as offender:
            with pytest.raises(ftplib.error_perm) as raised:
                offender.sendcmd(line)
            assert str(raised.value) == f"500 {reason}"
            # Then the gateway closes that session.
            assert offender.file is not None
            assert offender.file.readline() == ""
        waitForLog(gateway, rf"closing: client protocol error: {reason}", since=since)
        # The other session, open all along, still works.
        listing: list[str] = []
        bystander.retrlines("LIST", listing.append)
        assert any(payloads.small.name in entry for entry in listing), listing
        assert ftplibDownload(bystander, payloads.small.name) == (
            payloads.small.sha256,
            payloads.small.size,
        )
    assert gateway.returncode is None
    assert "Traceback" not in gatewayLog(gateway)
    assert [c for c in log.commands() if c.verb == "NOOP"] == [], log.text()
