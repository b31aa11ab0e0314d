"""FTP filter, explicit proxy: the USER name@host[:port] login and its allow-list."""

from __future__ import annotations

import pytest
from twisted.internet.error import ConnectionRefusedError

from fwxtwisted.address import Address
from fwxtwisted.filters.ftp.control import MAX_QUEUED_COMMANDS
from fwxtwisted.filters.ftp.filter import ftpFilter
from fwxtwisted.filters.ftp.options import parseFTPOptions
from fwxtwisted.interfaces import Direction
from fwxtwisted.testing import FakeSession

GATEWAY_GREETING = b"220 fwxtwisted FTP gateway ready; log in as USER name@host[:port]\r\n"
LOGIN = b"USER anonymous@192.0.2.10:2121\r\n"


def explicit(*destinations: str) -> FakeSession:
    """An explicit-proxy session (no default upstream), its gateway greeting cleared."""
    options = parseFTPOptions(
        {"explicit": True, "allow_destinations": list(destinations or ["192.0.2.0/24"])}
    )
    session = FakeSession(options=options, defaultUpstream=None)
    session.attachFilter(ftpFilter)
    assert session.toClient == GATEWAY_GREETING
    session.toClient = b""
    return session


def loggedIn() -> FakeSession:
    """An explicit session connected to 192.0.2.10:2121 and past USER, transcripts cleared."""
    session = explicit()
    session.clientSends(LOGIN)
    session.succeedUpstream()
    session.serverSends(b"220 upstream ready\r\n")
    session.serverSends(b"331 Please specify the password.\r\n")
    session.toClient = b""
    session.toServer = b""
    return session


def test_gatewayGreetsBeforeAnyUpstreamConnect() -> None:
    session = FakeSession(
        options=parseFTPOptions({"explicit": True, "allow_destinations": ["192.0.2.0/24"]}),
        defaultUpstream=None,
    )
    session.attachFilter(ftpFilter)
    assert session.toClient == GATEWAY_GREETING
    assert session.upstreamConnects == []


def test_commandsBeforeUserAre530() -> None:
    session = explicit()
    session.clientSends(b"PASV\r\nSYST\r\nPORT 192,0,2,10,200,10\r\n")
    assert session.toClient == b"530 log in first: USER name@host[:port]\r\n" * 3
    assert session.upstreamConnects == []
    assert session.redirectCalls == []
    assert not session.closed


def test_noopBeforeLoginAnsweredLocally() -> None:
    session = explicit()
    session.clientSends(b"NOOP\r\n")
    assert session.toClient == b"200 NOOP ok\r\n"


def test_userAtHostPortConnectsThere() -> None:
    session = explicit()
    session.clientSends(LOGIN)
    assert [connect.address for connect in session.upstreamConnects] == [
        Address("192.0.2.10", 2121)
    ]
    assert session.toServer == b""
    assert session.toClient == b""


def test_userAtHostDefaultsToPort21() -> None:
    session = explicit()
    session.clientSends(b"USER anonymous@192.0.2.10\r\n")
    assert session.upstreamConnects[-1].address == Address("192.0.2.10", 21)


def test_userAtIPv6Host() -> None:
    session = explicit("2001:db8::/32")
    session.clientSends(b"USER anonymous@[2001:db8::7]:2121\r\n")
    assert session.upstreamConnects[-1].address == Address("2001:db8::7", 2121)


def test_nameMayHoldAnAt() -> None:
    session = explicit()
    session.clientSends(b"USER me@example.org@192.0.2.10\r\n")
    session.succeedUpstream()
    session.serverSends(b"220 ready\r\n")
    assert session.toServer == b"USER me@example.org\r\n"


def test_serverGreetingSwallowedAndUserSentWithoutDestination() -> None:
    session = explicit()
    session.clientSends(LOGIN)
    session.succeedUpstream()
    assert session.toServer == b""
    session.serverSends(b"220 upstream ready\r\n")
    assert session.toServer == b"USER anonymous\r\n"
    assert session.toClient == b""


def test_multilineAndDelayedServerGreetingSwallowed() -> None:
    session = explicit()
    session.clientSends(LOGIN)
    session.succeedUpstream()
    session.serverSends(b"120 soon\r\n220-Welcome\r\n220 ready\r\n")
    assert session.toServer == b"USER anonymous\r\n"
    assert session.toClient == b""


def test_serverAnswerToUserReachesClient() -> None:
    session = explicit()
    session.clientSends(LOGIN)
    session.succeedUpstream()
    session.serverSends(b"220 upstream ready\r\n")
    session.serverSends(b"331 Please specify the password.\r\n")
    assert session.toClient == b"331 Please specify the password.\r\n"


