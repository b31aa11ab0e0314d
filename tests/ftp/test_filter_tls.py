"""FTP filter, FTPS: AUTH/PBSZ/PROT toward clients, TLS toward servers by policy, and the
TLS of data channels (resumption checked with real in-memory TLS, no sockets)."""

from __future__ import annotations

import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from OpenSSL import SSL
from twisted.logger import globalLogPublisher

from fwxtwisted.address import Address
from fwxtwisted.errors import ConfigError
from fwxtwisted.filters.ftp.filter import FTPCommandOptions, ftpFilter
from fwxtwisted.filters.ftp.options import FTPOptions, UpstreamTLS, parseFTPOptions
from fwxtwisted.filters.ftp.security import REUSE_REFUSAL
from fwxtwisted.interfaces import (
    TLS_UNFINISHED,
    ByteCounts,
    FirewallEvent,
    FirewallNotification,
    LegTLS,
    Side,
)
from fwxtwisted.net.tls import ResumingClient, sessionReused
from fwxtwisted.testing import DEFAULT_CLIENT, DEFAULT_UPSTREAM, FakeSession
from tests.peers import TlsFiles, makeTlsFiles

CLIENT_IP = DEFAULT_CLIENT.host  # 192.0.2.10
SERVER_IP = DEFAULT_UPSTREAM.host  # 203.0.113.50

LogEvent = dict[str, Any]


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    """A CA, a certificate for the fake upstream's IP (also the gateway's), a wrong one."""
    return makeTlsFiles(tmp_path_factory.mktemp("tls"), hosts=(SERVER_IP,))


@pytest.fixture
def logged() -> Iterator[list[LogEvent]]:
    """Every log event emitted during the test."""
    events: list[LogEvent] = []
    globalLogPublisher.addObserver(events.append)
    yield events
    globalLogPublisher.removeObserver(events.append)


def tlsOptions(tls: TlsFiles, **options: object) -> FTPOptions:
    """FTP options with the gateway's certificate and the test CA for the upstream."""
    table: dict[str, object] = {
        "tls_cert": str(tls.cert),
        "tls_key": str(tls.key),
        "upstream_ca": str(tls.caCert),
    }
    table.update(options)
    return parseFTPOptions(table)


def attached(options: FTPOptions, session: FakeSession | None = None) -> FakeSession:
    """A reverse-proxy session whose upstream connect is still pending."""
    session = session or FakeSession(options=options)
    session.attachFilter(ftpFilter)
    return session


def started(options: FTPOptions) -> FakeSession:
    """A reverse-proxy session past the server's greeting, with both transcripts cleared."""
    session = attached(options)
    session.succeedUpstream()
    session.serverSends(b"220 hi\r\n")
    assert session.toClient == b"220 hi\r\n"
    session.toClient = b""
    return session


def tlsOn(session: FakeSession, side: Side) -> list[LegTLS]:
    """The LegTLS of every startTLS on `side`, in order."""
    return [legTLS for s, legTLS in session.tlsStarted if s is side]


def handshakeUpstream(session: FakeSession) -> None:
    """Play the server leg's TLS handshake finishing: run its check (None: no real
    connection behind the fake)."""
    [legTLS] = tlsOn(session, Side.SERVER)
    assert legTLS.check is not None
    assert legTLS.check(None) is None


def secured(options: FTPOptions, prot: bytes = b"P") -> FakeSession:
    """AUTH TLS, PBSZ, PROT from the client, the server side secured as policy wants,
    then logged in; transcripts cleared."""
    session = started(options)
    session.clientSends(b"AUTH TLS\r\n")
    if session.toServer == b"AUTH TLS\r\n":
        session.serverSends(b"234 Proceed with negotiation.\r\n")
        handshakeUpstream(session)
    session.clientSends(b"PBSZ 0\r\nPROT " + prot + b"\r\n")
    session.clientSends(b"USER anonymous\r\n")
    session.serverSends(b"331 Please specify the password.\r\n")
    session.clientSends(b"PASS x\r\n")
    session.serverSends(b"230 Login successful.\r\n")
    assert session.toClient.endswith(b"230 Login successful.\r\n")
    assert not session.closed
    session.toClient = session.toServer = b""
    return session


def protectUpstream(session: FakeSession) -> None:
    """The gateway's own PBSZ 0 and PROT P before the first data command, answered."""
    assert session.toServer == b"PBSZ 0\r\n"
    session.serverSends(b"200 PBSZ set to 0.\r\n")
    assert session.toServer == b"PBSZ 0\r\nPROT P\r\n"
    session.serverSends(b"200 PROT now Private.\r\n")
    session.toServer = session.toServer.removeprefix(b"PBSZ 0\r\nPROT P\r\n")


# -- in-memory TLS, for the resumption checks ---------------------------------------------


class _TLSProtocolStandIn:
    """What Twisted's connection creators expect of the TLS protocol they serve."""

    factory = types.SimpleNamespace(wrappedFactory=None)

    def __init__(self) -> None:
        self.verificationFailure: object = None

    def failVerification(self, reason: object) -> None:
        self.verificationFailure = reason


def _pump(a: SSL.Connection, b: SSL.Connection) -> bool:
    moved = False
    for source, target in ((a, b), (b, a)):
        try:
            data = source.bio_read(1 << 16)
        except SSL.WantReadError:
            continue
        target.bio_write(data)
        moved = True
    return moved


