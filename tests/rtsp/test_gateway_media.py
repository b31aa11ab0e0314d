"""RTP/RTCP through the rtsp filter on real sockets: UDP pairs, symmetric ports,
translation between UDP and interleaved, teardown and timeouts."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.logger import LogEvent, LogLevel, formatEvent, globalLogPublisher

from fwxtwisted.address import Address
from fwxtwisted.filters.rtsp.message import InterleavedFrame
from fwxtwisted.filters.rtsp.options import RTSPOptions, TransportPolicy
from fwxtwisted.filters.rtsp.parser import Role
from fwxtwisted.filters.rtsp.transport import parseTransport
from tests.core.support import Network, UDPPeer, net, within
from tests.rtsp.gateway import (
    EXTERNAL,
    Scene,
    asResponse,
    portOf,
    readMessages,
    request,
    response,
    scene,
    udpPair,
)

__all__ = ["net"]

LOCAL = "127.0.0.1"


async def udpSetup(
    net: Network, s: Scene, server: tuple[UDPPeer, UDPPeer]
) -> tuple[tuple[UDPPeer, UDPPeer], tuple[int, int], tuple[int, int]]:
    """A UDP client's SETUP through the gateway, answered by the server with its pair.

    @return: the client's pair, the gateway's server-facing ports (the request's
        client_port) and its client-facing ports (the response's server_port).
    """
    client = udpPair(net)
    a = portOf(client[0])
    s.client.send(
        request(
            "SETUP",
            f"{s.gatewayURL}/test/stream=0",
            1,
            f"Transport: RTP/AVP;unicast;client_port={a}-{a + 1}",
        )
    )
    (forwarded,) = await readMessages(s.server, 1, Role.CLIENT)
    (spec,) = parseTransport(forwarded.headers.get("Transport"))  # type: ignore[attr-defined]
    towardServer = spec.clientPorts
    assert towardServer is not None
    c = portOf(server[0])
    s.server.send(
        response(
            1,
            f"Transport: RTP/AVP;unicast;client_port={towardServer[0]}-{towardServer[1]};"
            f"server_port={c}-{c + 1};source=127.0.0.1;ssrc=1234",
            "Session: 12345678;timeout=60",
        )
    )
    reply = asResponse((await readMessages(s.client, 1))[0])
    assert reply.status == 200
    (toClient,) = parseTransport(reply.headers.get("Transport") or "")
    assert toClient.clientPorts == (a, a + 1)
    assert toClient.get("ssrc") == "1234" and not toClient.has("source")
    towardClient = toClient.serverPorts
    assert towardClient is not None
    return client, towardServer, towardClient


@pytest_twisted.ensureDeferred
async def test_both_pairs_start_on_an_even_port(net: Network) -> None:
    s = await scene(net)
    _, towardServer, towardClient = await udpSetup(net, s, udpPair(net, low=43000))
    assert towardServer[0] % 2 == 0 and towardServer[1] == towardServer[0] + 1
    assert towardClient[0] % 2 == 0 and towardClient[1] == towardClient[0] + 1


@pytest_twisted.ensureDeferred
async def test_rtp_from_the_server_reaches_the_client_from_the_announced_port(
    net: Network,
) -> None:
    s = await scene(net)
    server = udpPair(net, low=43000)
    client, towardServer, towardClient = await udpSetup(net, s, server)
    # The server sends first (after PLAY): no client datagram has opened anything yet.
    server[0].send(b"rtp-1", Address(EXTERNAL, towardServer[0]))
    datagram, source = await within(client[0].received.get())
    assert datagram == b"rtp-1"
    assert source == Address(LOCAL, towardClient[0])


@pytest_twisted.ensureDeferred
async def test_rtcp_from_the_client_reaches_the_server_from_the_announced_port(
    net: Network,
) -> None:
    s = await scene(net)
    server = udpPair(net, low=43000)
    client, towardServer, towardClient = await udpSetup(net, s, server)
    client[1].send(b"receiver-report", Address(LOCAL, towardClient[1]))
    datagram, source = await within(server[1].received.get())
    assert datagram == b"receiver-report"
    # Symmetric RTP: from the external address and the port named in client_port.
    assert source == Address(EXTERNAL, towardServer[1])
    server[1].send(b"sender-report", Address(EXTERNAL, towardServer[1]))
    datagram, source = await within(client[1].received.get())
    assert (datagram, source) == (b"sender-report", Address(LOCAL, towardClient[1]))


@pytest_twisted.ensureDeferred
async def test_a_foreign_datagram_is_dropped_and_the_flow_goes_on(net: Network) -> None:
    s = await scene(net)
    server = udpPair(net, low=43000)
    client, towardServer, towardClient = await udpSetup(net, s, server)
    intruder = net.udp()
    intruder.send(b"injected", Address(LOCAL, towardClient[0]))
    intruder.send(b"injected", Address(EXTERNAL, towardServer[0]))
    server[0].send(b"rtp-2", Address(EXTERNAL, towardServer[0]))
    datagram, _ = await within(client[0].received.get())
    assert datagram == b"rtp-2"
    await deferLater(reactor, 0.1, lambda: None)
    assert server[0].count == 0


@pytest_twisted.ensureDeferred
async def test_teardown_returns_every_port(net: Network) -> None:
    s = await scene(net)
    client, towardServer, towardClient = await udpSetup(net, s, udpPair(net, low=43000))
    s.client.send(request("TEARDOWN", f"{s.gatewayURL}/test", 2))
    await readMessages(s.server, 2, Role.CLIENT)
    s.server.send(response(2))
    await readMessages(s.client, 2)
    await deferLater(reactor, 0.1, lambda: None)
    for host, ports in ((EXTERNAL, towardServer), (LOCAL, towardClient)):
        for port in ports:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.bind((host, port))


@pytest_twisted.ensureDeferred
async def test_the_session_ends_after_its_timeout_without_activity(net: Network) -> None:
    s = await scene(net, RTSPOptions(sessionTimeout=0.3))
    client, towardServer, towardClient = await udpSetup(net, s, udpPair(net, low=43000))
    await within(s.client.lost, 5)
    for host, ports in ((EXTERNAL, towardServer), (LOCAL, towardClient)):
        for port in ports:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.bind((host, port))


@pytest_twisted.ensureDeferred
async def test_policy_udp_carries_an_interleaved_clients_media_over_udp(net: Network) -> None:
    s = await scene(net, RTSPOptions(transportPolicy=TransportPolicy.UDP))
    server = udpPair(net, low=43000)
    s.client.send(
        request(
            "SETUP",
            f"{s.gatewayURL}/test/stream=0",
            1,
            "Transport: RTP/AVP/TCP;unicast;interleaved=4-5",
        )
    )
    (forwarded,) = await readMessages(s.server, 1, Role.CLIENT)
    (spec,) = parseTransport(forwarded.headers.get("Transport"))  # type: ignore[attr-defined]
    assert spec.lowerTransport == "UDP" and spec.clientPorts is not None
    towardServer = spec.clientPorts
    c = portOf(server[0])
    s.server.send(
        response(
            1,
            f"Transport: RTP/AVP;unicast;client_port={towardServer[0]}-{towardServer[1]};"
            f"server_port={c}-{c + 1}",
        )
    )
    reply = asResponse((await readMessages(s.client, 1))[0])
    (toClient,) = parseTransport(reply.headers.get("Transport") or "")
    assert toClient.lowerTransport == "TCP" and toClient.interleaved == (4, 5)
    server[0].send(b"rtp-over-udp", Address(EXTERNAL, towardServer[0]))
    events = await readMessages(s.client, 2)
    assert events[1] == InterleavedFrame(4, b"rtp-over-udp")
    s.client.send(InterleavedFrame(5, b"rtcp-in-a-frame").serialize())
    datagram, source = await within(server[1].received.get())
    assert (datagram, source) == (b"rtcp-in-a-frame", Address(EXTERNAL, towardServer[1]))


@pytest_twisted.ensureDeferred
async def test_policy_tcp_carries_a_udp_clients_media_interleaved(net: Network) -> None:
    s = await scene(net, RTSPOptions(transportPolicy=TransportPolicy.TCP))
    client = udpPair(net)
    a = portOf(client[0])
    s.client.send(
        request(
            "SETUP",
            f"{s.gatewayURL}/test/stream=0",
            1,
            f"Transport: RTP/AVP;unicast;client_port={a}-{a + 1}",
        )
    )
    (forwarded,) = await readMessages(s.server, 1, Role.CLIENT)
    (spec,) = parseTransport(forwarded.headers.get("Transport"))  # type: ignore[attr-defined]
    assert spec.lowerTransport == "TCP" and spec.interleaved is not None
    channels = spec.interleaved
    s.server.send(
        response(1, f"Transport: RTP/AVP/TCP;unicast;interleaved={channels[0]}-{channels[1]}")
        + InterleavedFrame(channels[0], b"rtp-in-a-frame").serialize()
    )
    reply = asResponse((await readMessages(s.client, 1))[0])
    (toClient,) = parseTransport(reply.headers.get("Transport") or "")
    assert toClient.clientPorts == (a, a + 1)
    towardClient = toClient.serverPorts
    assert towardClient is not None and towardClient[0] % 2 == 0
    datagram, source = await within(client[0].received.get())
    assert (datagram, source) == (b"rtp-in-a-frame", Address(LOCAL, towardClient[0]))
    client[1].send(b"receiver-report", Address(LOCAL, towardClient[1]))
    events = await readMessages(s.server, 2, Role.CLIENT)
    assert events[1] == InterleavedFrame(channels[1], b"receiver-report")


@pytest.fixture
def rtspEvents() -> Iterator[list[LogEvent]]:
    """Every rtsp.session event logged while the test runs."""
    events: list[LogEvent] = []

    def observe(event: LogEvent) -> None:
        if event.get("fwx_event") == "rtsp.session":
            events.append(event)

    globalLogPublisher.addObserver(observe)
    yield events
    globalLogPublisher.removeObserver(observe)


@pytest_twisted.ensureDeferred
async def test_a_session_ends_with_one_rtsp_event(net: Network, rtspEvents: list[LogEvent]) -> None:
    s = await scene(net)
    server = udpPair(net, low=43000)
    client, towardServer, towardClient = await udpSetup(net, s, server)
    for number in range(3):
        server[0].send(b"rtp-%d" % number, Address(EXTERNAL, towardServer[0]))
        await within(client[0].received.get())
    client[1].send(b"report", Address(LOCAL, towardClient[1]))
    await within(server[1].received.get())
    net.udp().send(b"foreign", Address(LOCAL, towardClient[0]))
    await deferLater(reactor, 0.1, lambda: None)
    s.client.transport.loseConnection()  # type: ignore[union-attr]
    for _ in range(100):
        if rtspEvents:
            break
        await deferLater(reactor, 0.02, lambda: None)
    (event,) = rtspEvents
    assert event["log_level"] is LogLevel.info
    (track,) = event["tracks"]
    assert track["transport"] == "udp<->udp"
    assert (track["packets_to_client"], track["packets_to_server"]) == (3, 1)
    assert track["dropped"] == 1
    assert event["url"] == f"{s.serverURL}/test/stream=0"
    assert event["external"] == EXTERNAL
    assert "1 track(s)" in formatEvent(event)
