"""FTP filter, active mode: PORT and EPRT rewritten, listeners opened for the server."""

from __future__ import annotations

import pytest

from fwxtwisted.address import Address
from fwxtwisted.filters.ftp.filter import ftpFilter
from fwxtwisted.filters.ftp.options import parseFTPOptions
from fwxtwisted.interfaces import ActionState, RedirectFlags
from fwxtwisted.testing import (
    DEFAULT_CLIENT,
    DEFAULT_EXTERNAL_IP,
    DEFAULT_INTERNAL,
    DEFAULT_UPSTREAM,
    FakeSession,
)

CLIENT_IP = DEFAULT_CLIENT.host  # 192.0.2.10
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
    session.toClient = b""
    return session


def test_portOpensListenerOnExternalIPForTheServer() -> None:
    session = started()
    session.clientSends(b"PORT 192,0,2,10,200,10\r\n")
    [call] = session.redirectCalls
    assert call.connectAddresses == (Address(CLIENT_IP, 51210),)
    assert call.internalAddress == Address(DEFAULT_EXTERNAL_IP, 0)
    assert call.expectedPeer == SERVER_IP
    assert call.proxyExternalAddress == INTERNAL_IP
    assert call.flags == RedirectFlags.TIMEOUT
    assert session.toServer == b""


def test_portIgnoresPassivePorts() -> None:
    session = started(passive_ports="50000-50099")
    session.clientSends(b"PORT 192,0,2,10,200,10\r\n")
    assert session.redirectCalls[-1].portRange is None


def test_portSentToServerNamesExternalIPAndGrantedPort() -> None:
    session = started()
    session.clientSends(b"PORT 192,0,2,10,200,10\r\n")
    session.redirectCalls[-1].grant(60000)
    assert session.toServer == b"PORT 203,0,113,1,234,96\r\n"
    assert session.toClient == b""


def test_portServerReplyRelayed() -> None:
    session = started()
    session.clientSends(b"PORT 192,0,2,10,200,10\r\n")
    session.redirectCalls[-1].grant(60000)
    session.serverSends(b"200 PORT command successful. Consider using PASV.\r\n")
    assert session.toClient == b"200 PORT command successful. Consider using PASV.\r\n"


def test_portRefusedByServerCancelsTheListener() -> None:
    session = started()
    session.clientSends(b"PORT 192,0,2,10,200,10\r\n")
    [action] = session.redirectCalls[-1].grant(60000).actions
    session.serverSends(b"500 Illegal PORT command.\r\n")
    assert session.toClient == b"500 Illegal PORT command.\r\n"
    assert action.state is ActionState.CANCELLED
    assert session.toServer == b"PORT 203,0,113,1,234,96\r\n"


def test_portRedirectFailureIs425AndNothingSent() -> None:
    session = started()
    session.clientSends(b"PORT 192,0,2,10,200,10\r\n")
    session.redirectCalls[-1].fail(RuntimeError("no free port"))
    assert session.toClient == b"425 cannot open data connection: no free port\r\n"
    assert session.toServer == b""


def test_portWithSpacesAroundNumbersAccepted() -> None:
    session = started()
    session.clientSends(b"PORT 192, 0, 2, 10, 200, 10\r\n")
    assert session.redirectCalls[-1].connectAddresses == (Address(CLIENT_IP, 51210),)


def test_eprtSentToServerAsEprt() -> None:
    session = started()
    session.clientSends(b"EPRT |1|192.0.2.10|51210|\r\n")
    [call] = session.redirectCalls
    assert call.connectAddresses == (Address(CLIENT_IP, 51210),)
    assert call.internalAddress == Address(DEFAULT_EXTERNAL_IP, 0)
    assert call.expectedPeer == SERVER_IP
    assert call.proxyExternalAddress == INTERNAL_IP
    call.grant(60000)
    assert session.toServer == b"EPRT |1|203.0.113.1|60000|\r\n"
    session.serverSends(b"200 EPRT command successful.\r\n")
    assert session.toClient == b"200 EPRT command successful.\r\n"


