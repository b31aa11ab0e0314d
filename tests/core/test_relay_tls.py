"""TLS on relayed connections, for real: a leg refused by its TLS check gets nothing and
the other peer's own handshake is not cut short; a filter's last words reach a TLS
client after the server leg failed its TLS verification."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest_twisted
import support
from support import LOCAL, Network, Peer, RecordingFilter, within
from twisted.internet import ssl
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IHandshakeListener
from zope.interface import implementer

from fwxtwisted.interfaces import (
    TLS_UNFINISHED,
    Direction,
    FirewallEvent,
    FirewallNotification,
    IDataChannel,
    IDataFilter,
    IFilter,
    ISessionFilter,
    LegTLS,
    Side,
)
from fwxtwisted.net.tls import ServerTLSSettings, UpstreamTLSSettings
from fwxtwisted.permissions.session import Session
from tests.peers import TlsFiles, makeTlsFiles

net = support.net


@implementer(IHandshakeListener)
class TLSPeer(Peer):
    """A peer that tells when its TLS handshake is done."""

    def __init__(self) -> None:
        super().__init__()
        self.handshaken: Deferred[None] = Deferred()

    def handshakeCompleted(self) -> None:
        self.handshaken.callback(None)


class LateTLSPeer(TLSPeer):
    """A server that reads nothing until it starts TLS (as an FTP server accepting a
    data connection, whose TLS handshake waits for the transfer command)."""

    def connectionMade(self) -> None:
        super().connectionMade()
        self.transport.pauseProducing()  # type: ignore[union-attr]

    def startTLS(self, options: Any) -> None:
        assert self.transport is not None
        self.transport.startTLS(options)  # type: ignore[attr-defined]
        self.transport.resumeProducing()  # type: ignore[attr-defined]


def serverOptions(files: TlsFiles, wrong: bool = False) -> Any:
    if wrong:
        return ServerTLSSettings(str(files.wrongCert), str(files.wrongKey)).makeOptions()
    return ServerTLSSettings(str(files.cert), str(files.key)).makeOptions()


def clientOptions(files: TlsFiles) -> Any:
    return ssl.optionsForClientTLS(
        LOCAL, trustRoot=ssl.Certificate.loadPEM(files.caCert.read_bytes())
    )


@pytest_twisted.ensureDeferred
async def test_a_refused_leg_gets_nothing_and_the_other_handshake_ends_normally(
    net: Network, tmp_path: Path
) -> None:
    files = makeTlsFiles(tmp_path)
    recording = RecordingFilter(connectUpstream=True)
    _, upstream = net.server()
    running = net.startGateway(recording, upstream=upstream)
    _, sessionFilter = await net.openSession(running, recording)
    target, address = net.server(makePeer=LateTLSPeer)
    checked: list[object] = []

    def refuse(connection: object) -> str:
        checked.append(connection)
        return "session reuse required"

    redirection = await within(
        sessionFilter.session.redirectConnections(
            [address],
            tls={
                Side.CLIENT: LegTLS(serverOptions(files), asServer=True, check=refuse),
                Side.SERVER: LegTLS(
                    UpstreamTLSSettings(str(files.caCert)).clientOptions(LOCAL), asServer=False
                ),
            },
        )
    )
    client = TLSPeer()
    await net.connect(redirection.internalAddress, peer=client)
    # The gateway connects to the server for the client; the server answers its TLS
    # only later (as an FTP server does after RETR).
    server: LateTLSPeer = await within(target.accepted.get())
    client.transport.startTLS(clientOptions(files))  # type: ignore[union-attr]
    await within(client.lost)
    assert len(checked) == 1
    assert client.received == b""
    server.startTLS(serverOptions(files))
    await within(server.handshaken)
    server.send(b"for the refused client")
    # Closed cleanly once its handshake was done, not reset in the middle of it.
    assert isinstance(await within(server.lost), ConnectionDone)
    assert client.received == b""
    terminated = await within(sessionFilter.waitFor(FirewallEvent.CONNECTION_TERMINATING))
    assert terminated.reason == "session reuse required"


@implementer(IDataFilter)
class _Channel:
    """Passes bytes through and keeps the channel, for the session filter's last words."""

    channel: IDataChannel | None = None

    def attached(self, channel: IDataChannel) -> None:
        self.channel = channel

    def dataReceived(self, direction: Direction, data: bytes) -> None:
        assert self.channel is not None
        self.channel.write(direction, data)

    def eofReceived(self, direction: Direction) -> None:
        assert self.channel is not None
        self.channel.writeEOF(direction)

    def detached(self) -> None:
        self.channel = None