def test_passAfterUserReachesServerAfterUser() -> None:
    session = loggedIn()
    session.clientSends(b"PASS secret\r\n")
    assert session.toServer == b"PASS secret\r\n"
    session.serverSends(b"230 Login successful.\r\n")
    assert session.toClient == b"230 Login successful.\r\n"


def test_pipelinedPassWaitsForUpstreamAndUser() -> None:
    session = explicit()
    session.clientSends(LOGIN + b"PASS secret\r\nSYST\r\n")
    assert session.toServer == b""
    session.succeedUpstream()
    assert session.toServer == b""
    session.serverSends(b"220 upstream ready\r\n")
    assert session.toServer == b"USER anonymous\r\nPASS secret\r\nSYST\r\n"
    session.serverSends(b"331 password\r\n230 ok\r\n215 UNIX Type: L8\r\n")
    assert session.toClient == b"331 password\r\n230 ok\r\n215 UNIX Type: L8\r\n"


def test_destinationOutsideAllowListIs530AndNotConnected() -> None:
    session = explicit("192.0.2.0/24:21")
    session.clientSends(LOGIN)
    assert session.toClient == b"530 destination 192.0.2.10:2121 is not allowed\r\n"
    assert session.upstreamConnects == []
    assert not session.closed


def test_hostOutsideAllowListIs530() -> None:
    session = explicit()
    session.clientSends(b"USER anonymous@198.51.100.7\r\n")
    assert session.toClient == b"530 destination 198.51.100.7:21 is not allowed\r\n"
    assert session.upstreamConnects == []


def test_refusedDestinationLeavesTheClientLoggedOut() -> None:
    session = explicit("192.0.2.0/24:21")
    session.clientSends(LOGIN + b"PASS secret\r\n")
    assert session.toClient == (
        b"530 destination 192.0.2.10:2121 is not allowed\r\n"
        b"530 log in first: USER name@host[:port]\r\n"
    )
    assert session.toServer == b""


def test_refusedIPv6DestinationIsWrittenInBrackets() -> None:
    session = explicit("192.0.2.0/24:21")
    session.clientSends(b"USER anonymous@[::1]:21\r\n")
    assert session.toClient == b"530 destination [::1]:21 is not allowed\r\n"
    assert session.upstreamConnects == []


def test_userWithoutAtIs501() -> None:
    session = explicit()
    session.clientSends(b"USER anonymous\r\n")
    assert session.toClient == b"501 log in as USER name@host[:port]\r\n"
    assert session.upstreamConnects == []
    assert not session.closed


@pytest.mark.parametrize(
    "argument", [b"@192.0.2.10", b"anonymous@", b"anonymous@[2001:db8::7", b"anonymous@2001:db8::7"]
)
def test_userWithoutNameOrHostIs501(argument: bytes) -> None:
    session = explicit()
    session.clientSends(b"USER " + argument + b"\r\n")
    assert session.toClient.startswith(b"501 ")
    assert session.upstreamConnects == []


def test_userWithBadPortIs501() -> None:
    session = explicit()
    session.clientSends(b"USER anonymous@192.0.2.10:99999\r\n")
    assert session.toClient.startswith(b"501 ")
    assert session.upstreamConnects == []


def test_hostnameResolvedThroughTheSession() -> None:
    session = explicit()
    session.hostnames["ftp.example.org"] = "192.0.2.30"
    session.clientSends(b"USER anonymous@ftp.example.org:2121\r\n")
    assert session.upstreamConnects[-1].address == Address("192.0.2.30", 2121)


def test_hostnameResolvingOutsideAllowListIs530() -> None:
    session = explicit()
    session.hostnames["evil.example.org"] = "10.0.0.1"
    session.clientSends(b"USER anonymous@evil.example.org\r\n")
    assert session.toClient == b"530 destination evil.example.org:21 is not allowed\r\n"
    assert session.upstreamConnects == []


def test_unresolvableHostIs530() -> None:
    session = explicit()
    session.clientSends(b"USER anonymous@nowhere.example.org\r\n")
    assert session.toClient == b"530 cannot resolve nowhere.example.org\r\n"
    assert session.upstreamConnects == []
    assert not session.closed


def test_negativeServerGreetingIs421AndCloses() -> None:
    session = explicit()
    session.clientSends(LOGIN)
    session.succeedUpstream()
    session.serverSends(b"421 Too many users\r\n")
    assert session.toClient == b"421 server refused the session: Too many users\r\n"
    assert session.toServer == b""
    assert session.closed


