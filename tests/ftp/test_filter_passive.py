"""FTP filter, passive mode: PASV and EPSV rewritten, data channels opened toward the server."""

from __future__ import annotations

import pytest

from fwxtwisted.address import Address
from fwxtwisted.filters.ftp.filter import ftpFilter
from fwxtwisted.filters.ftp.options import parseFTPOptions
from fwxtwisted.filters.ftp.protocols import FTP_DATA
from fwxtwisted.interfaces import ActionState, FirewallEvent, FirewallNotification, RedirectFlags
from fwxtwisted.testing import DEFAULT_INTERNAL, DEFAULT_UPSTREAM, FakeSession

SERVER_IP = DEFAULT_UPSTREAM.host  # 203.0.113.50
INTERNAL_IP = DEFAULT_INTERNAL.host  # 198.51.100.1

V6_CLIENT = Address("2001:db8::10", 50000)
V6_INTERNAL = Address("2001:db8::1", 21)
V6_EXTERNAL = "2001:db8:1::1"
V6_SERVER = Address("2001:db8:2::50", 21)


def started(session: FakeSession | None = None, **options: object) -> FakeSession:
    """A reverse-proxy session past the server's greeting, with both transcripts cleared."""
    if session is None:
        session = FakeSession(options=parseFTPOptions(options))
    session.attachFilter(ftpFilter)
    session.succeedUpstream()
    session.serverSends(b"220 hi\r\n")
    assert session.toClient == b"220 hi\r\n"
    session.toClient = b""
    return session


def v6Session(**options: object) -> FakeSession:
    return started(
        FakeSession(
            clientAddress=V6_CLIENT,
            internalAddress=V6_INTERNAL,
            externalAddress=V6_EXTERNAL,
            defaultUpstream=V6_SERVER,
            options=parseFTPOptions(options),
        )
    )


def test_pasvIsForwardedAsPasv() -> None:
    session = started()
    session.clientSends(b"PASV\r\n")
    assert session.toServer == b"PASV\r\n"
    assert session.toClient == b""
    assert session.redirectCalls == []


@pytest.mark.parametrize(
    "reply",
    [
        b"227 Entering Passive Mode (10,9,8,7,156,64).\r\n",
        b"227 Entering Passive Mode (10,9,8,7,156,64)\r\n",
        b"227 Entering Passive Mode 10,9,8,7,156,64\r\n",
        b"227 =10,9,8,7,156,64\r\n",
        b"227 Passive (10, 9, 8, 7, 156, 64) ok\r\n",
        b"227-Entering Passive Mode\r\n227 (10,9,8,7,156,64)\r\n",
    ],
)
def test_pasvReplyFormatsAllGiveTheServerPort(reply: bytes) -> None:
    session = started()
    session.clientSends(b"PASV\r\n")
    session.serverSends(reply)
    [call] = session.redirectCalls
    assert call.connectAddresses == (Address(SERVER_IP, 40000),)


def test_pasvConnectsToServerControlIPNeverTheIPIn227() -> None:
    session = started()
    session.clientSends(b"PASV\r\n")
    session.serverSends(b"227 Entering Passive Mode (192,0,2,99,156,64).\r\n")
    [call] = session.redirectCalls
    assert call.connectAddresses == (Address(SERVER_IP, 40000),)


def test_pasvRedirectListensOnInternalIPForTheClient() -> None:
    session = started()
    session.clientSends(b"PASV\r\n")
    session.serverSends(b"227 Entering Passive Mode (10,9,8,7,156,64).\r\n")
    [call] = session.redirectCalls
    assert call.internalAddress == Address(INTERNAL_IP, 0)
    # None: the session's default, the client's IP.
    assert call.expectedPeer is None
    assert call.proxyExternalAddress is None
    assert call.flags == RedirectFlags.TIMEOUT


def test_pasvRedirectUsesPassivePorts() -> None:
    session = started(passive_ports="50000-50099")
    session.clientSends(b"PASV\r\n")
    session.serverSends(b"227 Entering Passive Mode (10,9,8,7,156,64).\r\n")
    assert session.redirectCalls[-1].portRange == (50000, 50099)


def test_pasvWithoutPassivePortsLeavesTheRangeToTheGateway() -> None:
    session = started()
    session.clientSends(b"PASV\r\n")
    session.serverSends(b"227 Entering Passive Mode (10,9,8,7,156,64).\r\n")
    assert session.redirectCalls[-1].portRange is None


def test_lowercasePasvHandled() -> None:
    session = started()
    session.clientSends(b"pasv\r\n")
    assert session.toServer == b"PASV\r\n"
    session.serverSends(b"227 Entering Passive Mode (10,9,8,7,156,64).\r\n")
    assert session.redirectCalls[-1].connectAddresses == (Address(SERVER_IP, 40000),)


def test_pasvClientGets227WithInternalIPAndGrantedPort() -> None:
    session = started(passive_ports="50000-50099")
    session.clientSends(b"PASV\r\n")
    session.serverSends(b"227 Entering Passive Mode (10,9,8,7,156,64).\r\n")
    assert session.toClient == b""
    session.redirectCalls[-1].grant(50010)
    assert session.toClient == b"227 Entering Passive Mode (198,51,100,1,195,90).\r\n"


