"""RTSP-shaped UDP over real loopback sockets: even port pairs, symmetric RTP through
outboundPorts + peerAddresses, foreign senders dropped, ports freed, datagram ports a
filter drives itself."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import pytest_twisted
import support
from support import LOCAL, Network, RecordingFilter, RecordingSessionFilter, UDPPeer, within
from twisted.internet import reactor, task
from twisted.internet.task import Clock

from fwxtwisted.address import Address
from fwxtwisted.errors import SessionClosed
from fwxtwisted.interfaces import (
    ActionState,
    DatagramCounts,
    FirewallEvent,
    IDatagramPorts,
    ISession,
    IUDPRedirect,
    RedirectFlags,
    Redirection,
    SocketCounts,
    Transport,
)
from fwxtwisted.permissions.datagrams import DatagramPorts
from fwxtwisted.permissions.session import Session
from fwxtwisted.permissions.udp import UDPRedirectAction
from fwxtwisted.settings import GatewaySettings

net = support.net

EXTERNAL = "127.0.0.2"


async def until(predicate: Callable[[], bool], seconds: float = support.WAIT) -> None:
    """Let the reactor run until C{predicate()} holds; fails after C{seconds}."""
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        await task.deferLater(reactor, 0.005, lambda: None)


def addressOf(peer: UDPPeer) -> Address:
    assert peer.transport is not None
    host = peer.transport.getHost()
    return Address(host.host, host.port)


@dataclass
class Track:
    """One RTSP media track over UDP: the client's and the server's RTP/RTCP sockets,
    the gateway's server-facing pair S and the redirection whose ports are pair C."""

    sessionFilter: RecordingSessionFilter
    session: Session
    client: tuple[UDPPeer, UDPPeer]
    server: tuple[UDPPeer, UDPPeer]
    serverFacing: DatagramPorts
    redirection: Redirection

    def clientFacing(self, index: int) -> Address:
        return self.redirection.internalAddress.withPort(
            self.redirection.internalAddress.port + index
        )

    def action(self, index: int) -> UDPRedirectAction:
        action = self.redirection.actions[index]
        assert isinstance(action, UDPRedirectAction)
        return action


async def rtpSession(net: Network, clock: Clock | None = None, **settings: float) -> Session:
    """A session whose external IP is 127.0.0.2, its upstream connected."""
    recording = RecordingFilter(connectUpstream=True)
    _, upstream = net.server()
    gatewaySettings = GatewaySettings(externalAddresses=(EXTERNAL,), **settings)  # type: ignore[arg-type]
    running = net.startGateway(recording, gatewaySettings, clock, upstream=upstream)
    _, sessionFilter = await net.openSession(running, recording)
    assert sessionFilter.upstream is not None
    await within(sessionFilter.upstream)
    return sessionFilter.session


async def track(
    net: Network, clock: Clock | None = None, idle: float | None = None, **settings: float
) -> Track:
    """What the RTSP filter does for one SETUP: bind S before forwarding the request,
    then (knowing the server's ports from the reply) redirect C to them through S."""
    session = await rtpSession(net, clock, **settings)
    sessionFilter = session._sessionFilter
    assert isinstance(sessionFilter, RecordingSessionFilter)
    client = (net.udp(), net.udp())
    server = (net.udp(), net.udp())
    serverFacing = session.openDatagramPorts(2, evenBase=True)
    redirection = await within(
        session.redirectConnections(
            [addressOf(server[0]), addressOf(server[1])],
            transport=Transport.UDP,
            flags=RedirectFlags.EVEN_PORTS,
            outboundPorts=serverFacing,
            peerAddresses=[addressOf(client[0]), addressOf(client[1])],
            udpIdleTimeout=idle,
        )
    )
    return Track(sessionFilter, session, client, server, serverFacing, redirection)


# The relayed pair.


@pytest_twisted.ensureDeferred
async def test_both_pairs_start_on_an_even_port_on_their_own_side(net: Network) -> None:
    rtp = await track(net)
    assert rtp.serverFacing.address.host == EXTERNAL
    assert rtp.serverFacing.address.port % 2 == 0
    assert rtp.redirection.internalAddress.host == LOCAL
    assert rtp.redirection.internalAddress.port % 2 == 0
    assert rtp.clientFacing(1).port == rtp.redirection.internalAddress.port + 1
    assert rtp.serverFacing.addressOf(1).port == rtp.serverFacing.address.port + 1
    assert ISession.providedBy(rtp.session)
    assert IDatagramPorts.providedBy(rtp.serverFacing)
    assert IUDPRedirect.providedBy(rtp.action(0))


