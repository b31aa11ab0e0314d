"""FTP filter, security: bounce refusals, replies trusted only in context, broken framing."""

from __future__ import annotations

import pytest

from fwxtwisted.address import Address
from fwxtwisted.filters.ftp.filter import ftpFilter
from fwxtwisted.filters.ftp.options import parseFTPOptions
from fwxtwisted.testing import DEFAULT_CLIENT, DEFAULT_UPSTREAM, FakeSession

CLIENT_IP = DEFAULT_CLIENT.host  # 192.0.2.10
SERVER_IP = DEFAULT_UPSTREAM.host  # 203.0.113.50


def started(**options: object) -> FakeSession:
    """A reverse-proxy session past the server's greeting, with both transcripts cleared."""
    session = FakeSession(options=parseFTPOptions(options))
    session.attachFilter(ftpFilter)
    session.succeedUpstream()
    session.serverSends(b"220 hi\r\n")
    session.toClient = b""
    return session


def assertNothingOpened(session: FakeSession) -> None:
    assert session.redirectCalls == []
    assert session.joinCalls == []


# Anti-bounce.


def test_portNamingAnotherHostRefused() -> None:
    session = started()
    session.clientSends(b"PORT 192,0,2,99,200,10\r\n")
    assert session.toClient == (
        b"500 Illegal PORT command: the address is not the client's own\r\n"
    )
    assert session.toServer == b""
    assertNothingOpened(session)
    assert not session.closed


def test_portNamingTheServerRefused() -> None:
    session = started()
    session.clientSends(b"PORT 203,0,113,50,0,21\r\n")
    assert session.toClient.startswith(b"500 Illegal PORT command")
    assert session.toServer == b""
    assertNothingOpened(session)


def test_eprtNamingAnotherHostRefused() -> None:
    session = started()
    session.clientSends(b"EPRT |1|192.0.2.99|51210|\r\n")
    assert session.toClient == (
        b"500 Illegal EPRT command: the address is not the client's own\r\n"
    )
    assert session.toServer == b""
    assertNothingOpened(session)


@pytest.mark.parametrize(
    "command", [b"PORT 192,0,2,10,0,25", b"PORT 192,0,2,10,3,255", b"EPRT |1|192.0.2.10|22|"]
)
def test_privilegedPortRefused(command: bytes) -> None:
    session = started()
    session.clientSends(command + b"\r\n")
    assert session.toClient.endswith(b"command: ports below 1024 are refused\r\n")
    assert session.toClient.startswith(b"500 ")
    assert session.toServer == b""
    assertNothingOpened(session)


def test_port1024Accepted() -> None:
    session = started()
    session.clientSends(b"PORT 192,0,2,10,4,0\r\n")
    assert session.redirectCalls[-1].connectAddresses == (Address(CLIENT_IP, 1024),)


@pytest.mark.parametrize("allowFxp", [False, True])
@pytest.mark.parametrize(
    "command",
    [
        b"PORT 224,0,0,1,200,10",
        b"PORT 239,255,255,250,200,10",
        b"PORT 255,255,255,255,200,10",
        b"PORT 0,0,0,0,200,10",
        b"EPRT |2|ff02::1|51210|",
        b"EPRT |2|::|51210|",
    ],
)
def test_nonUnicastRefusedEvenWithFxp(command: bytes, allowFxp: bool) -> None:
    session = started(allow_fxp=allowFxp)
    session.clientSends(command + b"\r\n")
    assert session.toClient.startswith(b"500 Illegal ")
    assert session.toClient.endswith(b"command: not a unicast address\r\n")
    assert session.toServer == b""
    assertNothingOpened(session)


@pytest.mark.parametrize("allowFxp", [False, True])
def test_port0Refused(allowFxp: bool) -> None:
    session = started(allow_fxp=allowFxp)
    session.clientSends(b"PORT 192,0,2,10,0,0\r\n")
    assert session.toClient == b"500 Illegal PORT command: port 0\r\n"
    assertNothingOpened(session)


def test_fxpAllowsAnotherHost() -> None:
    session = started(allow_fxp=True)
    session.clientSends(b"PORT 192,0,2,99,200,10\r\n")
    [call] = session.redirectCalls
    assert call.connectAddresses == (Address("192.0.2.99", 51210),)
    assert call.expectedPeer == SERVER_IP
    assert session.toClient == b""


def test_fxpAllowsAPrivilegedPort() -> None:
    session = started(allow_fxp=True)
    session.clientSends(b"PORT 192,0,2,10,0,20\r\n")
    assert session.redirectCalls[-1].connectAddresses == (Address(CLIENT_IP, 20),)


