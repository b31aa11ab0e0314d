"""A primary listener with proxy_protocol: the session's client is the header's."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import pytest_twisted
import support
from support import LOCAL, Network, Peer, RecordingFilter, RunningGateway, within
from twisted.internet import reactor, task
from twisted.internet.defer import Deferred
from twisted.logger import LogEvent, LogLevel, formatEvent, globalLogPublisher

from fwxtwisted.address import Address
from fwxtwisted.app.config import ListenerConfig
from fwxtwisted.app.primary import BoundListener
from fwxtwisted.app.service import FirewallService
from fwxtwisted.net.proxyprotocol import packV2
from fwxtwisted.permissions.gateway import Gateway
from fwxtwisted.settings import GatewaySettings

net = support.net

REAL_CLIENT = Address("192.0.2.7", 40001)
VIP = Address("198.51.100.1", 2121)


def startProxied(
    net: Network,
    filterPlugin: RecordingFilter,
    maxSessionsPerIP: int | None = None,
    headerTimeout: float | None = None,
    clock: object = None,
) -> RunningGateway:
    gateway = Gateway(reactor, GatewaySettings(), clock=clock)
    config = ListenerConfig(
        "proxied",
        filterPlugin.name,
        f"tcp:0:interface={LOCAL}",
        maxSessionsPerIP=maxSessionsPerIP,
        proxyProtocol=True,
    )
    service = FirewallService(gateway, [BoundListener(config, filterPlugin, None)])
    if headerTimeout is not None:
        service.factories[0].proxyHeaderTimeout = headerTimeout
    service.startService()
    net._services.append(service)
    return RunningGateway(service, gateway, Address(LOCAL, service.ports[0].getHost().port))


@pytest.fixture
def warnings() -> Iterator[list[LogEvent]]:
    """Every fwxtwisted event at warn or above while the test runs."""
    events: list[LogEvent] = []

    def observe(event: LogEvent) -> None:
        namespace = event.get("log_namespace", "")
        if namespace.startswith("fwxtwisted") and event["log_level"] >= LogLevel.warn:
            events.append(event)

    globalLogPublisher.addObserver(observe)
    yield events
    globalLogPublisher.removeObserver(observe)


def sleep(seconds: float) -> Deferred[None]:
    return task.deferLater(reactor, seconds, lambda: None)


@pytest_twisted.ensureDeferred
async def test_the_session_client_is_the_header_source_even_when_split(net: Network) -> None:
    recording = RecordingFilter()
    running = startProxied(net, recording)
    client: Peer = await net.connect(running.address)
    header = packV2(REAL_CLIENT, VIP)
    # A first read shorter than the signature (twisted#8287), then the rest with data.
    client.send(header[:5])
    await sleep(0.05)
    assert recording.attached.pending == []
    client.send(header[5:] + b"first bytes")
    sessionFilter = await within(recording.attached.get())
    await within(sessionFilter.started)
    session = sessionFilter.session
    assert session.clientAddress == REAL_CLIENT
    # The gateway's own address is still the socket's, not the balancer's VIP.
    assert session.internalAddress == Address(LOCAL, running.address.port)


@pytest_twisted.ensureDeferred
async def test_bytes_after_the_header_reach_the_upstream(net: Network) -> None:
    upstream, upstreamAddress = net.server()
    recording = RecordingFilter(connectUpstream=True)
    running = startProxied(net, recording)
    running.service.factories[0]._listener = BoundListener(
        ListenerConfig(
            "proxied", "recording", "tcp:0", upstream=upstreamAddress, proxyProtocol=True
        ),
        recording,
        None,
    )
    client: Peer = await net.connect(running.address)
    client.send(b"PROXY TCP4 192.0.2.7 198.51.100.1 40001 2121\r\nhello")
    server: Peer = await within(upstream.accepted.get())
    assert await within(server.waitFor(5)) == b"hello"
    server.send(b"back")
    assert await within(client.waitFor(4)) == b"back"


@pytest_twisted.ensureDeferred
async def test_local_keeps_the_real_peer(net: Network) -> None:
    recording = RecordingFilter()
    running = startProxied(net, recording)
    client: Peer = await net.connect(running.address)
    client.send(packV2(None, None))
    sessionFilter = await within(recording.attached.get())
    local = client.transport.getHost()  # type: ignore[union-attr]
    assert sessionFilter.session.clientAddress == Address(local.host, local.port)


@pytest_twisted.ensureDeferred
async def test_per_ip_limit_counts_real_clients(net: Network, warnings: list[LogEvent]) -> None:
    recording = RecordingFilter()
    running = startProxied(net, recording, maxSessionsPerIP=1)
    first: Peer = await net.connect(running.address)
    first.send(packV2(REAL_CLIENT, VIP))
    await within(recording.attached.get())
    second: Peer = await net.connect(running.address)
    second.send(packV2(Address(REAL_CLIENT.host, 40002), VIP))
    await within(second.lost)
    assert [formatEvent(e) for e in warnings] == [
        "refused 192.0.2.7:40002: too many sessions (1) from 192.0.2.7"
    ]
    other: Peer = await net.connect(running.address)
    other.send(packV2(Address("192.0.2.8", 40003), VIP))
    sessionFilter = await within(recording.attached.get())
    assert sessionFilter.session.clientAddress.host == "192.0.2.8"


@pytest.mark.parametrize(
    "garbage",
    [
        b"USER anonymous\r\n",
        b"PROXY TCP4 192.0.2.999 198.51.100.1 1 2\r\n",
        packV2(REAL_CLIENT, VIP)[:14] + b"\x00\x0f" + bytes(12) + b"\x01\x00\x09",  # TLV overruns
    ],
)
@pytest_twisted.ensureDeferred
async def test_a_malformed_header_closes_with_one_line(
    net: Network, warnings: list[LogEvent], garbage: bytes
) -> None:
    recording = RecordingFilter()
    running = startProxied(net, recording)
    client: Peer = await net.connect(running.address)
    client.send(garbage)
    await within(client.lost)
    assert recording.attached.pending == []
    lines = [formatEvent(e) for e in warnings]
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"refused {LOCAL}:") and "bad PROXY protocol header" in lines[0]


@pytest_twisted.ensureDeferred
async def test_no_header_within_the_timeout(net: Network, warnings: list[LogEvent]) -> None:
    recording = RecordingFilter()
    running = startProxied(net, recording, headerTimeout=0.2)
    client: Peer = await net.connect(running.address)
    client.send(b"PROXY TCP4 ")
    await within(client.lost)
    assert recording.attached.pending == []
    lines = [formatEvent(e) for e in warnings]
    assert len(lines) == 1 and "no complete PROXY protocol header within 0.2 s" in lines[0]


@pytest_twisted.ensureDeferred
async def test_a_plain_listener_still_uses_the_socket_peer(net: Network) -> None:
    recording = RecordingFilter()
    running = net.startGateway(recording)
    client, sessionFilter = await net.openSession(running, recording)
    local = client.transport.getHost()  # type: ignore[union-attr]
    assert sessionFilter.session.clientAddress == Address(local.host, local.port)
    assert isinstance(running.service, FirewallService)