def handshake(client: SSL.Connection, server: SSL.Connection) -> None:
    """Run a TLS handshake between two memory-BIO connections, session tickets included
    (TLS 1.3 sends them after the handshake)."""
    client.set_connect_state()
    server.set_accept_state()
    for _ in range(50):
        for connection in (client, server):
            try:
                connection.do_handshake()
            except SSL.WantReadError:
                pass
            try:
                connection.recv(1)
            except (SSL.WantReadError, SSL.ZeroReturnError):
                pass
        if not _pump(client, server):
            return
    raise AssertionError("the in-memory TLS handshake did not settle")


def plainTLSClient(context: SSL.Context) -> SSL.Connection:
    """An FTP client's TLS connection that checks nothing (the gateway is its server);
    its connections share `context`, as resumption requires."""
    return SSL.Connection(context, None)


def tlsServer(options: Any) -> SSL.Connection:
    """A server-side connection from a Twisted options object."""
    return SSL.Connection(options.getContext(), None)


def upstreamServer(tls: TlsFiles) -> SSL.Context:
    """The TLS context of a stand-in FTP server with the certificate for SERVER_IP."""
    context = SSL.Context(SSL.TLS_SERVER_METHOD)
    context.use_certificate_file(str(tls.cert))
    context.use_privatekey_file(str(tls.key))
    return context


# -- AUTH, PBSZ, PROT toward the client ---------------------------------------------------


@pytest.mark.parametrize("mechanism", [b"TLS", b"SSL", b"tls"])
def test_authRepliesThenStartsTLSAsServerOnTheClientSide(tls: TlsFiles, mechanism: bytes) -> None:
    options = tlsOptions(tls, upstream_tls="never")
    session = started(options)
    seenAtStart: list[bytes] = []
    record = session.startTLS

    def startTLS(side: Side, legTLS: LegTLS) -> None:
        seenAtStart.append(session.toClient)
        record(side, legTLS)

    session.startTLS = startTLS  # type: ignore[method-assign]
    session.clientSends(b"AUTH " + mechanism + b"\r\n")
    reply = b"234 AUTH " + mechanism.upper() + b" successful\r\n"
    assert session.toClient == reply
    # The 234 went out in clear before TLS started on that leg.
    assert seenAtStart == [reply]
    [(side, legTLS)] = session.tlsStarted
    assert side is Side.CLIENT
    assert legTLS.asServer is True
    assert legTLS.creator is options.serverTLSOptions
    assert legTLS.check is None
    assert session.toServer == b""


def test_authWithoutAGatewayCertificateIs534(tls: TlsFiles) -> None:
    session = started(parseFTPOptions({}))
    session.clientSends(b"AUTH TLS\r\n")
    assert session.toClient == b"534 TLS is not offered by this gateway\r\n"
    assert session.tlsStarted == []
    assert session.toServer == b""
    assert not session.closed


def test_authTwiceIs503(tls: TlsFiles) -> None:
    session = started(tlsOptions(tls, upstream_tls="never"))
    session.clientSends(b"AUTH TLS\r\n")
    # Under TLS now (a second AUTH in the same read as the first would be dropped).
    session.clientSends(b"AUTH TLS\r\n")
    assert session.toClient == b"234 AUTH TLS successful\r\n503 already using TLS\r\n"
    assert len(session.tlsStarted) == 1


def test_authOnAnImplicitTLSListenerIs503(tls: TlsFiles) -> None:
    session = FakeSession(options=tlsOptions(tls, upstream_tls="never"))
    session.tlsSides.add(Side.CLIENT)
    attached(session.options, session)  # type: ignore[arg-type]
    session.succeedUpstream()
    session.serverSends(b"220 hi\r\n")
    session.clientSends(b"AUTH TLS\r\nPBSZ 0\r\nPROT P\r\n")
    assert session.toClient == (
        b"220 hi\r\n503 already using TLS\r\n200 PBSZ=0\r\n200 PROT now Private\r\n"
    )
    assert session.tlsStarted == []


def test_authUnknownMechanismIs504(tls: TlsFiles) -> None:
    session = started(tlsOptions(tls))
    session.clientSends(b"AUTH XYZ\r\n")
    assert session.toClient == b"504 AUTH XYZ not supported; use AUTH TLS\r\n"
    assert session.tlsStarted == []
    assert session.toServer == b""


def test_pbszAndProtBeforeAuthAre503(tls: TlsFiles) -> None:
    session = started(tlsOptions(tls))
    session.clientSends(b"PBSZ 0\r\nPROT P\r\n")
    assert session.toClient == (
        b"503 PBSZ needs a TLS control connection (AUTH TLS first)\r\n"
        b"503 PROT needs a TLS control connection (AUTH TLS first)\r\n"
    )
    assert session.toServer == b""


def test_protLevels(tls: TlsFiles) -> None:
    session = started(tlsOptions(tls, upstream_tls="never"))
    session.clientSends(b"AUTH TLS\r\n")
    session.toClient = b""
    session.clientSends(b"PBSZ 0\r\nPROT P\r\nPROT C\r\nPROT S\r\nPROT E\r\n")
    assert session.toClient == (
        b"200 PBSZ=0\r\n"
        b"200 PROT now Private\r\n"
        b"200 PROT now Clear\r\n"
        b"536 PROT S not supported; use P or C\r\n"
        b"536 PROT E not supported; use P or C\r\n"
    )
    assert session.toServer == b""