@pytest.mark.parametrize(
    "command",
    [
        b"PORT 198,51,100,1,200,10",  # the gateway's client-facing IP
        b"PORT 203,0,113,1,200,10",  # the gateway's external IP
        b"EPRT |1|203.0.113.1|51210|",
    ],
)
def test_fxpStillRefusesTheGatewayItself(command: bytes) -> None:
    session = started(allow_fxp=True)
    session.clientSends(command + b"\r\n")
    assert session.toClient.startswith(b"500 Illegal ")
    assert session.toClient.endswith(b"command: the gateway itself\r\n")
    assert session.toServer == b""
    assertNothingOpened(session)


def test_eprtIPv4MappedNamingAnotherHostRefused() -> None:
    session = started()
    session.clientSends(b"EPRT |2|::ffff:192.0.2.99|51210|\r\n")
    assert session.toClient == (
        b"500 Illegal EPRT command: the address is not the client's own\r\n"
    )
    assertNothingOpened(session)


def test_eprtIPv4MappedClientAddressAccepted() -> None:
    session = started()
    session.clientSends(b"EPRT |2|::ffff:192.0.2.10|51210|\r\n")
    assert session.redirectCalls[-1].connectAddresses == (Address(CLIENT_IP, 51210),)


def test_eprtClientIPv6AddressInAnotherSpellingAccepted() -> None:
    session = FakeSession(
        clientAddress=Address("2001:db8::10", 50000),
        internalAddress=Address("2001:db8::1", 21),
        externalAddress="2001:db8:1::1",
        defaultUpstream=Address("2001:db8:2::50", 21),
        options=parseFTPOptions({}),
    )
    session.attachFilter(ftpFilter)
    session.succeedUpstream()
    session.serverSends(b"220 hi\r\n")
    session.clientSends(b"EPRT |2|2001:0DB8:0000::0010|51210|\r\n")
    [call] = session.redirectCalls
    assert call.connectAddresses == (Address("2001:db8::10", 51210),)


@pytest.mark.parametrize(
    "command",
    [
        b"PORT 127,0,0,1,0,22",
        b"PORT 127,1,2,3,200,10",
        b"EPRT |2|::1|22|",
        b"EPRT |2|::ffff:127.0.0.1|22|",
    ],
)
def test_fxpRefusesLoopback(command: bytes) -> None:
    session = started(allow_fxp=True)
    session.clientSends(command + b"\r\n")
    assert session.toClient.startswith(b"500 Illegal ")
    assert session.toClient.endswith(b"command: the gateway itself\r\n")
    assertNothingOpened(session)


@pytest.mark.parametrize(
    "command",
    [
        b"PORT",
        b"PORT 192,0,2,10,200",
        b"PORT 192,0,2,10,200,10,1",
        b"PORT 192,0,2,10,200,256",
        b"PORT a,b,c,d,e,f",
        b"EPRT 1|192.0.2.10|51210|",
        b"EPRT |1|192.0.2.10|",
        b"EPRT |1|not-an-ip|51210|",
        b"EPRT |2|192.0.2.10|51210|",
        b"EPRT |1|192.0.2.10|70000|",
    ],
)
def test_malformedActiveCommandIs501(command: bytes) -> None:
    session = started()
    session.clientSends(command + b"\r\n")
    assert session.toClient.startswith(b"501 ")
    assert session.toClient.count(b"\r\n") == 1
    assert session.toServer == b""
    assertNothingOpened(session)
    assert not session.closed


def test_eprtFamily3Is522() -> None:
    session = started()
    session.clientSends(b"EPRT |3|192.0.2.10|51210|\r\n")
    assert session.toClient == b"522 network protocol not supported, use (1,2)\r\n"
    assert session.toServer == b""
    assertNothingOpened(session)


@pytest.mark.parametrize(
    ("command", "verb"),
    [(b"LPRT 4,4,192,0,2,10,2,200,10", b"LPRT"), (b"LPSV", b"LPSV")],
)
def test_longAddressCommandsAre502(command: bytes, verb: bytes) -> None:
    session = started()
    session.clientSends(command + b"\r\n")
    assert session.toClient == b"502 " + verb + b" not implemented; use EPSV or EPRT\r\n"
    assert session.toServer == b""
    assertNothingOpened(session)


# Replies are trusted only as the answer to the command that asks for them.


def test_clientSending227IsRefused() -> None:
    session = started()
    session.clientSends(b"227 Entering Passive Mode (192,0,2,10,200,10)\r\n")
    assert session.toClient == b"500 '227' is not a command verb\r\n"
    assert session.toServer == b""
    assertNothingOpened(session)


def test_unsolicited227FromServerRelayedAndOpensNothing() -> None:
    session = started()
    session.serverSends(b"227 Entering Passive Mode (10,9,8,7,156,64).\r\n")
    assert session.toClient == b"227 Entering Passive Mode (10,9,8,7,156,64).\r\n"
    assertNothingOpened(session)


