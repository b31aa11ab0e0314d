"""FTP filter, replies: order toward the client, FEAT rewriting, TLS refusal, upstream loss."""

from __future__ import annotations

from twisted.internet.error import ConnectionRefusedError, TimeoutError

from fwxtwisted.filters.ftp.filter import ftpFilter
from fwxtwisted.filters.ftp.options import parseFTPOptions
from fwxtwisted.testing import DEFAULT_UPSTREAM, FakeSession


def attached(**options: object) -> FakeSession:
    """A reverse-proxy session whose upstream connect is still pending."""
    session = FakeSession(options=parseFTPOptions(options))
    session.attachFilter(ftpFilter)
    return session


def started(**options: object) -> FakeSession:
    """A reverse-proxy session past the server's greeting, with both transcripts cleared."""
    session = attached(**options)
    session.succeedUpstream()
    session.serverSends(b"220 hi\r\n")
    session.toClient = b""
    return session


# Greeting and upstream.


def test_reverseProxyConnectsToDefaultUpstreamAtOnce() -> None:
    session = attached()
    assert [connect.address for connect in session.upstreamConnects] == [DEFAULT_UPSTREAM]
    assert session.toClient == b""


def test_serverGreetingRelayed() -> None:
    session = attached()
    session.succeedUpstream()
    session.serverSends(b"220-Welcome\r\n220 ProFTPD ready\r\n")
    assert session.toClient == b"220-Welcome\r\n220 ProFTPD ready\r\n"


def test_delayedGreetingRelayedInOrder() -> None:
    session = attached()
    session.succeedUpstream()
    session.serverSends(b"120 ready in 1 minute\r\n220 ready\r\n")
    assert session.toClient == b"120 ready in 1 minute\r\n220 ready\r\n"


def test_commandBeforeGreetingAnsweredAfterIt() -> None:
    session = attached()
    session.succeedUpstream()
    session.clientSends(b"USER alice\r\n")
    session.serverSends(b"220 hi\r\n331 password please\r\n")
    assert session.toServer == b"USER alice\r\n"
    assert session.toClient == b"220 hi\r\n331 password please\r\n"


def test_upstreamUnreachableIs421WithReasonAndCloses() -> None:
    session = attached()
    session.failUpstream(ConnectionRefusedError(string="203.0.113.50:2100"))
    assert session.toClient == (
        b"421 service not available: Connection was refused by other side: 203.0.113.50:2100.\r\n"
    )
    assert session.closed
    assert session.closeReason == "Connection was refused by other side: 203.0.113.50:2100."


def test_upstreamTimeoutIs421AndCloses() -> None:
    session = attached()
    session.failUpstream(TimeoutError(string="connecting took too long"))
    assert session.toClient.startswith(b"421 service not available: ")
    assert b"connecting took too long" in session.toClient
    assert session.closed


def test_upstreamUnreachableAfterAPipelinedCommandStill421() -> None:
    session = attached()
    session.clientSends(b"USER alice\r\n")
    session.failUpstream(ConnectionRefusedError(string="203.0.113.50:2100"))
    assert session.toClient.startswith(b"421 service not available: ")
    assert session.toClient.count(b"\r\n") == 1
    assert session.closed


def test_commandsBeforeTheServersGreetingWaitForIt() -> None:
    session = attached()
    session.clientSends(b"USER alice\r\n")
    assert session.toServer == b""
    session.succeedUpstream()
    assert session.toServer == b""
    session.serverSends(b"220 hi\r\n")
    assert session.toServer == b"USER alice\r\n"
    session.serverSends(b"331 password\r\n")
    assert session.toClient == b"220 hi\r\n331 password\r\n"


def test_pasvBeforeUpstreamConnectedWorksOnceConnected() -> None:
    session = attached()
    session.clientSends(b"PASV\r\n")
    assert not session.closed
    session.succeedUpstream()
    session.serverSends(b"220 hi\r\n")
    assert session.toServer == b"PASV\r\n"
    session.serverSends(b"227 Entering Passive Mode (10,9,8,7,156,64).\r\n")
    [call] = session.redirectCalls
    assert call.connectAddresses == (DEFAULT_UPSTREAM.withPort(40000),)
    call.grant(50010)
    assert session.toClient == (b"220 hi\r\n227 Entering Passive Mode (198,51,100,1,195,90).\r\n")


def test_portBeforeUpstreamConnectedWorksOnceConnected() -> None:
    session = attached()
    session.clientSends(b"PORT 192,0,2,10,200,10\r\n")
    assert not session.closed
    assert session.redirectCalls == []
    session.succeedUpstream()
    session.serverSends(b"220 hi\r\n")
    [call] = session.redirectCalls
    assert call.expectedPeer == DEFAULT_UPSTREAM.host
    call.grant(60000)
    assert session.toServer == b"PORT 203,0,113,1,234,96\r\n"


def test_serverUnsolicited421Relayed() -> None:
    session = started()
    session.serverSends(b"421 Timeout.\r\n")
    assert session.toClient == b"421 Timeout.\r\n"


# Order.


def test_localAnswerWaitsForEarlierForwardedReply() -> None:
    session = started()
    session.clientSends(b"SYST\r\nLPRT 4,4,192,0,2,10,2,200,10\r\n")
    assert session.toServer == b"SYST\r\n"
    assert session.toClient == b""
    session.serverSends(b"215 UNIX Type: L8\r\n")
    assert session.toClient == (
        b"215 UNIX Type: L8\r\n502 LPRT not implemented; use EPSV or EPRT\r\n"
    )