def test_pasvAdvertiseAddressNamedIn227() -> None:
    session = started(advertise_address="192.0.2.200")
    session.clientSends(b"PASV\r\n")
    session.serverSends(b"227 Entering Passive Mode (10,9,8,7,156,64).\r\n")
    call = session.redirectCalls[-1]
    assert call.internalAddress == Address(INTERNAL_IP, 0)
    call.grant(50010)
    assert session.toClient == b"227 Entering Passive Mode (192,0,2,200,195,90).\r\n"


def test_pasvServerRefusalRelayedAndNothingOpened() -> None:
    session = started()
    session.clientSends(b"PASV\r\n")
    session.serverSends(b"425 Can't open passive connection\r\n")
    assert session.toClient == b"425 Can't open passive connection\r\n"
    assert session.redirectCalls == []


def test_pasvUnreadableServerReplyIs425() -> None:
    session = started()
    session.clientSends(b"PASV\r\n")
    session.serverSends(b"227 Entering Passive Mode somewhere\r\n")
    assert session.toClient == b"425 cannot read the server's passive reply\r\n"
    assert session.redirectCalls == []


def test_pasvRedirectFailureIs425() -> None:
    session = started()
    session.clientSends(b"PASV\r\n")
    session.serverSends(b"227 Entering Passive Mode (10,9,8,7,156,64).\r\n")
    session.redirectCalls[-1].fail(RuntimeError("no free port"))
    assert session.toClient == b"425 cannot open data connection: no free port\r\n"
    assert not session.closed


def test_epsvForwardedAsEpsvAndAnsweredWith229() -> None:
    session = started()
    session.clientSends(b"EPSV\r\n")
    assert session.toServer == b"EPSV\r\n"
    session.serverSends(b"229 Entering Extended Passive Mode (|||40000|)\r\n")
    [call] = session.redirectCalls
    assert call.connectAddresses == (Address(SERVER_IP, 40000),)
    assert call.internalAddress == Address(INTERNAL_IP, 0)
    call.grant(50010)
    assert session.toClient == b"229 Entering Extended Passive Mode (|||50010|)\r\n"


def test_epsvWithAdvertiseAddressStillNamesOnlyThePort() -> None:
    session = started(advertise_address="192.0.2.200")
    session.clientSends(b"EPSV\r\n")
    session.serverSends(b"229 Extended Passive (!!!40000!)\r\n")
    session.redirectCalls[-1].grant(50010)
    assert session.toClient == b"229 Entering Extended Passive Mode (|||50010|)\r\n"


@pytest.mark.parametrize("code", [b"500", b"501", b"502"])
def test_epsvRefusedByServerFallsBackToPasv(code: bytes) -> None:
    session = started()
    session.clientSends(b"EPSV\r\n")
    session.serverSends(code + b" unknown command\r\n")
    assert session.toServer == b"EPSV\r\nPASV\r\n"
    assert session.toClient == b""
    session.serverSends(b"227 Entering Passive Mode (10,9,8,7,156,64).\r\n")
    [call] = session.redirectCalls
    assert call.connectAddresses == (Address(SERVER_IP, 40000),)
    call.grant(50010)
    assert session.toClient == b"229 Entering Extended Passive Mode (|||50010|)\r\n"


def test_epsvFallbackIsRemembered() -> None:
    session = started()
    session.clientSends(b"EPSV\r\n")
    session.serverSends(b"500 unknown command\r\n")
    session.serverSends(b"227 Entering Passive Mode (10,9,8,7,156,64).\r\n")
    session.redirectCalls[-1].grant(50010)
    session.toServer = b""
    session.clientSends(b"EPSV\r\n")
    assert session.toServer == b"PASV\r\n"


def test_epsvOtherServerErrorIsRelayedWithoutFallback() -> None:
    session = started()
    session.clientSends(b"EPSV\r\n")
    session.serverSends(b"425 no passive ports\r\n")
    assert session.toServer == b"EPSV\r\n"
    assert session.toClient == b"425 no passive ports\r\n"
    assert session.redirectCalls == []


def test_pasvOnIPv6SessionIs501AndNothingSent() -> None:
    session = v6Session()
    session.clientSends(b"PASV\r\n")
    assert session.toClient == b"501 PASV is not possible here; use EPSV\r\n"
    assert session.toServer == b""
    assert session.redirectCalls == []


def test_epsvOnIPv6Session() -> None:
    session = v6Session()
    session.clientSends(b"EPSV\r\n")
    assert session.toServer == b"EPSV\r\n"
    session.serverSends(b"229 Entering Extended Passive Mode (|||40000|)\r\n")
    [call] = session.redirectCalls
    assert call.connectAddresses == (Address(V6_SERVER.host, 40000),)
    assert call.internalAddress == Address(V6_INTERNAL.host, 0)
    call.grant(50010)
    assert session.toClient == b"229 Entering Extended Passive Mode (|||50010|)\r\n"