@pytest.mark.parametrize("verb", [b"CCC", b"ADAT x", b"MIC x", b"CONF x", b"ENC x"])
def test_cccAndKinAre502AndNotForwarded(tls: TlsFiles, verb: bytes) -> None:
    session = started(tlsOptions(tls, upstream_tls="never"))
    session.clientSends(b"AUTH TLS\r\n")
    session.toClient = b""
    session.clientSends(verb + b"\r\n")
    assert session.toClient == b"502 " + verb.split()[0] + b" not implemented\r\n"
    assert session.toServer == b""
    assert not session.closed


# -- TLS toward the server, by policy ------------------------------------------------------


def test_autoClientAuthSecuresTheServerBeforeTheNextCommand(tls: TlsFiles) -> None:
    session = started(tlsOptions(tls))
    session.clientSends(b"AUTH TLS\r\n")
    assert session.toClient == b"234 AUTH TLS successful\r\n"
    assert session.toServer == b"AUTH TLS\r\n"
    assert tlsOn(session, Side.SERVER) == []
    session.clientSends(b"USER anonymous\r\n")
    session.serverSends(b"234 Proceed with negotiation.\r\n")
    # The server's 234 is the gateway's business, not the client's.
    assert session.toClient == b"234 AUTH TLS successful\r\n"
    [legTLS] = tlsOn(session, Side.SERVER)
    assert legTLS.asServer is False
    # The handshake has not finished: USER waits.
    assert session.toServer == b"AUTH TLS\r\n"
    handshakeUpstream(session)
    assert session.toServer == b"AUTH TLS\r\nUSER anonymous\r\n"


def test_autoWithoutClientTLSLeavesTheServerInClear(tls: TlsFiles) -> None:
    session = started(tlsOptions(tls))
    session.clientSends(b"USER anonymous\r\n")
    assert session.toServer == b"USER anonymous\r\n"
    assert session.tlsStarted == []


def test_autoWithAnImplicitTLSClientSecuresTheServerAfterItsGreeting(tls: TlsFiles) -> None:
    session = FakeSession(options=tlsOptions(tls))
    session.tlsSides.add(Side.CLIENT)
    attached(session.options, session)  # type: ignore[arg-type]
    session.clientSends(b"USER anonymous\r\n")
    session.succeedUpstream()
    session.serverSends(b"220 hi\r\n")
    assert session.toServer == b"AUTH TLS\r\n"
    session.serverSends(b"234 Proceed.\r\n")
    handshakeUpstream(session)
    assert session.toServer == b"AUTH TLS\r\nUSER anonymous\r\n"
    assert session.toClient == b"220 hi\r\n"


def test_alwaysSendsAuthRightAfterTheGreeting(tls: TlsFiles) -> None:
    session = attached(tlsOptions(tls, upstream_tls="always"))
    session.clientSends(b"USER anonymous\r\n")
    session.succeedUpstream()
    assert session.toServer == b""
    session.serverSends(b"220 hi\r\n")
    assert session.toClient == b"220 hi\r\n"
    assert session.toServer == b"AUTH TLS\r\n"
    session.serverSends(b"234 Proceed.\r\n")
    [legTLS] = tlsOn(session, Side.SERVER)
    assert legTLS.asServer is False
    assert session.toServer == b"AUTH TLS\r\n"
    handshakeUpstream(session)
    assert session.toServer == b"AUTH TLS\r\nUSER anonymous\r\n"
    # The client itself stays in clear.
    assert tlsOn(session, Side.CLIENT) == []


def test_alwaysWithoutAGatewayCertificate(tls: TlsFiles) -> None:
    """A plain-only gateway in front of an FTPS-only server."""
    session = attached(parseFTPOptions({"upstream_tls": "always", "upstream_ca": str(tls.caCert)}))
    session.succeedUpstream()
    session.serverSends(b"220 hi\r\n")
    assert session.toServer == b"AUTH TLS\r\n"


def test_neverKeepsTheServerInClearWhenTheClientUsesTLS(tls: TlsFiles) -> None:
    session = started(tlsOptions(tls, upstream_tls="never"))
    session.clientSends(b"AUTH TLS\r\n")
    session.clientSends(b"PBSZ 0\r\nPROT P\r\nUSER anonymous\r\n")
    assert session.toServer == b"USER anonymous\r\n"
    assert tlsOn(session, Side.SERVER) == []
    session.serverSends(b"331 ok\r\n")
    session.clientSends(b"PASS x\r\n")
    session.serverSends(b"230 ok\r\n")
    session.clientSends(b"PASV\r\n")
    # No PBSZ/PROT toward a clear server; the client's side is still protected.
    assert session.toServer == b"USER anonymous\r\nPASS x\r\nPASV\r\n"
    session.serverSends(b"227 Entering Passive Mode (203,0,113,50,156,64).\r\n")
    [call] = session.redirectCalls
    assert call.tls is not None
    assert set(call.tls) == {Side.CLIENT}


@pytest.mark.parametrize(
    "refusal", [b"500 AUTH not understood.\r\n", b"530 Please login with USER and PASS.\r\n"]
)
def test_alwaysServerRefusingAuthGets421AndNothingMore(tls: TlsFiles, refusal: bytes) -> None:
    session = attached(tlsOptions(tls, upstream_tls="always"))
    session.clientSends(b"USER anonymous\r\nPASS secret\r\n")
    session.succeedUpstream()
    session.serverSends(b"220 hi\r\n")
    session.serverSends(refusal)
    last = refusal.decode().strip()
    assert session.toClient == (
        b"220 hi\r\n"
        b"421 service not available: the server refused AUTH TLS: " + last.encode() + b"\r\n"
    )
    assert session.toServer == b"AUTH TLS\r\n"
    assert session.closed
    assert session.tlsStarted == []


