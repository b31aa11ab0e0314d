"""Multihomed gateways: each session leaves from its own external IP, secondaries too."""

from __future__ import annotations

import pytest_twisted
import support
from support import LOCAL, Network, Peer, RecordingFilter, within

from fwxtwisted.filters.tcp import tcpFilter
from fwxtwisted.settings import GatewaySettings

net = support.net

POOL = ("127.0.0.2", "127.0.0.3")


@pytest_twisted.ensureDeferred
async def test_upstream_sees_each_session_from_its_own_external_ip(net: Network) -> None:
    upstream, upstreamAddress = net.server()
    settings = GatewaySettings(externalAddresses=POOL)
    running = net.startGateway(tcpFilter, settings, upstream=upstreamAddress)
    seen = []
    for _ in range(3):
        client: Peer = await net.connect(running.address)
        client.send(b"hi")
        server: Peer = await within(upstream.accepted.get())
        await within(server.waitFor(2))
        seen.append(server.peerAddress.host)
        client.transport.loseConnection()
        await within(server.lost)
    assert seen == [POOL[0], POOL[1], POOL[0]]


@pytest_twisted.ensureDeferred
async def test_redirect_leaves_from_its_sessions_external_ip(net: Network) -> None:
    recording = RecordingFilter(connectUpstream=True)
    upstream, upstreamAddress = net.server()
    running = net.startGateway(
        recording, GatewaySettings(externalAddresses=POOL), upstream=upstreamAddress
    )
    target, targetAddress = net.server()
    for expected in POOL:
        _, sessionFilter = await net.openSession(running, recording)
        assert sessionFilter.upstream is not None
        await within(sessionFilter.upstream)
        primaryServer: Peer = await within(upstream.accepted.get())
        redirection = await within(sessionFilter.session.redirectConnections([targetAddress]))
        await net.connect(redirection.internalAddress)
        secondary: Peer = await within(target.accepted.get())
        assert sessionFilter.session.externalAddress == expected
        assert primaryServer.peerAddress.host == expected
        assert secondary.peerAddress.host == expected


@pytest_twisted.ensureDeferred
async def test_filter_may_name_another_source_ip_for_a_redirect(net: Network) -> None:
    recording = RecordingFilter(connectUpstream=True)
    _, upstreamAddress = net.server()
    running = net.startGateway(
        recording, GatewaySettings(externalAddresses=POOL), upstream=upstreamAddress
    )
    target, targetAddress = net.server()
    _, sessionFilter = await net.openSession(running, recording)
    redirection = await within(
        sessionFilter.session.redirectConnections([targetAddress], proxyExternalAddress="127.0.0.4")
    )
    assert redirection.actions[0].externalAddress == "127.0.0.4"
    await net.connect(redirection.internalAddress)
    secondary: Peer = await within(target.accepted.get())
    assert secondary.peerAddress.host == "127.0.0.4"


@pytest_twisted.ensureDeferred
async def test_without_a_pool_redirects_leave_from_the_primarys_source_ip(net: Network) -> None:
    recording = RecordingFilter(connectUpstream=True)
    _, upstreamAddress = net.server()
    running = net.startGateway(recording, upstream=upstreamAddress)
    target, targetAddress = net.server()
    _, sessionFilter = await net.openSession(running, recording)
    assert sessionFilter.session.externalAddress is None
    assert sessionFilter.upstream is not None
    await within(sessionFilter.upstream)
    assert sessionFilter.session.externalAddress == LOCAL
    redirection = await within(sessionFilter.session.redirectConnections([targetAddress]))
    await net.connect(redirection.internalAddress)
    secondary: Peer = await within(target.accepted.get())
    assert secondary.peerAddress.host == LOCAL