def test_upstreamUnreachableIs421AndCloses() -> None:
    session = explicit()
    session.clientSends(LOGIN)
    session.failUpstream(ConnectionRefusedError(string="192.0.2.10:2121"))
    assert session.toClient == (
        b"421 service not available: Connection was refused by other side: 192.0.2.10:2121.\r\n"
    )
    assert session.closed


def test_idleWhileWaitingForTheServerGreetingIs421() -> None:
    options = parseFTPOptions(
        {"explicit": True, "allow_destinations": ["192.0.2.0/24"], "idle_timeout": 30}
    )
    session = FakeSession(options=options, defaultUpstream=None)
    session.attachFilter(ftpFilter)
    session.clientSends(LOGIN)
    session.succeedUpstream()
    session.clock.advance(31)
    assert (
        session.toClient == GATEWAY_GREETING + b"421 idle for 30 s; closing control connection\r\n"
    )
    assert session.closed


def test_quitBeforeLoginIs221AndCloses() -> None:
    session = explicit()
    session.clientSends(b"QUIT\r\n")
    assert session.toClient == b"221 Goodbye\r\n"
    assert session.closed
    assert session.upstreamConnects == []


def test_secondUserWithDestinationAfterLoginIs530() -> None:
    session = loggedIn()
    session.clientSends(b"USER other@192.0.2.11\r\n")
    assert session.toClient == (
        b"530 already connected to a server; reconnect to change servers\r\n"
    )
    assert session.toServer == b""
    assert len(session.upstreamConnects) == 1


def test_plainUserAfterLoginForwarded() -> None:
    session = loggedIn()
    session.clientSends(b"USER other\r\n")
    assert session.toServer == b"USER other\r\n"


def test_dataChannelsWorkAfterLogin() -> None:
    session = loggedIn()
    session.clientSends(b"PASV\r\n")
    session.serverSends(b"227 Entering Passive Mode (10,9,8,7,156,64).\r\n")
    [call] = session.redirectCalls
    assert call.connectAddresses == (Address("192.0.2.10", 40000),)
    call.grant(50010)
    assert session.toClient == b"227 Entering Passive Mode (198,51,100,1,195,90).\r\n"


def test_commandFloodDuringLoginIsHeldNotRead() -> None:
    session = explicit()
    session.clientSends(LOGIN + b"NOOP\r\n" * (MAX_QUEUED_COMMANDS + 10))
    assert not session.closed
    assert session.readingPaused == {Direction.CLIENT_TO_SERVER}
    assert session.toServer == b""
    session.succeedUpstream()
    session.serverSends(b"220 ready\r\n")
    # USER and the commands up to the limit; the rest waits for replies.
    assert session.toServer == b"USER anonymous\r\n" + b"NOOP\r\n" * (MAX_QUEUED_COMMANDS - 1)
    session.serverSends(b"331 password\r\n" + b"200 ok\r\n" * 20)
    session.clock.advance(0)
    assert session.toServer.count(b"NOOP") == MAX_QUEUED_COMMANDS + 10
    session.serverSends(b"200 ok\r\n" * 53)
    session.clock.advance(0)
    assert session.readingPaused == set()


def test_commandsUpToTheLimitWaitForTheLogin() -> None:
    session = explicit()
    # The USER counts as one of them.
    session.clientSends(LOGIN + b"NOOP\r\n" * (MAX_QUEUED_COMMANDS - 1))
    assert not session.closed
    session.succeedUpstream()
    session.serverSends(b"220 ready\r\n")
    assert session.toServer == b"USER anonymous\r\n" + b"NOOP\r\n" * (MAX_QUEUED_COMMANDS - 1)


# A client leaving before an upstream exists.


def test_clientEOFBeforeLoginEndsTheSessionAtOnce() -> None:
    session = explicit()
    session.clientEOF()
    assert session.closed
    assert session.closeReason == "client closed the connection"
    assert session.clock.getDelayedCalls() == []


def test_clientEOFAfterARefusedLoginEndsTheSessionAtOnce() -> None:
    session = explicit()
    session.clientSends(b"USER nobody\r\n")
    session.clientEOF()
    assert session.toClient.startswith(b"501 ")
    assert session.closed
    assert session.closeReason == "client closed the connection"


def test_clientEOFWhileTheUpstreamConnectsCancelsIt() -> None:
    session = explicit()
    session.clientSends(LOGIN)
    session.clientEOF()
    assert session.closed
    assert session.upstreamConnects[0].deferred.called
    assert session.toServer == b""


def test_clientEOFAfterLoginGoesToTheServer() -> None:
    session = loggedIn()
    session.clientEOF()
    assert session.toServerEOF
    assert not session.closed