def test_pasvToAnIPv6ServerIsAskedAsEpsv() -> None:
    session = started(FakeSession(defaultUpstream=V6_SERVER, options=parseFTPOptions({})))
    session.clientSends(b"PASV\r\n")
    assert session.toServer == b"EPSV\r\n"
    session.serverSends(b"229 Entering Extended Passive Mode (|||40000|)\r\n")
    [call] = session.redirectCalls
    assert call.connectAddresses == (Address(V6_SERVER.host, 40000),)
    call.grant(50010)
    assert session.toClient == b"227 Entering Passive Mode (198,51,100,1,195,90).\r\n"


def test_epsvAllAnsweredLocally() -> None:
    session = started()
    session.clientSends(b"EPSV ALL\r\n")
    assert session.toClient == b"200 EPSV ALL ok; only EPSV from now on\r\n"
    assert session.toServer == b""


def test_pasvAfterEpsvAllRefused() -> None:
    session = started()
    session.clientSends(b"EPSV ALL\r\nPASV\r\n")
    assert session.toClient == (
        b"200 EPSV ALL ok; only EPSV from now on\r\n501 PASV is not possible here; use EPSV\r\n"
    )
    assert session.toServer == b""


@pytest.mark.parametrize(
    ("command", "verb"),
    [(b"PORT 192,0,2,10,200,10", b"PORT"), (b"EPRT |1|192.0.2.10|51210|", b"EPRT")],
)
def test_activeAfterEpsvAllRefused(command: bytes, verb: bytes) -> None:
    session = started()
    session.clientSends(b"EPSV all\r\n" + command + b"\r\n")
    assert session.toClient == (
        b"200 EPSV ALL ok; only EPSV from now on\r\n501 " + verb + b" refused after EPSV ALL\r\n"
    )
    assert session.toServer == b""
    assert session.redirectCalls == []


def test_epsvStillWorksAfterEpsvAll() -> None:
    session = started()
    session.clientSends(b"EPSV ALL\r\nEPSV\r\n")
    assert session.toServer == b"EPSV\r\n"


@pytest.mark.parametrize("argument", [b"3", b"0", b"x", b"2"])
def test_epsvOtherProtocolThanTheSessionsIs522(argument: bytes) -> None:
    session = started()
    session.clientSends(b"EPSV " + argument + b"\r\n")
    assert session.toClient == b"522 network protocol not supported, use (1)\r\n"
    assert session.toServer == b""


def test_epsv1Accepted() -> None:
    session = started()
    session.clientSends(b"EPSV 1\r\n")
    assert session.toServer == b"EPSV\r\n"


def test_secondPasvCancelsTheFirstUnusedChannel() -> None:
    session = started()
    session.clientSends(b"PASV\r\n")
    session.serverSends(b"227 Entering Passive Mode (10,9,8,7,156,64).\r\n")
    [first] = session.redirectCalls[-1].grant(50010).actions
    session.clientSends(b"PASV\r\n")
    assert first.state is ActionState.CANCELLED
    session.serverSends(b"227 Entering Passive Mode (10,9,8,7,156,65).\r\n")
    [second] = session.redirectCalls[-1].grant(50011).actions
    assert second.state is ActionState.LISTENING


def test_secondPasvKeepsAnAcceptedChannel() -> None:
    session = started()
    session.clientSends(b"PASV\r\n")
    session.serverSends(b"227 Entering Passive Mode (10,9,8,7,156,64).\r\n")
    [first] = session.redirectCalls[-1].grant(50010).actions
    first.accept()  # type: ignore[attr-defined]
    session.clientSends(b"PASV\r\n")
    assert first.state is ActionState.USED
    assert first.cancelCalls == 0  # type: ignore[attr-defined]


def test_secondPasvKeepsAnEstablishedChannel() -> None:
    session = started()
    session.clientSends(b"PASV\r\n")
    session.serverSends(b"227 Entering Passive Mode (10,9,8,7,156,64).\r\n")
    call = session.redirectCalls[-1]
    [first] = call.grant(50010).actions
    session.fireEvent(
        FirewallNotification(FirewallEvent.ESTABLISHED_CONNECTION, first, context=call.context)
    )
    session.clientSends(b"PASV\r\n")
    assert first.state is ActionState.LISTENING
    assert first.cancelCalls == 0  # type: ignore[attr-defined]


def test_pasvReplyNamingPortZeroIs425AndOpensNothing() -> None:
    session = started()
    session.clientSends(b"PASV\r\n")
    session.serverSends(b"227 Entering Passive Mode (10,9,8,7,0,0).\r\n")
    assert session.redirectCalls == []
    assert session.toClient == b"425 the server offered data port 0\r\n"


def test_passiveRedirectIsRegisteredAsFtpData() -> None:
    session = started()
    session.clientSends(b"PASV\r\n")
    session.serverSends(b"227 Entering Passive Mode (10,9,8,7,156,64).\r\n")
    [call] = session.redirectCalls
    assert call.protocolId == FTP_DATA.protocolId