def test_autoServerRefusingAuthGets421AndNothingMore(tls: TlsFiles, logged: list[LogEvent]) -> None:
    session = started(tlsOptions(tls))
    session.clientSends(b"AUTH TLS\r\nUSER anonymous\r\nPASS secret\r\n")
    assert session.toServer == b"AUTH TLS\r\n"
    session.serverSends(b"500 AUTH not understood.\r\n")
    assert session.toClient == (
        b"234 AUTH TLS successful\r\n"
        b"421 service not available: the server refused AUTH TLS: 500 AUTH not understood.\r\n"
    )
    assert session.toServer == b"AUTH TLS\r\n"
    assert session.closed
    assert tlsOn(session, Side.SERVER) == []
    assert not [event for event in logged if event.get("log_failure") is not None]


def test_upstreamHandshakeFailureGets421AndNoCredentials(tls: TlsFiles) -> None:
    session = started(tlsOptions(tls))
    session.clientSends(b"AUTH TLS\r\nUSER anonymous\r\nPASS secret\r\n")
    session.serverSends(b"234 Proceed.\r\n")
    # The server leg's handshake fails (e.g. its certificate does not verify): the leg
    # closes and the check never runs.
    session.fireEvent(
        FirewallNotification(
            FirewallEvent.LEG_CLOSED,
            None,
            side=Side.SERVER,
            reason="TLS error: certificate verify failed",
        )
    )
    assert session.toClient == (
        b"234 AUTH TLS successful\r\n"
        b"421 connection to the server lost: TLS error: certificate verify failed\r\n"
    )
    assert session.toServer == b"AUTH TLS\r\n"


# -- require_tls ---------------------------------------------------------------------------


def test_requireTLSRefusesLoginBeforeAuth(tls: TlsFiles) -> None:
    session = started(tlsOptions(tls, require_tls=True, upstream_tls="never"))
    session.clientSends(b"USER anonymous\r\nPASS secret\r\nSYST\r\n")
    assert session.toClient == (
        b"530 TLS required: use AUTH TLS before logging in\r\n"
        b"530 TLS required: use AUTH TLS before logging in\r\n"
    )
    # Only what is not a credential goes on.
    assert session.toServer == b"SYST\r\n"
    session.serverSends(b"215 UNIX Type: L8\r\n")
    session.toClient = b""
    session.clientSends(b"AUTH TLS\r\n")
    assert session.toClient == b"234 AUTH TLS successful\r\n"
    session.clientSends(b"USER anonymous\r\n")
    assert session.toServer == b"SYST\r\nUSER anonymous\r\n"


def test_requireTLSAcceptsAnImplicitTLSClient(tls: TlsFiles) -> None:
    session = FakeSession(options=tlsOptions(tls, require_tls=True, upstream_tls="never"))
    session.tlsSides.add(Side.CLIENT)
    attached(session.options, session)  # type: ignore[arg-type]
    session.succeedUpstream()
    session.serverSends(b"220 hi\r\n")
    session.clientSends(b"USER anonymous\r\n")
    assert session.toServer == b"USER anonymous\r\n"


# -- data channels -------------------------------------------------------------------------


def test_firstDataCommandProtectsTheServerSideFirstAndHidesIt(tls: TlsFiles) -> None:
    session = secured(tlsOptions(tls))
    session.clientSends(b"PASV\r\n")
    assert session.toServer == b"PBSZ 0\r\n"
    session.serverSends(b"200 PBSZ set to 0.\r\n")
    assert session.toServer == b"PBSZ 0\r\nPROT P\r\n"
    assert session.redirectCalls == []
    session.serverSends(b"200 PROT now Private.\r\n")
    assert session.toServer == b"PBSZ 0\r\nPROT P\r\nPASV\r\n"
    assert session.toClient == b""
    session.serverSends(b"227 Entering Passive Mode (203,0,113,50,156,64).\r\n")
    session.redirectCalls[0].grant(40000)
    assert session.toClient == b"227 Entering Passive Mode (198,51,100,1,156,64).\r\n"
    # Once per session.
    session.toServer = b""
    session.clientSends(b"EPSV\r\n")
    assert session.toServer == b"EPSV\r\n"


def test_serverRefusingProtGets421(tls: TlsFiles) -> None:
    session = secured(tlsOptions(tls))
    session.clientSends(b"PASV\r\nLIST\r\n")
    session.serverSends(b"200 PBSZ set to 0.\r\n")
    session.serverSends(b"534 Policy requires clear data.\r\n")
    assert session.toClient == (
        b"421 service not available: the server refused PROT P: 534 Policy requires clear data.\r\n"
    )
    assert session.toServer == b"PBSZ 0\r\nPROT P\r\n"
    assert session.redirectCalls == []
    assert session.closed


def test_passiveDataTLS(tls: TlsFiles) -> None:
    options = tlsOptions(tls)
    session = secured(options)
    session.clientSends(b"PASV\r\n")
    protectUpstream(session)
    session.serverSends(b"227 Entering Passive Mode (203,0,113,50,156,64).\r\n")
    [call] = session.redirectCalls
    assert call.tls is not None
    client, server = call.tls[Side.CLIENT], call.tls[Side.SERVER]
    assert client.asServer is True
    assert client.creator is options.serverTLSOptions
    assert client.check is None
    assert server.asServer is False
    assert isinstance(server.creator, ResumingClient)
    assert server.check is None