def test_227AnsweringAnotherCommandOpensNothing() -> None:
    session = started()
    session.clientSends(b"NOOP\r\n")
    session.serverSends(b"227 Entering Passive Mode (10,9,8,7,156,64).\r\n")
    assert session.toClient == b"227 Entering Passive Mode (10,9,8,7,156,64).\r\n"
    assertNothingOpened(session)


def test_portLikeTextInAnotherReplyOpensNothing() -> None:
    session = started()
    session.clientSends(b"HELP\r\n")
    reply = b"214-Try PORT 192,0,2,10,200,10 or\r\n EPRT |1|192.0.2.10|51210|\r\n214 Help OK.\r\n"
    session.serverSends(reply)
    assert session.toClient == reply
    assertNothingOpened(session)


def test_crInArgumentCannotSmuggleACommand() -> None:
    session = started()
    session.clientSends(b"RETR a\rPORT 192,0,2,99,0,25\r\n")
    assert session.toClient == b"501 control character '\\r' in the argument of RETR\r\n"
    assert session.toServer == b""
    assertNothingOpened(session)
    assert not session.closed


# Broken framing ends the session.


def test_overLongLineIs500AndCloses() -> None:
    session = started()
    session.clientSends(b"RETR " + b"a" * 3000 + b"\r\n")
    assert session.toClient == b"500 line longer than 2048 bytes\r\n"
    assert session.toServer == b""
    assert session.closed


def test_overLongLineReportedBeforeItsEnd() -> None:
    session = started()
    session.clientSends(b"RETR " + b"a" * 3000)
    assert session.toClient == b"500 line longer than 2048 bytes\r\n"
    assert session.closed


def test_maxLineLengthOption() -> None:
    session = started(max_line_length=512)
    session.clientSends(b"RETR " + b"a" * 600 + b"\r\n")
    assert session.toClient == b"500 line longer than 512 bytes\r\n"
    assert session.closed


def test_lineAtMaxLengthAccepted() -> None:
    session = started(max_line_length=512)
    line = b"RETR " + b"a" * 507
    session.clientSends(line + b"\r\n")
    assert session.toServer == line + b"\r\n"
    assert not session.closed


def test_nulIs500AndCloses() -> None:
    session = started()
    session.clientSends(b"RETR a\0b\r\n")
    assert session.toClient == b"500 NUL byte in line\r\n"
    assert session.toServer == b""
    assert session.closed


def test_overLongLineStillAnsweredWhileACommandAwaitsItsReply() -> None:
    session = started()
    session.clientSends(b"SYST\r\n")
    session.clientSends(b"RETR " + b"a" * 3000 + b"\r\n")
    assert session.toClient == b"500 line longer than 2048 bytes\r\n"
    assert session.closed


def test_commandsAfterBrokenFramingIgnored() -> None:
    session = started()
    session.clientSends(b"RETR a\0b\r\nPORT 192,0,2,10,200,10\r\nSTOR x\r\n")
    assert session.toServer == b""
    assertNothingOpened(session)


def test_brokenSessionLeavesOthersUntouched() -> None:
    broken = started()
    other = started()
    broken.clientSends(b"RETR " + b"a" * 3000 + b"\r\n")
    assert broken.closed
    other.clientSends(b"PASV\r\n")
    other.serverSends(b"227 Entering Passive Mode (10,9,8,7,156,64).\r\n")
    other.redirectCalls[-1].grant(50010)
    assert other.toClient == b"227 Entering Passive Mode (198,51,100,1,195,90).\r\n"
    assert not other.closed


def test_serverGarbageGreetingIs421AndCloses() -> None:
    session = FakeSession(options=parseFTPOptions({}))
    session.attachFilter(ftpFilter)
    session.succeedUpstream()
    session.serverSends(b"SSH-2.0-OpenSSH_9.2\r\n")
    assert session.toClient == b"421 the server sent an invalid reply; closing\r\n"
    assert session.closed
    assert session.closeReason is not None
    assert session.closeReason.startswith("server protocol error: not a reply")


def test_serverGarbageAnsweringACommandIs421AndCloses() -> None:
    session = started()
    session.clientSends(b"SYST\r\n")
    session.serverSends(b"garbage\r\n")
    assert session.toClient == b"421 the server sent an invalid reply; closing\r\n"
    assert session.closed


def test_serverGarbageAfterAGoodReplyKeepsTheGoodReply() -> None:
    session = started()
    session.clientSends(b"SYST\r\nNOOP\r\n")
    session.serverSends(b"215 UNIX Type: L8\r\ngarbage\r\n")
    assert session.toClient == (
        b"215 UNIX Type: L8\r\n421 the server sent an invalid reply; closing\r\n"
    )
    assert session.closed


def test_serverOverLongLineIs421AndCloses() -> None:
    session = started()
    session.clientSends(b"SYST\r\n")
    session.serverSends(b"215 " + b"x" * 3000 + b"\r\n")
    assert session.toClient == b"421 the server sent an invalid reply; closing\r\n"
    assert session.closed