def test_eprtAnyDelimiter() -> None:
    session = started()
    session.clientSends(b"EPRT !1!192.0.2.10!51210!\r\n")
    assert session.redirectCalls[-1].connectAddresses == (Address(CLIENT_IP, 51210),)


@pytest.mark.parametrize("code", [b"500", b"501", b"502", b"504"])
def test_eprtRefusedByServerRetriedAsPort(code: bytes) -> None:
    session = started()
    session.clientSends(b"EPRT |1|192.0.2.10|51210|\r\n")
    [action] = session.redirectCalls[-1].grant(60000).actions
    session.serverSends(code + b" EPRT not understood\r\n")
    assert session.toServer == b"EPRT |1|203.0.113.1|60000|\r\nPORT 203,0,113,1,234,96\r\n"
    assert session.toClient == b""
    session.serverSends(b"200 PORT command successful.\r\n")
    assert session.toClient == b"200 PORT command successful.\r\n"
    assert action.state is ActionState.LISTENING


def test_eprtFallbackIsRemembered() -> None:
    session = started()
    session.clientSends(b"EPRT |1|192.0.2.10|51210|\r\n")
    session.redirectCalls[-1].grant(60000)
    session.serverSends(b"500 EPRT not understood\r\n200 PORT ok\r\n")
    session.toServer = b""
    session.clientSends(b"EPRT |1|192.0.2.10|51211|\r\n")
    session.redirectCalls[-1].grant(60001)
    assert session.toServer == b"PORT 203,0,113,1,234,97\r\n"


def test_eprtOtherServerErrorRelayedAndListenerCancelled() -> None:
    session = started()
    session.clientSends(b"EPRT |1|192.0.2.10|51210|\r\n")
    [action] = session.redirectCalls[-1].grant(60000).actions
    session.serverSends(b"425 cannot build data connection\r\n")
    assert session.toServer == b"EPRT |1|203.0.113.1|60000|\r\n"
    assert session.toClient == b"425 cannot build data connection\r\n"
    assert action.state is ActionState.CANCELLED


def test_secondPortCancelsTheFirstUnusedListener() -> None:
    session = started()
    session.clientSends(b"PORT 192,0,2,10,200,10\r\n")
    [first] = session.redirectCalls[-1].grant(60000).actions
    session.serverSends(b"200 PORT ok\r\n")
    session.clientSends(b"PORT 192,0,2,10,200,11\r\n")
    assert first.state is ActionState.CANCELLED


def test_eprtOnIPv6Session() -> None:
    session = started(
        FakeSession(
            clientAddress=V6_CLIENT,
            internalAddress=V6_INTERNAL,
            externalAddress=V6_EXTERNAL,
            defaultUpstream=V6_SERVER,
            options=parseFTPOptions({}),
        )
    )
    session.clientSends(b"EPRT |2|2001:db8::10|51210|\r\n")
    [call] = session.redirectCalls
    assert call.connectAddresses == (Address(V6_CLIENT.host, 51210),)
    assert call.internalAddress == Address(V6_EXTERNAL, 0)
    assert call.expectedPeer == V6_SERVER.host
    assert call.proxyExternalAddress == V6_INTERNAL.host
    call.grant(60000)
    assert session.toServer == b"EPRT |2|2001:db8:1::1|60000|\r\n"


def test_portToAnIPv6ServerIsSentAsEprt() -> None:
    session = started(
        FakeSession(
            externalAddress=V6_EXTERNAL, defaultUpstream=V6_SERVER, options=parseFTPOptions({})
        )
    )
    session.clientSends(b"PORT 192,0,2,10,200,10\r\n")
    [call] = session.redirectCalls
    assert call.internalAddress == Address(V6_EXTERNAL, 0)
    assert call.expectedPeer == V6_SERVER.host
    call.grant(60000)
    assert session.toServer == b"EPRT |2|2001:db8:1::1|60000|\r\n"
    session.serverSends(b"200 EPRT ok\r\n")
    assert session.toClient == b"200 EPRT ok\r\n"