def test_clientDataLegsUseTheControlConnectionsContext(tls: TlsFiles) -> None:
    """After AUTH TLS the control connection's context is tls_cert's own: the data
    connection is served from it, so the client can resume its session there."""
    options = tlsOptions(tls)
    session = secured(options)
    session.tlsConnections[Side.CLIENT] = tlsServer(options.serverTLSOptions)
    session.clientSends(b"PASV\r\n")
    protectUpstream(session)
    session.serverSends(b"227 Entering Passive Mode (203,0,113,50,156,64).\r\n")
    creator = session.redirectCalls[0].tls[Side.CLIENT].creator  # type: ignore[index]
    assert creator.getContext() is options.serverTLSOptions.getContext()


def test_implicitTLSWithoutACertificateServesDataFromTheListenersContext(
    tls: TlsFiles,
) -> None:
    """An implicit (ssl:) listener needs no tls_cert: PROT P data connections are served
    with the listener's own context, that of the client's control connection."""
    listener = SSL.Context(SSL.TLS_SERVER_METHOD)
    listener.use_certificate_file(str(tls.cert))
    listener.use_privatekey_file(str(tls.key))
    options = parseFTPOptions({"upstream_tls": "never"})
    session = FakeSession(options=options)
    session.tlsSides.add(Side.CLIENT)
    session.tlsConnections[Side.CLIENT] = SSL.Connection(listener, None)
    attached(options, session)
    session.succeedUpstream()
    session.serverSends(b"220 hi\r\n")
    session.clientSends(b"PBSZ 0\r\nPROT P\r\nUSER anonymous\r\n")
    session.serverSends(b"230 ok\r\n")
    session.clientSends(b"EPSV\r\n")
    session.serverSends(b"229 Entering Extended Passive Mode (|||40000|)\r\n")
    [call] = session.redirectCalls
    assert call.tls is not None
    legTLS = call.tls[Side.CLIENT]
    assert legTLS.asServer is True
    assert legTLS.creator.getContext() is listener  # type: ignore[attr-defined]
    assert session.tlsStarted == []


def test_clientProtClearStillProtectsTheServerSide(tls: TlsFiles) -> None:
    session = secured(tlsOptions(tls), prot=b"C")
    session.clientSends(b"EPSV\r\n")
    protectUpstream(session)
    session.serverSends(b"229 Entering Extended Passive Mode (|||40000|)\r\n")
    [call] = session.redirectCalls
    assert call.tls is not None
    assert set(call.tls) == {Side.SERVER}
    assert call.tls[Side.SERVER].asServer is False


def test_activeDataTLSSwapsTheSides(tls: TlsFiles) -> None:
    """PORT: the redirect accepts the FTP server and connects to the FTP client; the
    FTP client stays the TLS client, the FTP server stays the TLS server."""
    options = tlsOptions(tls)
    session = secured(options)
    session.clientSends(b"PORT 192,0,2,10,200,10\r\n")
    protectUpstream(session)
    [call] = session.redirectCalls
    assert call.expectedPeer == SERVER_IP
    assert call.connectAddresses == (Address(CLIENT_IP, 51210),)
    assert call.tls is not None
    towardServer, towardClient = call.tls[Side.CLIENT], call.tls[Side.SERVER]
    assert towardServer.asServer is False
    assert isinstance(towardServer.creator, ResumingClient)
    assert towardClient.asServer is True
    assert towardClient.creator is options.serverTLSOptions


@pytest.mark.parametrize("policy", ["passive", "active"])
def test_translatedDataTLSKeepsTheClientOnTheClientSide(tls: TlsFiles, policy: str) -> None:
    """A join's CLIENT side is always the FTP client's leg."""
    session = secured(tlsOptions(tls, data_policy=policy))
    if policy == "passive":
        session.clientSends(b"PORT 192,0,2,10,200,10\r\n")
        protectUpstream(session)
        session.serverSends(b"227 Entering Passive Mode (203,0,113,50,156,64).\r\n")
    else:
        session.clientSends(b"PASV\r\n")
        protectUpstream(session)
    [join] = session.joinCalls
    assert join.tls[Side.CLIENT].asServer is True
    assert join.tls[Side.SERVER].asServer is False
    assert isinstance(join.tls[Side.SERVER].creator, ResumingClient)


def test_requireTLSReuseChecksTheClientSide(tls: TlsFiles) -> None:
    session = secured(tlsOptions(tls, require_tls_reuse=True))
    session.clientSends(b"PASV\r\n")
    protectUpstream(session)
    session.serverSends(b"227 Entering Passive Mode (203,0,113,50,156,64).\r\n")
    [call] = session.redirectCalls
    assert call.tls is not None
    assert call.tls[Side.CLIENT].check is not None
    assert call.tls[Side.SERVER].check is None


def test_requireTLSReuseChecksTheClientSideInActiveMode(tls: TlsFiles) -> None:
    session = secured(tlsOptions(tls, require_tls_reuse=True))
    session.clientSends(b"EPRT |1|192.0.2.10|51210|\r\n")
    protectUpstream(session)
    [call] = session.redirectCalls
    assert call.tls is not None
    assert call.tls[Side.SERVER].check is not None  # the FTP client's leg
    assert call.tls[Side.CLIENT].check is None


