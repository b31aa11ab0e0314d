"""UDP redirectConnections over real loopback sockets: mappings, peer checks, timeouts."""

from __future__ import annotations

import pytest_twisted
import support
from support import (
    LOCAL,
    Network,
    RecordingFilter,
    RecordingSessionFilter,
    UDPPeer,
    within,
)
from twisted.internet.task import Clock

from fwxtwisted.address import Address
from fwxtwisted.interfaces import ActionState, FirewallEvent, Redirection, Transport
from fwxtwisted.settings import GatewaySettings

net = support.net

EXTERNAL = "127.0.0.2"
WRONG_PEER = "127.0.0.5"


async def udpRedirect(
    net: Network, settings: GatewaySettings | None = None, clock: Clock | None = None
) -> tuple[RecordingSessionFilter, Redirection, UDPPeer, UDPPeer]:
    """A session whose external IP is 127.0.0.2, a UDP permission to an answering
    server, and a peer socket on the session's client IP.

    @return: the session filter, the redirection, the peer and the server.
    """
    recording = RecordingFilter(connectUpstream=True)
    _, upstream = net.server()
    settings = settings or GatewaySettings(externalAddresses=(EXTERNAL,))
    running = net.startGateway(recording, settings, clock, upstream=upstream)
    _, sessionFilter = await net.openSession(running, recording)
    server = net.udp(reply=lambda datagram: b"re:" + datagram)
    serverAddress = addressOf(server)
    redirection = await within(
        sessionFilter.session.redirectConnections([serverAddress], transport=Transport.UDP)
    )
    return sessionFilter, redirection, net.udp(), server


def addressOf(peer: UDPPeer) -> Address:
    assert peer.transport is not None
    host = peer.transport.getHost()
    return Address(host.host, host.port)


def withExternal(**kwargs: float) -> GatewaySettings:
    return GatewaySettings(externalAddresses=(EXTERNAL,), **kwargs)  # type: ignore[arg-type]


@pytest_twisted.ensureDeferred
async def test_datagrams_reach_the_connect_address_from_the_external_ip(net: Network) -> None:
    sessionFilter, redirection, peer, server = await udpRedirect(net)
    peer.send(b"hello", redirection.internalAddress)
    datagram, source = await within(server.received.get())
    assert datagram == b"hello"
    assert source.host == EXTERNAL
    mapped = await within(sessionFilter.waitFor(FirewallEvent.UDP_DESTINATION))
    assert mapped.clientAddress == addressOf(peer)
    assert mapped.serverAddress == addressOf(server)


@pytest_twisted.ensureDeferred
async def test_replies_come_back_to_the_peer_from_the_internal_address(net: Network) -> None:
    _, redirection, peer, _ = await udpRedirect(net)
    peer.send(b"one", redirection.internalAddress)
    assert await within(peer.received.get()) == (b"re:one", redirection.internalAddress)
    peer.send(b"two", redirection.internalAddress)
    assert await within(peer.received.get()) == (b"re:two", redirection.internalAddress)


@pytest_twisted.ensureDeferred
async def test_datagrams_from_a_wrong_peer_ip_are_dropped(net: Network) -> None:
    sessionFilter, redirection, peer, server = await udpRedirect(net)
    intruder = net.udp(host=WRONG_PEER)
    intruder.send(b"intrusion", redirection.internalAddress)
    refused = await within(sessionFilter.waitFor(FirewallEvent.REFUSED_CONNECTION))
    assert refused.clientAddress == addressOf(intruder)
    assert redirection.actions[0].state is ActionState.LISTENING
    peer.send(b"legit", redirection.internalAddress)
    assert (await within(server.received.get()))[0] == b"legit"
    assert server.count == 1
    assert intruder.count == 0


@pytest_twisted.ensureDeferred
async def test_single_use_permission_maps_only_the_first_peer_port(net: Network) -> None:
    sessionFilter, redirection, peer, server = await udpRedirect(net)
    peer.send(b"first", redirection.internalAddress)
    await within(server.received.get())
    other = net.udp()
    other.send(b"second", redirection.internalAddress)
    refused = await within(sessionFilter.waitFor(FirewallEvent.REFUSED_CONNECTION))
    assert refused.clientAddress == addressOf(other)
    assert refused.reason == "permission already used"
    assert server.count == 1