@pytest_twisted.ensureDeferred
async def test_server_sends_first_and_the_client_hears_it_from_the_client_facing_rtp_port(
    net: Network,
) -> None:
    rtp = await track(net)
    # Mapped at once: nobody on the client side has sent anything yet.
    mapped = rtp.sessionFilter.events(FirewallEvent.UDP_DESTINATION)
    assert [n.clientAddress for n in mapped] == [addressOf(rtp.client[0]), addressOf(rtp.client[1])]
    rtp.server[0].send(b"rtp from server", rtp.serverFacing.addressOf(0))
    assert await within(rtp.client[0].received.get()) == (b"rtp from server", rtp.clientFacing(0))


@pytest_twisted.ensureDeferred
async def test_client_rtcp_reaches_the_server_from_the_announced_server_facing_port(
    net: Network,
) -> None:
    rtp = await track(net)
    rtp.client[1].send(b"receiver report", rtp.clientFacing(1))
    assert await within(rtp.server[1].received.get()) == (
        b"receiver report",
        rtp.serverFacing.addressOf(1),
    )


@pytest_twisted.ensureDeferred
async def test_both_ports_relay_both_ways_symmetrically(net: Network) -> None:
    rtp = await track(net)
    for index in (0, 1):
        rtp.client[index].send(b"c%d" % index, rtp.clientFacing(index))
        assert await within(rtp.server[index].received.get()) == (
            b"c%d" % index,
            rtp.serverFacing.addressOf(index),
        )
        rtp.server[index].send(b"s%d" % index, rtp.serverFacing.addressOf(index))
        assert await within(rtp.client[index].received.get()) == (
            b"s%d" % index,
            rtp.clientFacing(index),
        )
    assert rtp.action(0).datagramCounts == DatagramCounts(1, 2, 1, 2, 0)
    assert rtp.serverFacing.countsOf(1) == SocketCounts(1, 2, 1, 2, 0)


@pytest_twisted.ensureDeferred
async def test_foreign_senders_are_dropped_and_counted_and_the_flow_goes_on(
    net: Network,
) -> None:
    rtp = await track(net)
    foreign = net.udp()  # same IP as client and server, another port
    foreign.send(b"spoof to client-facing", rtp.clientFacing(0))
    foreign.send(b"spoof to server-facing", rtp.serverFacing.addressOf(0))
    foreign.send(b"spoof again", rtp.clientFacing(0))
    # Loopback delivers in send order: once these arrive, the spoofs were read first.
    rtp.client[0].send(b"real rtp", rtp.clientFacing(0))
    assert await within(rtp.server[0].received.get()) == (
        b"real rtp",
        rtp.serverFacing.addressOf(0),
    )
    rtp.server[0].send(b"real reply", rtp.serverFacing.addressOf(0))
    assert await within(rtp.client[0].received.get()) == (b"real reply", rtp.clientFacing(0))
    counts = rtp.action(0).datagramCounts
    assert counts == DatagramCounts(1, len(b"real rtp"), 1, len(b"real reply"), 3)
    assert rtp.serverFacing.dropped == 1
    assert rtp.server[0].count == 1 and rtp.client[0].count == 1 and foreign.count == 0
    # The first foreign datagram is refused aloud, the rest only counted.
    refused = rtp.sessionFilter.events(FirewallEvent.REFUSED_CONNECTION)
    assert [n.clientAddress for n in refused] == [addressOf(foreign)]
    assert rtp.action(0).state is ActionState.USED


@pytest_twisted.ensureDeferred
async def test_cancel_frees_every_port_with_the_mappings_byte_counts(net: Network) -> None:
    rtp = await track(net)
    rtp.client[0].send(b"abc", rtp.clientFacing(0))
    await within(rtp.server[0].received.get())
    rtp.server[0].send(b"defgh", rtp.serverFacing.addressOf(0))
    await within(rtp.client[0].received.get())
    for action in rtp.redirection.actions:
        action.cancel()
        action.cancel()
    assert [await within(a.whenFinished()) for a in rtp.redirection.actions] == [
        ActionState.CANCELLED,
        ActionState.CANCELLED,
    ]
    ending = rtp.sessionFilter.events(FirewallEvent.CONNECTION_TERMINATING)
    assert [(n.counts.fromClient, n.counts.fromServer) for n in ending] == [(3, 5), (0, 0)]
    assert await within(rtp.serverFacing.whenFinished()) is ActionState.USED
    for index in (0, 1):
        net.listenUDP(UDPPeer(), LOCAL, rtp.clientFacing(index).port)
        net.listenUDP(UDPPeer(), EXTERNAL, rtp.serverFacing.addressOf(index).port)
    assert rtp.session.actions == ()


