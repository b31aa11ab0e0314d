"""The zero-copy fast path: taken when it should be, refused when it must be, lossless."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import pytest_twisted
import support
from support import (
    LOCAL,
    Network,
    Peer,
    RecordingFilter,
    RecordingSessionFilter,
    within,
)
from test_relay import HashingUpstream
from twisted.internet import ssl

from fwxtwisted import splice
from fwxtwisted.datafilter import PassThroughDataFilter
from fwxtwisted.filters.tcp import tcpFilter
from fwxtwisted.interfaces import FirewallEvent, FirewallNotification, LegTLS, Side
from fwxtwisted.settings import GatewaySettings
from fwxtwisted.tls import ServerTLSSettings
from tests.peers import makeTlsFiles

net = support.net

MIB = 1 << 20
BULK_WAIT = 60.0

needsSplice = pytest.mark.skipif(not splice.available(), reason="no splice(2) on this OS")


async def recordingSession(
    net: Network, settings: GatewaySettings | None = None
) -> RecordingSessionFilter:
    recording = RecordingFilter(connectUpstream=True)
    _, upstream = net.server()
    running = net.startGateway(recording, settings, upstream=upstream)
    _, sessionFilter = await net.openSession(running, recording)
    assert sessionFilter.upstream is not None
    await within(sessionFilter.upstream)
    return sessionFilter


async def established(sessionFilter: RecordingSessionFilter) -> FirewallNotification:
    return await within(sessionFilter.waitFor(FirewallEvent.ESTABLISHED_CONNECTION))


async def pingThrough(
    net: Network, sessionFilter: RecordingSessionFilter, **kwargs: object
) -> bool:
    """Open a redirect with C{kwargs}, pass bytes both ways; was it on the fast path?"""
    target, address = net.server()
    redirection = await within(sessionFilter.session.redirectConnections([address], **kwargs))
    client: Peer = await net.connect(redirection.internalAddress)
    client.send(b"ping")
    server: Peer = await within(target.accepted.get())
    assert await within(server.waitFor(4)) == b"ping"
    server.send(b"pong")
    assert await within(client.waitFor(4)) == b"pong"
    return (await established(sessionFilter)).fastPath


@needsSplice
@pytest_twisted.ensureDeferred
async def test_100_mib_through_a_redirect_on_the_fast_path_arrive_intact(net: Network) -> None:
    sessionFilter = await recordingSession(net)
    target, address = net.server(makePeer=HashingUpstream)
    redirection = await within(sessionFilter.session.redirectConnections([address]))
    payload = b"".join(hashlib.sha256(bytes([i])).digest() * 32768 for i in range(100))
    assert len(payload) == 100 * MIB
    client: Peer = await net.connect(redirection.internalAddress, peer=Peer(closeOnEOF=False))
    client.send(payload)
    client.shutdownWrite()
    reply = await within(client.eof, BULK_WAIT)
    assert reply[MIB:].decode() == hashlib.sha256(payload).hexdigest()
    assert (await established(sessionFilter)).fastPath is True
    closed = await within(sessionFilter.waitFor(FirewallEvent.CONNECTION_TERMINATING))
    assert closed.fastPath is True
    assert closed.counts.fromClient == 100 * MIB
    assert closed.counts.fromServer == MIB + 64


@needsSplice
@pytest_twisted.ensureDeferred
async def test_unfiltered_tcp_forward_takes_the_fast_path(net: Network) -> None:
    sessionFilter = await recordingSession(net)
    assert await pingThrough(net, sessionFilter) is True


@pytest_twisted.ensureDeferred
async def test_switched_off_gateway_never_takes_the_fast_path(net: Network) -> None:
    sessionFilter = await recordingSession(net, GatewaySettings(fastPath=False))
    assert await pingThrough(net, sessionFilter) is False


@pytest_twisted.ensureDeferred
async def test_a_data_filter_keeps_a_redirect_in_user_mode(net: Network) -> None:
    sessionFilter = await recordingSession(net)
    fast = await pingThrough(
        net, sessionFilter, dataFilterFactory=lambda: [PassThroughDataFilter()]
    )
    assert fast is False


@pytest_twisted.ensureDeferred
async def test_a_data_filter_keeps_the_primary_in_user_mode(net: Network) -> None:
    recording = RecordingFilter(
        connectUpstream=True, dataFilters=lambda _: [(0, PassThroughDataFilter())]
    )
    upstream, upstreamAddress = net.server()
    running = net.startGateway(recording, upstream=upstreamAddress)
    client, sessionFilter = await net.openSession(running, recording)
    client.send(b"through the filter")
    server: Peer = await within(upstream.accepted.get())
    assert await within(server.waitFor(18)) == b"through the filter"
    assert sessionFilter.session.primary.onFastPath is False


@needsSplice
@pytest_twisted.ensureDeferred
async def test_the_primary_without_a_filter_takes_the_fast_path(net: Network) -> None:
    upstream, upstreamAddress = net.server()
    running = net.startGateway(tcpFilter, upstream=upstreamAddress)
    client: Peer = await net.connect(running.address)
    client.send(b"spliced")
    server: Peer = await within(upstream.accepted.get())
    assert await within(server.waitFor(7)) == b"spliced"
    [session] = running.service.sessions
    assert session.primary.onFastPath is True


@pytest_twisted.ensureDeferred
async def test_a_tls_leg_keeps_a_redirect_in_user_mode(net: Network, tmp_path: Path) -> None:
    files = makeTlsFiles(tmp_path)
    serverOptions = ServerTLSSettings(str(files.cert), str(files.key)).makeOptions()
    sessionFilter = await recordingSession(net)
    target, address = net.server()
    redirection = await within(
        sessionFilter.session.redirectConnections(
            [address], tls={Side.CLIENT: LegTLS(serverOptions, asServer=True)}
        )
    )
    client: Peer = await net.connect(redirection.internalAddress)
    trust = ssl.Certificate.loadPEM(files.caCert.read_bytes())
    client.transport.startTLS(ssl.optionsForClientTLS(LOCAL, trustRoot=trust))  # type: ignore[union-attr]
    client.send(b"over tls")
    server: Peer = await within(target.accepted.get())
    assert await within(server.waitFor(8)) == b"over tls"
    server.send(b"in clear")
    assert await within(client.waitFor(8)) == b"in clear"
    assert (await established(sessionFilter)).fastPath is False