@implementer(ISessionFilter)
class _LastWords:
    """TLS on both legs of the primary; when the server leg is lost, says why."""

    def __init__(self, session: Session, files: TlsFiles) -> None:
        self.session = session
        self.files = files
        self.data = _Channel()

    def sessionStarted(self) -> None:
        self.session.attachDataFilter(self.data)
        self.session.startTLS(Side.CLIENT, LegTLS(serverOptions(self.files), asServer=True))
        creator = UpstreamTLSSettings(str(self.files.caCert)).clientOptions(LOCAL)
        connecting = self.session.connectUpstream()
        connecting.addCallback(
            lambda _: self.session.startTLS(Side.SERVER, LegTLS(creator, asServer=False))
        )

    def firewallEvent(self, notification: FirewallNotification) -> None:
        if notification.event is FirewallEvent.LEG_CLOSED and notification.side is Side.SERVER:
            assert self.data.channel is not None
            reply = f"421 lost: {notification.reason}\r\n".encode()
            self.data.channel.write(Direction.SERVER_TO_CLIENT, reply)

    def detach(self) -> None:
        pass


@implementer(IFilter)
class _LastWordsFilter:
    name = "last-words"
    description = "TLS both ways; says why the server leg went."
    protocols = ()

    def __init__(self, files: TlsFiles) -> None:
        self.files = files

    def parseOptions(self, options: Any, upstream: Any) -> object:
        return None

    def commandLineOptions(self) -> None:
        return None

    def attachToSession(self, session: Session) -> _LastWords:
        return _LastWords(session, self.files)


class _WrongNameServer(Peer):
    def __init__(self, files: TlsFiles) -> None:
        super().__init__()
        self.files = files

    def connectionMade(self) -> None:
        super().connectionMade()
        self.transport.startTLS(serverOptions(self.files, wrong=True))  # type: ignore[union-attr]


@pytest_twisted.ensureDeferred
async def test_last_words_reach_a_tls_client_after_the_server_failed_verification(
    net: Network, tmp_path: Path
) -> None:
    files = makeTlsFiles(tmp_path)
    _, upstream = net.server(makePeer=lambda: _WrongNameServer(files))
    running = net.startGateway(_LastWordsFilter(files), upstream=upstream)
    client = TLSPeer()
    await net.connect(running.address, peer=client)
    client.transport.startTLS(clientOptions(files))  # type: ignore[union-attr]
    await within(client.handshaken)
    received = await within(client.eof)
    assert received == b"421 lost: TLS error: certificate does not match 127.0.0.1\r\n"


@pytest_twisted.ensureDeferred
async def test_a_peer_leaving_before_its_tls_handshake_ended_is_the_close_reason(
    net: Network, tmp_path: Path
) -> None:
    """However cleanly its TCP connection ends, a peer that closed its TLS leg before
    the handshake was over made nothing whole: CONNECTION_TERMINATING says so (an FTP
    filter turns that transfer's reply into 426)."""
    files = makeTlsFiles(tmp_path)
    recording = RecordingFilter(connectUpstream=True)
    _, upstream = net.server()
    running = net.startGateway(recording, upstream=upstream)
    _, sessionFilter = await net.openSession(running, recording)
    target, address = net.server(makePeer=LateTLSPeer)
    redirection = await within(
        sessionFilter.session.redirectConnections(
            [address],
            tls={
                Side.CLIENT: LegTLS(serverOptions(files), asServer=True),
                Side.SERVER: LegTLS(
                    UpstreamTLSSettings(str(files.caCert)).clientOptions(LOCAL), asServer=False
                ),
            },
        )
    )
    client = TLSPeer()
    await net.connect(redirection.internalAddress, peer=client)
    server: LateTLSPeer = await within(target.accepted.get())
    client.transport.loseConnection()  # type: ignore[union-attr]
    server.startTLS(serverOptions(files))
    terminated = await within(sessionFilter.waitFor(FirewallEvent.CONNECTION_TERMINATING))
    assert terminated.reason is not None
    assert terminated.reason.startswith("client ")
    assert terminated.reason.endswith(TLS_UNFINISHED) or terminated.reason.endswith(
        f"{TLS_UNFINISHED})"
    )