@pytest_twisted.ensureDeferred
async def test_idle_mapping_expires_with_byte_counts(net: Network) -> None:
    clock = Clock()
    settings = withExternal(udpIdleTimeout=20)
    sessionFilter, redirection, peer, _ = await udpRedirect(net, settings, clock)
    for datagram in (b"12345", b"1234567"):
        peer.send(datagram, redirection.internalAddress)
        await within(peer.received.get())
    clock.advance(19.9)
    assert sessionFilter.events(FirewallEvent.CONNECTION_TERMINATING) == []
    clock.advance(0.1)
    ending = await within(sessionFilter.waitFor(FirewallEvent.CONNECTION_TERMINATING))
    assert ending.reason == "idle timeout"
    assert ending.clientAddress == addressOf(peer)
    assert (ending.counts.fromClient, ending.counts.fromServer) == (12, 18)
    assert await within(redirection.actions[0].whenFinished()) is ActionState.USED


@pytest_twisted.ensureDeferred
async def test_expired_mapping_frees_the_internal_port(net: Network) -> None:
    clock = Clock()
    sessionFilter, redirection, peer, _ = await udpRedirect(net, withExternal(), clock)
    peer.send(b"x", redirection.internalAddress)
    await within(peer.received.get())
    clock.advance(60)
    await within(redirection.actions[0].whenFinished())

    # The port can be bound again: the gateway's socket on it is closed.
    net.listenUDP(UDPPeer(), LOCAL, redirection.internalAddress.port)
    assert sessionFilter.session.actions == ()


@pytest_twisted.ensureDeferred
async def test_traffic_keeps_a_mapping_alive(net: Network) -> None:
    clock = Clock()
    settings = withExternal(udpIdleTimeout=20)
    sessionFilter, redirection, peer, _ = await udpRedirect(net, settings, clock)
    for _ in range(3):
        peer.send(b"beat", redirection.internalAddress)
        await within(peer.received.get())
        clock.advance(15)
    assert sessionFilter.events(FirewallEvent.CONNECTION_TERMINATING) == []
    clock.advance(5)
    ending = await within(sessionFilter.waitFor(FirewallEvent.CONNECTION_TERMINATING))
    assert ending.counts.fromClient == 12


@pytest_twisted.ensureDeferred
async def test_unused_udp_permission_times_out(net: Network) -> None:
    clock = Clock()
    settings = withExternal(redirectTimeout=30)
    sessionFilter, redirection, peer, server = await udpRedirect(net, settings, clock)
    action = redirection.actions[0]
    clock.advance(29.9)
    assert action.state is ActionState.LISTENING
    clock.advance(0.1)
    assert action.state is ActionState.EXPIRED
    expired = await within(sessionFilter.waitFor(FirewallEvent.PERMISSION_EXPIRED))
    assert expired.action is action
    assert await within(action.whenFinished()) is ActionState.EXPIRED

    net.listenUDP(UDPPeer(), LOCAL, redirection.internalAddress.port)
    assert server.count == 0


@pytest_twisted.ensureDeferred
async def test_cancel_closes_the_mapping_with_its_counts(net: Network) -> None:
    sessionFilter, redirection, peer, _ = await udpRedirect(net)
    peer.send(b"abc", redirection.internalAddress)
    await within(peer.received.get())
    action = redirection.actions[0]
    action.cancel()
    action.cancel()
    ending = await within(sessionFilter.waitFor(FirewallEvent.CONNECTION_TERMINATING))
    assert (ending.counts.fromClient, ending.counts.fromServer) == (3, 6)
    assert ending.reason == "permission cancelled"
    assert await within(action.whenFinished()) is ActionState.CANCELLED
    assert len(sessionFilter.events(FirewallEvent.CONNECTION_TERMINATING)) == 1
