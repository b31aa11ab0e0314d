"""The primary relay through the tcp filter: bytes, half-close, connect cancel and timeout."""

from __future__ import annotations

import hashlib
import os

import pytest
import pytest_twisted
import support
from support import (
    LOCAL,
    Network,
    Peer,
    PeerFactory,
    RecordingFilter,
    RunningGateway,
    within,
)

from fwxtwisted.address import Address
from fwxtwisted.errors import SessionClosed, UpstreamTimeout
from fwxtwisted.filters.tcp import tcpFilter
from fwxtwisted.interfaces import FirewallEvent, Side
from fwxtwisted.settings import GatewaySettings

net = support.net

MIB = 1024 * 1024
#: The bound on a bulk transfer (64 MiB through two relays in one Python process).
BULK_WAIT = 30.0


def forward(net: Network, settings: GatewaySettings | None = None) -> tuple[PeerFactory, Address]:
    """An upstream server and a tcp-filter gateway in front of it; returns both."""
    upstream, upstreamAddress = net.server()
    running = net.startGateway(tcpFilter, settings, upstream=upstreamAddress)
    return upstream, running.address


class HashingUpstream(Peer):
    """Reads until EOF, hashing; only then replies 1 MiB and the sha256 it computed."""

    def __init__(self) -> None:
        super().__init__(closeOnEOF=False)
        self.hash = hashlib.sha256()
        self.size = 0

    def dataReceived(self, data: bytes) -> None:
        self.hash.update(data)
        self.size += len(data)

    def readConnectionLost(self) -> None:
        super().readConnectionLost()
        assert self.transport is not None
        self.transport.write(b"r" * MIB + self.hash.hexdigest().encode())
        self.transport.loseConnection()


@pytest_twisted.ensureDeferred
async def test_bytes_flow_both_ways_through_the_tcp_filter(net: Network) -> None:
    upstream, address = forward(net)
    client: Peer = await net.connect(address)
    client.send(b"hello upstream")
    server: Peer = await within(upstream.accepted.get())
    assert await within(server.waitFor(14)) == b"hello upstream"
    server.send(b"hello client")
    assert await within(client.waitFor(12)) == b"hello client"


#: Both relay modes: user mode, and the fast path where the OS has it.
MODES = pytest.mark.parametrize(
    "fastPath", [False, True], ids=["user-mode", "fast-path-if-available"]
)


@MODES
@pytest_twisted.ensureDeferred
async def test_client_half_close_after_64_mib_gets_the_whole_reply(
    net: Network, fastPath: bool
) -> None:
    upstream, upstreamAddress = net.server(makePeer=HashingUpstream)
    settings = GatewaySettings(fastPath=fastPath)
    running = net.startGateway(tcpFilter, settings, upstream=upstreamAddress)
    payload = os.urandom(64 * MIB)
    client: Peer = await net.connect(running.address)
    client.send(payload)
    client.shutdownWrite()
    reply = await within(client.eof, BULK_WAIT)
    server: HashingUpstream = await within(upstream.accepted.get())
    assert server.size == len(payload)
    assert len(reply) == MIB + 64
    assert reply[:MIB] == b"r" * MIB
    assert reply[MIB:].decode() == hashlib.sha256(payload).hexdigest()


@MODES
@pytest_twisted.ensureDeferred
async def test_server_half_close_first_lets_the_client_answer(net: Network, fastPath: bool) -> None:
    upstream, address = forward(net, GatewaySettings(fastPath=fastPath))
    payload = os.urandom(8 * MIB)
    client: Peer = await net.connect(address, peer=Peer(closeOnEOF=False))
    server: Peer = await within(upstream.accepted.get())
    server.send(payload)
    server.shutdownWrite()
    received = await within(client.eof, BULK_WAIT)
    assert hashlib.sha256(received).digest() == hashlib.sha256(payload).digest()
    answer = b"a" * MIB + hashlib.sha256(received).hexdigest().encode()
    client.send(answer)
    client.transport.loseConnection()
    assert await within(server.eof, BULK_WAIT) == answer
    await within(client.lost)
    await within(server.lost)


@pytest_twisted.ensureDeferred
async def test_eof_from_the_client_reaches_the_upstream(net: Network) -> None:
    upstream, address = forward(net)
    client: Peer = await net.connect(address, peer=Peer(closeOnEOF=False))
    server: Peer = await within(upstream.accepted.get())
    client.send(b"last words")
    client.shutdownWrite()
    assert await within(server.eof) == b"last words"
    # The other direction is still open.
    server.send(b"still listening")
    assert await within(client.waitFor(15)) == b"still listening"