def test_refusedBounceWaitsForEarlierForwardedReply() -> None:
    session = started()
    session.clientSends(b"CWD /pub\r\nPORT 192,0,2,99,200,10\r\n")
    assert session.toClient == b""
    session.serverSends(b"250 ok\r\n")
    assert session.toClient == (
        b"250 ok\r\n500 Illegal PORT command: the address is not the client's own\r\n"
    )


def test_preliminaryThenFinalRelayedInOrder() -> None:
    session = started()
    session.clientSends(b"LIST\r\n")
    session.serverSends(b"150 Here comes the directory listing.\r\n")
    assert session.toClient == b"150 Here comes the directory listing.\r\n"
    session.serverSends(b"226 Directory send OK.\r\n")
    assert session.toClient == (
        b"150 Here comes the directory listing.\r\n226 Directory send OK.\r\n"
    )


def test_pipelinedRepliesRelayedInCommandOrder() -> None:
    session = started()
    session.clientSends(b"TYPE I\r\nCWD /pub\r\nPWD\r\n")
    assert session.toServer == b"TYPE I\r\nCWD /pub\r\nPWD\r\n"
    session.serverSends(b"200 Switching to Binary mode.\r\n250 ok\r\n")
    session.serverSends(b'257 "/pub"\r\n')
    assert session.toClient == b'200 Switching to Binary mode.\r\n250 ok\r\n257 "/pub"\r\n'


def test_replyAfterPendingPassiveWaitsForTheGrant() -> None:
    session = started()
    session.clientSends(b"PASV\r\nRETR f\r\n")
    session.serverSends(b"227 Entering Passive Mode (10,9,8,7,156,64).\r\n150 Opening\r\n")
    assert session.toClient == b""
    session.redirectCalls[-1].grant(50010)
    assert session.toClient == (
        b"227 Entering Passive Mode (198,51,100,1,195,90).\r\n150 Opening\r\n"
    )
    session.serverSends(b"226 Transfer complete\r\n")
    assert session.toClient.endswith(b"150 Opening\r\n226 Transfer complete\r\n")


def test_multilineReplyRelayedVerbatim() -> None:
    session = started()
    session.clientSends(b"STAT\r\n")
    reply = b"211-Status:\r\n  Connected\r\n211-more\r\n211 End of status\r\n"
    session.serverSends(reply)
    assert session.toClient == reply


def test_clientEOFPassedOnAfterCommands() -> None:
    session = started()
    session.clientSends(b"QUIT\r\n")
    session.clientEOF()
    assert session.toServer == b"QUIT\r\n"
    assert session.toServerEOF


def test_serverEOFPassedOn() -> None:
    session = started()
    session.serverEOF()
    assert session.toClientEOF


# FEAT and TLS.


def test_featHidesTLSFeatures() -> None:
    session = started()
    session.clientSends(b"FEAT\r\n")
    assert session.toServer == b"FEAT\r\n"
    session.serverSends(
        b"211-Features:\r\n AUTH TLS\r\n PBSZ\r\n PROT\r\n EPSV\r\n MDTM\r\n UTF8\r\n"
        b" SIZE\r\n211 End\r\n"
    )
    assert session.toClient == b"211-Features:\r\n EPSV\r\n MDTM\r\n UTF8\r\n SIZE\r\n211 End\r\n"


def test_featHidesLowercaseAndCCC() -> None:
    session = started()
    session.clientSends(b"FEAT\r\n")
    session.serverSends(
        b"211-Extensions supported:\r\n auth ssl\r\n CCC\r\n REST STREAM\r\n211 END\r\n"
    )
    assert session.toClient == b"211-Extensions supported:\r\n REST STREAM\r\n211 END\r\n"


def test_featWithoutTLSUnchanged() -> None:
    session = started()
    session.clientSends(b"FEAT\r\n")
    reply = b"211-Features:\r\n EPRT\r\n EPSV\r\n211 End\r\n"
    session.serverSends(reply)
    assert session.toClient == reply


def test_featRefusedRelayed() -> None:
    session = started()
    session.clientSends(b"FEAT\r\n")
    session.serverSends(b"500 Unknown command\r\n")
    assert session.toClient == b"500 Unknown command\r\n"


def test_authTLSIs534AndNotForwarded() -> None:
    session = started()
    session.clientSends(b"AUTH TLS\r\n")
    assert session.toClient == b"534 TLS is not offered by this gateway\r\n"
    assert session.toServer == b""
    assert not session.closed


def test_pbszAndProtWithoutTLSAre503AndNotForwarded() -> None:
    session = started()
    session.clientSends(b"PBSZ 0\r\nPROT P\r\n")
    assert session.toClient == (
        b"503 PBSZ needs a TLS control connection (AUTH TLS first)\r\n"
        b"503 PROT needs a TLS control connection (AUTH TLS first)\r\n"
    )
    assert session.toServer == b""


def test_userWithAtForwardedInReverseMode() -> None:
    session = started()
    session.clientSends(b"USER alice@example.org\r\n")
    assert session.toServer == b"USER alice@example.org\r\n"


def test_badVerbIs500AndSessionContinues() -> None:
    session = started()
    session.clientSends(b"HELLO there\r\nNOOP\r\n")
    assert session.toClient == b"500 'HELLO' is not a command verb\r\n"
    assert session.toServer == b"NOOP\r\n"
    assert not session.closed


def test_clientEOFBeforeTheUpstreamConnectsEndsTheSession() -> None:
    session = attached()
    session.clientEOF()
    assert session.closed
    assert session.closeReason == "client closed the connection"
    assert session.upstreamConnects[0].deferred.called


def test_clientEOFBeforeTheGreetingEndsTheSession() -> None:
    session = attached()
    session.succeedUpstream()
    session.clientEOF()
    assert session.closed
    assert session.closeReason == "client closed the connection"
    assert not session.toServerEOF