def test_failingReuseCheckTurnsTheTransferReplyInto522(
    tls: TlsFiles, logged: list[LogEvent]
) -> None:
    session = secured(tlsOptions(tls, require_tls_reuse=True))
    session.clientSends(b"PASV\r\n")
    protectUpstream(session)
    session.serverSends(b"227 Entering Passive Mode (203,0,113,50,156,64).\r\n")
    redirection = session.redirectCalls[0].grant(40000)
    check = session.redirectCalls[0].tls[Side.CLIENT].check  # type: ignore[index]
    assert check is not None
    session.toClient = b""
    session.clientSends(b"RETR big.bin\r\n")
    assert session.toServer == b"PASV\r\nRETR big.bin\r\n"
    # The client's data connection did not resume: the relay aborts it with this reason.
    assert check(None) == REUSE_REFUSAL
    action = redirection.actions[0]
    session.fireEvent(FirewallNotification(FirewallEvent.CONNECTION_TERMINATING, action))
    session.serverSends(b"150 Opening BINARY mode data connection.\r\n")
    session.serverSends(b"426 Failure writing network stream.\r\n")
    assert session.toClient == (
        b"150 Opening BINARY mode data connection.\r\n"
        b"522 SSL connection failed: session reuse required\r\n"
    )
    assert any("did not resume the TLS session" in str(e.get("log_format")) for e in logged)
    # Only that transfer: the next one gets the server's reply as it is.
    session.toClient = b""
    session.clientSends(b"LIST\r\n")
    session.serverSends(b"425 Use PORT or PASV first.\r\n")
    assert session.toClient == b"425 Use PORT or PASV first.\r\n"


def test_reuseCheckWithRealTLS(tls: TlsFiles) -> None:
    """The check passes a data connection that resumed the client's control session,
    and refuses one that did not (TLS 1.3, session tickets)."""
    options = tlsOptions(tls, require_tls_reuse=True)
    session = secured(options)
    session.clientSends(b"PASV\r\n")
    protectUpstream(session)
    session.serverSends(b"227 Entering Passive Mode (203,0,113,50,156,64).\r\n")
    legTLS = session.redirectCalls[0].tls[Side.CLIENT]  # type: ignore[index]
    assert legTLS.check is not None

    ftpClient = SSL.Context(SSL.TLS_CLIENT_METHOD)
    control, controlServer = plainTLSClient(ftpClient), tlsServer(legTLS.creator)
    handshake(control, controlServer)
    resumed, resumedServer = plainTLSClient(ftpClient), tlsServer(legTLS.creator)
    resumed.set_session(control.get_session())
    handshake(resumed, resumedServer)
    assert legTLS.check(resumedServer) is None

    fresh, freshServer = plainTLSClient(ftpClient), tlsServer(legTLS.creator)
    handshake(fresh, freshServer)
    assert legTLS.check(freshServer) == REUSE_REFUSAL


def test_serverSideDataLegResumesTheControlSession(tls: TlsFiles) -> None:
    """The data leg toward the server offers the session of the gateway's TLS control
    connection to that server, from the same context (as vsftpd requires)."""
    session = secured(tlsOptions(tls))
    [controlTLS] = tlsOn(session, Side.SERVER)
    upstream = upstreamServer(tls)
    control = controlTLS.creator.clientConnectionForTLS(_TLSProtocolStandIn())  # type: ignore[attr-defined]
    handshake(control, SSL.Connection(upstream, None))
    session.tlsConnections[Side.SERVER] = control

    session.clientSends(b"PASV\r\n")
    protectUpstream(session)
    session.serverSends(b"227 Entering Passive Mode (203,0,113,50,156,64).\r\n")
    creator = session.redirectCalls[0].tls[Side.SERVER].creator  # type: ignore[index]
    data = creator.clientConnectionForTLS(_TLSProtocolStandIn())
    dataServer = SSL.Connection(upstream, None)
    handshake(data, dataServer)
    assert sessionReused(data)
    assert sessionReused(dataServer)


def test_upstreamCertificateIsVerifiedAgainstTheUpstreamName(tls: TlsFiles) -> None:
    """The control connection's creator checks the server's certificate: the wrong-name
    certificate from the same CA fails the handshake."""
    session = started(tlsOptions(tls))
    session.clientSends(b"AUTH TLS\r\n")
    session.serverSends(b"234 Proceed.\r\n")
    [controlTLS] = tlsOn(session, Side.SERVER)
    wrong = SSL.Context(SSL.TLS_SERVER_METHOD)
    wrong.use_certificate_file(str(tls.wrongCert))
    wrong.use_privatekey_file(str(tls.wrongKey))
    standIn = _TLSProtocolStandIn()
    connection = controlTLS.creator.clientConnectionForTLS(standIn)  # type: ignore[attr-defined]
    with pytest.raises(SSL.Error):
        handshake(connection, SSL.Connection(wrong, None))
    assert standIn.verificationFailure is not None


# -- FEAT ----------------------------------------------------------------------------------

_SERVER_FEAT = b"211-Features:\r\n AUTH TLS\r\n PBSZ\r\n PROT\r\n EPSV\r\n UTF8\r\n211 End\r\n"


def test_featAdvertisesTLSWhenTheGatewayHasACertificate(tls: TlsFiles) -> None:
    session = started(tlsOptions(tls))
    session.clientSends(b"FEAT\r\n")
    session.serverSends(_SERVER_FEAT)
    assert session.toClient == (
        b"211-Features:\r\n EPSV\r\n UTF8\r\n AUTH TLS\r\n PBSZ\r\n PROT\r\n211 End\r\n"
    )