@pytest_twisted.ensureDeferred
async def test_primary_close_reports_byte_counts(net: Network) -> None:
    recording = RecordingFilter(connectUpstream=True)
    upstream, upstreamAddress = net.server()
    running = net.startGateway(recording, upstream=upstreamAddress)
    client, sessionFilter = await net.openSession(running, recording)
    client.send(b"c" * 1234)
    server: Peer = await within(upstream.accepted.get())
    await within(server.waitFor(1234))
    server.send(b"s" * 4321)
    await within(client.waitFor(4321))
    server.transport.loseConnection()
    ending = await within(sessionFilter.waitFor(FirewallEvent.CONNECTION_TERMINATING))
    assert ending.action is None
    assert (ending.counts.fromClient, ending.counts.fromServer) == (1234, 4321)
    await within(sessionFilter.session.whenClosed())
    await within(client.lost)


@pytest_twisted.ensureDeferred
async def test_refusing_upstream_closes_the_client(net: Network) -> None:
    running = net.startGateway(tcpFilter, upstream=Address(LOCAL, net.freePort()))
    client: Peer = await net.connect(running.address)
    assert await within(client.eof) == b""
    await within(client.lost)


async def sessionToUnresponsiveUpstream(
    net: Network, connectTimeout: float
) -> tuple[RunningGateway, Peer, support.RecordingSessionFilter]:
    recording = RecordingFilter(connectUpstream=True)
    settings = GatewaySettings(connectTimeout=connectTimeout)
    running = net.startGateway(recording, settings, upstream=net.unresponsive())
    client, sessionFilter = await net.openSession(running, recording)
    return running, client, sessionFilter


@pytest_twisted.ensureDeferred
async def test_upstream_connect_is_cancelled_when_the_client_leaves_first(net: Network) -> None:
    running, client, sessionFilter = await sessionToUnresponsiveUpstream(net, 60)
    assert sessionFilter.upstream is not None
    # The client goes away for good (a reset): a half-close would still want the reply.
    client.transport.abortConnection()
    # Bounded far below the connect timeout: the attempt is abandoned, not waited out.
    with pytest.raises(SessionClosed):
        await within(sessionFilter.upstream)
    await within(sessionFilter.session.whenClosed())
    assert sessionFilter.events(FirewallEvent.CONNECT_FAILED) == []
    assert sessionFilter.events(FirewallEvent.CONNECT_TCP) == []
    assert running.service.sessions == []


@pytest_twisted.ensureDeferred
async def test_upstream_connect_timeout_is_configurable(net: Network) -> None:
    running, client, sessionFilter = await sessionToUnresponsiveUpstream(net, 0.3)
    upstream = running.service.listeners[0].config.upstream
    assert sessionFilter.upstream is not None
    with pytest.raises(UpstreamTimeout) as caught:
        await within(sessionFilter.upstream)
    assert str(caught.value) == f"connecting to {upstream} timed out after 0.3 s"
    failed = sessionFilter.events(FirewallEvent.CONNECT_FAILED)
    assert [n.reason for n in failed] == [str(caught.value)]
    assert await within(client.eof) == b""


@pytest_twisted.ensureDeferred
async def test_sessions_beyond_max_sessions_are_refused(net: Network) -> None:
    upstream, upstreamAddress = net.server()
    running = net.startGateway(tcpFilter, upstream=upstreamAddress, maxSessions=1)
    first: Peer = await net.connect(running.address)
    first.send(b"1")
    await within((await within(upstream.accepted.get())).waitFor(1))
    second: Peer = await net.connect(running.address)
    assert await within(second.eof) == b""
    first.send(b"2")
    assert len(upstream.peers) == 1


async def recordedSession(
    net: Network,
) -> tuple[Peer, Peer, support.RecordingSessionFilter]:
    """A client, the upstream's side of its connection, and its session filter."""
    recording = RecordingFilter(connectUpstream=True)
    upstream, upstreamAddress = net.server(makePeer=lambda: Peer(closeOnEOF=False))
    running = net.startGateway(recording, upstream=upstreamAddress)
    client, sessionFilter = await net.openSession(running, recording)
    client.send(b"q")
    server: Peer = await within(upstream.accepted.get())
    await within(server.waitFor(1))
    return client, server, sessionFilter


@pytest_twisted.ensureDeferred
async def test_a_server_leaving_an_open_client_is_a_leg_closed_event(net: Network) -> None:
    client, server, sessionFilter = await recordedSession(net)
    assert server.transport is not None
    server.transport.abortConnection()
    closed = await within(sessionFilter.waitFor(FirewallEvent.LEG_CLOSED))
    assert closed.side is Side.SERVER
    await within(client.lost)


@pytest_twisted.ensureDeferred
async def test_a_finished_exchange_is_no_leg_closed_event(net: Network) -> None:
    client, server, sessionFilter = await recordedSession(net)
    client.shutdownWrite()
    assert await within(server.eof) == b"q"
    server.send(b"a")
    server.shutdownWrite()
    assert await within(client.eof) == b"a"
    ending = await within(sessionFilter.waitFor(FirewallEvent.CONNECTION_TERMINATING))
    assert ending.reason is None
    assert sessionFilter.events(FirewallEvent.LEG_CLOSED) == []
    await within(sessionFilter.session.whenClosed())
    await within(client.lost)
