"""A UDP permission logs as quietly as a TCP one, and counts replies from a wrong source."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest
import pytest_twisted
import support
from support import LOCAL, Network, RecordingFilter, UDPPeer, turns, within
from twisted.internet import reactor
from twisted.internet.error import CannotListenError
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import globalLogPublisher

from fwxtwisted.address import Address
from fwxtwisted.interfaces import FirewallEvent, Transport
from fwxtwisted.logs import logLevel, setLogLevel
from fwxtwisted.net.quietport import UDP_RECEIVE_BUFFER, listenUDPQuietly
from fwxtwisted.permissions.udp import UDPRedirectAction
from fwxtwisted.settings import GatewaySettings

net = support.net

EXTERNAL = "127.0.0.2"


@pytest.fixture
def logged() -> Iterator[list[dict[str, Any]]]:
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    yield events
    globalLogPublisher.removeObserver(events.append)


@pytest.fixture
def debugLevel() -> Iterator[None]:
    previous = logLevel()
    setLogLevel("debug")
    yield
    setLogLevel(previous)


def portLines(events: list[dict[str, Any]]) -> list[str]:
    """Twisted's own lines about UDP ports and datagram protocols."""
    texts = [str(event.get("log_format")) + str(event.get("message", "")) for event in events]
    words = ("UDP Port", "starting on", "Starting protocol", "Stopping protocol")
    return [text for text in texts if any(word in text for word in words)]


def addressOf(peer: UDPPeer) -> Address:
    assert peer.transport is not None
    host = peer.transport.getHost()
    return Address(host.host, host.port)


@pytest_twisted.ensureDeferred
async def test_quiet_udp_port_relays_and_logs_nothing(logged: list[dict[str, Any]]) -> None:
    received: list[bytes] = []

    class Echo(DatagramProtocol):
        def datagramReceived(self, datagram: bytes, addr: Any) -> None:
            received.append(datagram)

    listening = listenUDPQuietly(reactor, 0, Echo(), LOCAL)
    sender = listenUDPQuietly(reactor, 0, DatagramProtocol(), LOCAL)
    sender.write(b"hello", (LOCAL, listening.getHost().port))
    for _ in range(50):
        if received:
            break
        await turns(1)
    await listening.stopListening()
    await sender.stopListening()
    assert received == [b"hello"]
    assert portLines(logged) == []


def test_quiet_udp_port_taken_is_cannot_listen() -> None:
    holder = listenUDPQuietly(reactor, 0, DatagramProtocol(), LOCAL)
    try:
        with pytest.raises(CannotListenError):
            listenUDPQuietly(reactor, holder.getHost().port, DatagramProtocol(), LOCAL)
    finally:
        holder.stopListening()


@pytest_twisted.ensureDeferred
async def test_udp_channel_logs_no_port_lines_and_counts_wrong_sources(
    net: Network, logged: list[dict[str, Any]], debugLevel: None
) -> None:
    """A whole UDP channel (listener, mapping, replies, cancel) logs none of Twisted's
    port lines; a datagram on the mapping from another source is dropped, counted on
    the action and logged at debug."""
    recording = RecordingFilter(connectUpstream=True)
    _, upstream = net.server()
    settings = GatewaySettings(externalAddresses=(EXTERNAL,))
    running = net.startGateway(recording, settings, upstream=upstream)
    _, sessionFilter = await net.openSession(running, recording)
    server = net.udp(reply=lambda datagram: b"re:" + datagram)
    redirection = await within(
        sessionFilter.session.redirectConnections([addressOf(server)], transport=Transport.UDP)
    )
    [action] = redirection.actions
    assert isinstance(action, UDPRedirectAction)
    peer = net.udp()
    peer.send(b"one", redirection.internalAddress)
    assert await within(peer.received.get()) == (b"re:one", redirection.internalAddress)
    _, mappingAddress = await within(server.received.get())

    stranger = net.udp()
    stranger.send(b"spoofed", mappingAddress)
    for _ in range(50):
        if action.wrongSourceCount:
            break
        await turns(1)
    assert action.wrongSourceCount == 1
    peer.send(b"two", redirection.internalAddress)
    assert await within(peer.received.get()) == (b"re:two", redirection.internalAddress)

    action.cancel()
    await within(action.whenFinished())
    await within(sessionFilter.waitFor(FirewallEvent.CONNECTION_TERMINATING))
    # The test's own peers log as Twisted does; the gateway's sockets do not.
    ours = (
        "_Inbound",
        "_Mapping",
        str(redirection.internalAddress.port),
        str(mappingAddress.port),
    )
    assert [line for line in portLines(logged) if any(word in line for word in ours)] == []
    dropped = [
        event
        for event in logged
        if "dropped a datagram" in str(event.get("log_format", ""))
        and event.get("log_level") is not None
        and event["log_level"].name == "debug"
    ]
    assert len(dropped) == 1
    assert dropped[0]["source"] == str(addressOf(stranger))


@pytest_twisted.ensureDeferred
async def test_datagram_ports_log_no_port_lines(net: Network, logged: list[dict[str, Any]]) -> None:
    """The sockets a filter opens for RTP (openDatagramPorts) are as quiet as a
    permission's, opened and closed."""
    recording = RecordingFilter(connectUpstream=True)
    _, upstream = net.server()
    settings = GatewaySettings(externalAddresses=(EXTERNAL,))
    running = net.startGateway(recording, settings, upstream=upstream)
    _, sessionFilter = await net.openSession(running, recording)
    await within(sessionFilter.upstream)  # type: ignore[arg-type]
    ports = sessionFilter.session.openDatagramPorts(2, evenBase=True)
    numbers = (str(ports.address.port), str(ports.address.port + 1))
    ports.cancel()
    await within(ports.whenFinished())
    lines = portLines(logged)
    assert [line for line in lines if "_Socket" in line or any(n in line for n in numbers)] == []


def test_quiet_udp_port_queues_more_than_the_default() -> None:
    """A relay socket rides out a scheduling gap: its receive buffer is the gateway's,
    not the system default (as far as net.core.rmem_max lets it)."""
    listening = listenUDPQuietly(reactor, 0, DatagramProtocol(), LOCAL)
    try:
        size = listening.socket.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    finally:
        listening.stopListening()
    with open("/proc/sys/net/core/rmem_max") as limit:
        allowed = min(UDP_RECEIVE_BUFFER, int(limit.read()))
    assert size >= allowed