def test_featAdvertisesNoTLSWithoutACertificate(tls: TlsFiles) -> None:
    session = started(parseFTPOptions({"upstream_ca": str(tls.caCert)}))
    session.clientSends(b"FEAT\r\n")
    session.serverSends(_SERVER_FEAT)
    assert session.toClient == b"211-Features:\r\n EPSV\r\n UTF8\r\n211 End\r\n"


# -- the server's control connection lost --------------------------------------------------


def _serverLegClosed(reason: str = "TLS error: certificate verify failed") -> FirewallNotification:
    return FirewallNotification(FirewallEvent.LEG_CLOSED, None, side=Side.SERVER, reason=reason)


def test_serverLegClosedGivesThe421WithTheReason(tls: TlsFiles) -> None:
    session = secured(tlsOptions(tls))
    session.fireEvent(_serverLegClosed())
    assert session.toClient == (
        b"421 connection to the server lost: TLS error: certificate verify failed\r\n"
    )


def test_serverLegClosedAfterQuitIsQuiet(tls: TlsFiles) -> None:
    session = secured(tlsOptions(tls))
    session.clientSends(b"QUIT\r\n")
    session.serverSends(b"221 Goodbye.\r\n")
    session.fireEvent(_serverLegClosed("closed"))
    assert session.toClient == b"221 Goodbye.\r\n"


def test_serverLegClosedBeforeTheQuitReplyIsQuiet(tls: TlsFiles) -> None:
    session = secured(tlsOptions(tls))
    session.clientSends(b"QUIT\r\n")
    session.fireEvent(_serverLegClosed("closed"))
    assert session.toClient == b""


def test_clientLegClosedIsQuiet(tls: TlsFiles) -> None:
    session = secured(tlsOptions(tls))
    session.fireEvent(
        FirewallNotification(
            FirewallEvent.LEG_CLOSED, None, side=Side.CLIENT, reason="TLS error: bad record"
        )
    )
    assert session.toClient == b""


def test_dataConnectionEventsAreNotThePrimaryLeg(tls: TlsFiles) -> None:
    session = secured(tlsOptions(tls))
    session.clientSends(b"PASV\r\n")
    protectUpstream(session)
    session.serverSends(b"227 Entering Passive Mode (203,0,113,50,156,64).\r\n")
    action = session.redirectCalls[0].grant(40000).actions[0]
    session.toClient = b""
    session.fireEvent(
        FirewallNotification(FirewallEvent.CONNECTION_TERMINATING, action, counts=ByteCounts(0, 10))
    )
    assert session.toClient == b""
    assert not session.closed


# -- options -------------------------------------------------------------------------------


def _configError(table: dict[str, object]) -> str:
    with pytest.raises(ConfigError) as raised:
        parseFTPOptions(table)
    return str(raised.value)


def test_optionsTLSDefaults(tls: TlsFiles) -> None:
    options = parseFTPOptions({})
    assert options.serverTLS is None
    assert options.serverTLSOptions is None
    assert options.upstreamTLS is UpstreamTLS.AUTO
    assert not options.requireTLS and not options.requireTLSReuse
    options = tlsOptions(tls, upstream_tls="always", require_tls=True, require_tls_reuse=True)
    assert options.serverTLSOptions is not None
    assert options.upstreamTLS is UpstreamTLS.ALWAYS
    assert options.requireTLS and options.requireTLSReuse


def test_optionsCertWithoutKey(tls: TlsFiles) -> None:
    assert _configError({"tls_cert": str(tls.cert)}).startswith("tls_key: ")
    assert _configError({"tls_key": str(tls.key)}).startswith("tls_key: ")


@pytest.mark.parametrize("key", ["require_tls", "require_tls_reuse", "tls_chain", "client_ca"])
def test_optionsNeedingACertificate(tls: TlsFiles, key: str) -> None:
    value: object = True if key.startswith("require") else str(tls.caCert)
    assert _configError({key: value}).startswith(f"{key}: ")


@pytest.mark.parametrize("value", ["sometimes", "", 1, True])
def test_optionsBadUpstreamTLS(value: object) -> None:
    assert _configError({"upstream_tls": value}) == (
        "upstream_tls: must be one of auto, always, never"
    )


@pytest.mark.parametrize("key", ["tls_cert", "tls_key", "tls_chain", "client_ca", "upstream_ca"])
def test_optionsUnreadableFile(tls: TlsFiles, tmp_path: Path, key: str) -> None:
    table: dict[str, object] = {"tls_cert": str(tls.cert), "tls_key": str(tls.key)}
    missing = tmp_path / "missing.pem"
    table[key] = str(missing)
    message = _configError(table)
    assert message.startswith(f"{key}: cannot read {missing}"), message


def test_optionsNotACertificate(tls: TlsFiles) -> None:
    message = _configError({"tls_cert": str(tls.key), "tls_key": str(tls.key)})
    assert message.startswith("tls_cert: "), message


def test_optionsKeyNotMatchingTheCertificate(tls: TlsFiles) -> None:
    message = _configError({"tls_cert": str(tls.cert), "tls_key": str(tls.wrongKey)})
    assert message.startswith("tls_key: does not match"), message


def test_optionsInsecureAndACAContradict(tls: TlsFiles) -> None:
    message = _configError({"upstream_insecure": True, "upstream_ca": str(tls.caCert)})
    assert message.startswith("upstream_insecure: "), message


@pytest.mark.parametrize("key", ["require_tls", "require_tls_reuse", "upstream_insecure"])
def test_optionsFlagsAreBooleans(tls: TlsFiles, key: str) -> None:
    table: dict[str, object] = {"tls_cert": str(tls.cert), "tls_key": str(tls.key), key: "yes"}
    assert _configError(table) == f"{key}: must be true or false"