@pytest_twisted.ensureDeferred
async def test_cancelling_the_outbound_ports_cancels_the_redirection(net: Network) -> None:
    rtp = await track(net)
    rtp.serverFacing.cancel()
    rtp.serverFacing.cancel()
    for action in rtp.redirection.actions:
        assert await within(action.whenFinished()) is ActionState.CANCELLED
    for index in (0, 1):
        net.listenUDP(UDPPeer(), LOCAL, rtp.clientFacing(index).port)
        net.listenUDP(UDPPeer(), EXTERNAL, rtp.serverFacing.addressOf(index).port)


@pytest_twisted.ensureDeferred
async def test_session_close_cancels_pairs_redirections_and_unadopted_ports(
    net: Network,
) -> None:
    rtp = await track(net)
    own = rtp.session.openDatagramPorts(2, evenBase=True)
    rtp.session.close("test over")
    await within(rtp.session.whenClosed())
    for action in rtp.redirection.actions:
        assert action.state is ActionState.CANCELLED
    assert own.state is ActionState.CANCELLED
    for index in (0, 1):
        net.listenUDP(UDPPeer(), LOCAL, rtp.clientFacing(index).port)
        net.listenUDP(UDPPeer(), EXTERNAL, rtp.serverFacing.addressOf(index).port)
        net.listenUDP(UDPPeer(), EXTERNAL, own.addressOf(index).port)
    with pytest.raises(SessionClosed):
        rtp.session.openDatagramPorts(2)


# Lifetime of a mapping made for a known peer.


@pytest_twisted.ensureDeferred
async def test_known_peer_mapping_outlives_the_redirect_timeout_until_idle(
    net: Network,
) -> None:
    clock = Clock()
    rtp = await track(net, clock, redirectTimeout=10, udpIdleTimeout=30)
    clock.advance(20)  # past the unused-permission timeout: nothing expires
    assert rtp.sessionFilter.events(FirewallEvent.PERMISSION_EXPIRED) == []
    rtp.server[0].send(b"late", rtp.serverFacing.addressOf(0))
    assert (await within(rtp.client[0].received.get()))[0] == b"late"
    clock.advance(10)  # RTCP (index 1) has been idle 30 s: it ends, RTP goes on
    ending = await within(rtp.sessionFilter.waitFor(FirewallEvent.CONNECTION_TERMINATING))
    assert ending.reason == "idle timeout"
    assert ending.action is rtp.action(1)
    assert await within(rtp.action(1).whenFinished()) is ActionState.USED
    net.listenUDP(UDPPeer(), LOCAL, rtp.clientFacing(1).port)
    net.listenUDP(UDPPeer(), EXTERNAL, rtp.serverFacing.addressOf(1).port)
    rtp.server[0].send(b"still", rtp.serverFacing.addressOf(0))
    assert (await within(rtp.client[0].received.get()))[0] == b"still"


@pytest_twisted.ensureDeferred
async def test_a_mapping_without_idle_timeout_lives_until_cancelled(net: Network) -> None:
    clock = Clock()
    rtp = await track(net, clock, idle=0, udpIdleTimeout=30)
    clock.advance(3600)  # a long PAUSE: the RTP port is silent
    assert rtp.sessionFilter.events(FirewallEvent.CONNECTION_TERMINATING) == []
    rtp.server[0].send(b"resumed", rtp.serverFacing.addressOf(0))
    assert (await within(rtp.client[0].received.get()))[0] == b"resumed"
    rtp.action(0).cancel()
    ending = await within(rtp.sessionFilter.waitFor(FirewallEvent.CONNECTION_TERMINATING))
    assert ending.reason == "permission cancelled"


# Datagram ports a filter drives itself (RTP inside RTSP interleaved frames).


@pytest_twisted.ensureDeferred
async def test_filter_owned_ports_receive_and_send_both_ways(net: Network) -> None:
    session = await rtpSession(net)
    server = (net.udp(), net.udp())
    ports = session.openDatagramPorts(2, evenBase=True)
    assert ports.address.host == EXTERNAL and ports.address.port % 2 == 0
    heard: list[tuple[int, bytes, Address]] = []
    ports.onDatagram = lambda index, datagram, source: heard.append((index, datagram, source))
    ports.expect(0, addressOf(server[0]))
    ports.expect(1, addressOf(server[1]))
    server[0].send(b"rtp", ports.addressOf(0))
    server[1].send(b"rtcp", ports.addressOf(1))
    await until(lambda: len(heard) == 2)
    assert sorted(heard) == [
        (0, b"rtp", addressOf(server[0])),
        (1, b"rtcp", addressOf(server[1])),
    ]
    ports.send(1, b"rr", addressOf(server[1]))
    assert await within(server[1].received.get()) == (b"rr", ports.addressOf(1))
    assert ports.countsOf(1) == SocketCounts(1, 4, 1, 2, 0)