def test_upstreamInsecureWarnsAtStartAndPerSession(logged: list[LogEvent]) -> None:
    options = parseFTPOptions({"upstream_insecure": True, "upstream_tls": "always"})
    warnings = [str(e.get("log_format")) for e in logged]
    assert any("upstream_insecure" in w and "NOT checked" in w for w in warnings), warnings
    del logged[:]
    session = attached(options)
    session.succeedUpstream()
    session.serverSends(b"220 hi\r\n")
    session.serverSends(b"234 Proceed.\r\n")
    perSession = [e for e in logged if "is not checked (upstream_insecure)" in str(e["log_format"])]
    assert len(perSession) == 1
    assert perSession[0]["server"] == SERVER_IP
    assert perSession[0]["session"] == session.sessionId


def test_upstreamInsecureWithNeverDoesNotWarn(logged: list[LogEvent]) -> None:
    parseFTPOptions({"upstream_insecure": True, "upstream_tls": "never"})
    assert not [e for e in logged if "upstream_insecure" in str(e.get("log_format"))]


def test_commandLineTLSOptions(tls: TlsFiles) -> None:
    command = FTPCommandOptions()
    command.parseOptions(
        [
            "--listen",
            "tcp:2121",
            "--upstream",
            "127.0.0.1:21",
            "--tls-cert",
            str(tls.cert),
            "--tls-key",
            str(tls.key),
            "--tls-chain",
            str(tls.caCert),
            "--require-tls",
            "--require-tls-reuse",
            "--client-ca",
            str(tls.caCert),
            "--upstream-tls",
            "always",
            "--upstream-ca",
            str(tls.caCert),
        ]
    )
    table = command.filterOptions()
    assert table["tls_cert"] == str(tls.cert)
    assert table["tls_key"] == str(tls.key)
    assert table["tls_chain"] == str(tls.caCert)
    assert table["client_ca"] == str(tls.caCert)
    assert table["upstream_ca"] == str(tls.caCert)
    assert table["upstream_tls"] == "always"
    assert table["require_tls"] is True and table["require_tls_reuse"] is True
    options = parseFTPOptions(table, hasUpstream=True)
    assert options.requireTLS and options.requireTLSReuse
    assert options.upstreamTLS is UpstreamTLS.ALWAYS
    assert options.serverTLS is not None and options.serverTLS.clientCAFile == str(tls.caCert)


def test_commandLineInsecure() -> None:
    command = FTPCommandOptions()
    command.parseOptions(
        ["--listen", "tcp:2121", "--upstream", "127.0.0.1:21", "--upstream-insecure"]
    )
    table = command.filterOptions()
    assert table["upstream_insecure"] is True
    assert table["upstream_tls"] == "auto"
    assert parseFTPOptions(table, hasUpstream=True).upstreamTLSSettings.insecure


def test_dataConnectionLeftBeforeItsTLSHandshakeTurnsTheTransferReplyInto426(
    tls: TlsFiles,
) -> None:
    """A PROT P upload whose data connection the client closed before its TLS
    handshake ended: the server saw a clean close of 0 bytes and says 226; the client
    is told the transfer failed."""
    session = secured(tlsOptions(tls))
    session.clientSends(b"PASV\r\n")
    protectUpstream(session)
    session.serverSends(b"227 Entering Passive Mode (203,0,113,50,156,64).\r\n")
    redirection = session.redirectCalls[0].grant(40000)
    session.toClient = b""
    session.clientSends(b"STOR up.bin\r\n")
    action = redirection.actions[0]
    session.fireEvent(FirewallNotification(FirewallEvent.ESTABLISHED_CONNECTION, action))
    session.serverSends(b"150 Ok to send data.\r\n")
    session.fireEvent(
        FirewallNotification(
            FirewallEvent.CONNECTION_TERMINATING,
            action,
            reason=f"client {TLS_UNFINISHED}",
        )
    )
    session.serverSends(b"226 Transfer complete.\r\n")
    assert session.toClient == (
        b"150 Ok to send data.\r\n"
        b"426 Connection closed before its TLS handshake ended; transfer aborted.\r\n"
    )
    # Only that transfer: the next one gets the server's reply as it is.
    session.toClient = b""
    session.clientSends(b"PASV\r\n")
    session.serverSends(b"227 Entering Passive Mode (203,0,113,50,156,65).\r\n")
    session.redirectCalls[1].grant(40001)
    session.clientSends(b"LIST\r\n")
    session.serverSends(b"150 Here comes the directory listing.\r\n226 Directory send OK.\r\n")
    assert session.toClient.endswith(b"226 Directory send OK.\r\n")


def test_aServerErrorAfterAnUnfinishedHandshakeIsLeftAsItIs(tls: TlsFiles) -> None:
    session = secured(tlsOptions(tls))
    session.clientSends(b"PASV\r\n")
    protectUpstream(session)
    session.serverSends(b"227 Entering Passive Mode (203,0,113,50,156,64).\r\n")
    action = session.redirectCalls[0].grant(40000).actions[0]
    session.toClient = b""
    session.clientSends(b"RETR big.bin\r\n")
    session.fireEvent(
        FirewallNotification(
            FirewallEvent.CONNECTION_TERMINATING, action, reason=f"client {TLS_UNFINISHED}"
        )
    )
    session.serverSends(b"425 Failed to establish connection.\r\n")
    assert session.toClient == b"425 Failed to establish connection.\r\n"