@pytest_twisted.ensureDeferred
async def test_datagrams_before_an_owner_or_from_a_foreign_port_are_dropped(
    net: Network,
) -> None:
    session = await rtpSession(net)
    server = net.udp()
    ports = session.openDatagramPorts(1)
    server.send(b"too early", ports.address)
    await until(lambda: ports.dropped == 1)
    heard: list[bytes] = []
    ports.onDatagram = lambda index, datagram, source: heard.append(datagram)
    # Before expect(): any port of the server's IP; after: that exact port only.
    ports.expect(0, addressOf(server))
    net.udp().send(b"foreign port", ports.address)
    net.udp(host="127.0.0.5").send(b"foreign ip", ports.address)
    server.send(b"wanted", ports.address)
    await until(lambda: heard == [b"wanted"])
    assert ports.dropped == 3
    assert ports.countsOf(0) == SocketCounts(1, len(b"wanted"), 0, 0, 3)


@pytest_twisted.ensureDeferred
async def test_client_facing_ports_expect_the_client_ip(net: Network) -> None:
    session = await rtpSession(net)
    assert session.internalAddress is not None
    ports = session.openDatagramPorts(2, session.internalAddress.host, evenBase=True)
    assert ports.expectedIP == session.clientAddress.host
    assert ports.address.host == LOCAL and ports.address.port % 2 == 0
    heard: list[tuple[int, bytes]] = []
    ports.onDatagram = lambda index, datagram, source: heard.append((index, datagram))
    client = net.udp()
    client.send(b"from client", ports.addressOf(1))
    await until(lambda: heard == [(1, b"from client")])
    ports.cancel()
    assert await within(ports.whenFinished()) is ActionState.CANCELLED
    net.listenUDP(UDPPeer(), LOCAL, ports.address.port)
    net.listenUDP(UDPPeer(), LOCAL, ports.addressOf(1).port)


# Arguments that do not fit.


@pytest_twisted.ensureDeferred
async def test_outbound_ports_and_peers_that_do_not_fit_are_refused(net: Network) -> None:
    session = await rtpSession(net)
    ports = session.openDatagramPorts(2)
    target = [Address(LOCAL, 9), Address(LOCAL, 10)]
    peers = [Address(LOCAL, 11), Address(LOCAL, 12)]
    cases = [
        dict(transport=Transport.TCP, peerAddresses=peers),
        dict(transport=Transport.UDP, peerAddresses=peers[:1]),
        dict(transport=Transport.UDP, flags=RedirectFlags.ALLOW_MULTIPLE, outboundPorts=ports),
        dict(transport=Transport.UDP, outboundPorts=object()),
    ]
    for kwargs in cases:
        with pytest.raises(ValueError):
            await session.redirectConnections(target, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        await session.redirectConnections(target[:1], transport=Transport.UDP, outboundPorts=ports)
    await within(session.redirectConnections(target, transport=Transport.UDP, outboundPorts=ports))
    with pytest.raises(ValueError, match="used by another redirection"):
        await session.redirectConnections(target, transport=Transport.UDP, outboundPorts=ports)


@pytest_twisted.ensureDeferred
async def test_plain_udp_redirect_counts_packets_and_bytes_both_ways(
    net: Network,
) -> None:
    session = await rtpSession(net)
    server = net.udp(reply=lambda datagram: b"re:" + datagram)
    peer = net.udp()
    redirection = await within(
        session.redirectConnections([addressOf(server)], transport=Transport.UDP)
    )
    action = redirection.actions[0]
    assert isinstance(action, UDPRedirectAction) and action.knownPeer is None
    peer.send(b"ping", redirection.internalAddress)
    assert await within(peer.received.get()) == (b"re:ping", redirection.internalAddress)
    assert action.datagramCounts == DatagramCounts(1, 4, 1, 7, 0)


@pytest_twisted.ensureDeferred
async def test_known_peer_without_outbound_ports_takes_only_that_port(net: Network) -> None:
    session = await rtpSession(net)
    server = net.udp(reply=lambda datagram: b"re:" + datagram)
    peer, otherPort = net.udp(), net.udp()
    redirection = await within(
        session.redirectConnections(
            [addressOf(server)], transport=Transport.UDP, peerAddresses=[addressOf(peer)]
        )
    )
    action = redirection.actions[0]
    assert isinstance(action, UDPRedirectAction)
    assert action.knownPeer == addressOf(peer)
    assert action.state is ActionState.USED  # mapped at once
    otherPort.send(b"not you", redirection.internalAddress)
    peer.send(b"ping", redirection.internalAddress)
    assert await within(peer.received.get()) == (b"re:ping", redirection.internalAddress)
    (datagram, source) = server.received.pending[0]
    assert datagram == b"ping" and source.host == EXTERNAL
    assert action.datagramCounts.dropped == 1
    assert otherPort.count == 0
