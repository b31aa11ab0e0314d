"""TCP redirectConnections over real loopback sockets: listeners, peer checks, events."""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted
import support
from support import (
    LOCAL,
    Network,
    Peer,
    PeerFactory,
    RecordingFilter,
    RecordingSessionFilter,
    RunningGateway,
    within,
)
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock

from fwxtwisted.address import Address
from fwxtwisted.errors import PortRangeExhausted, PortUnavailable
from fwxtwisted.interfaces import ActionState, FirewallEvent, RedirectFlags
from fwxtwisted.relay import splice
from fwxtwisted.settings import GatewaySettings

net = support.net

WRONG_PEER = "127.0.0.5"


async def primary(
    net: Network, settings: GatewaySettings | None = None, clock: Clock | None = None
) -> tuple[RunningGateway, Peer, RecordingSessionFilter]:
    """A gateway with the recording filter, and one client session on it, connected to
    an upstream."""
    recording = RecordingFilter(connectUpstream=True)
    _, upstream = net.server()
    running = net.startGateway(recording, settings, clock, upstream=upstream)
    client, sessionFilter = await net.openSession(running, recording)
    assert sessionFilter.upstream is not None
    await within(sessionFilter.upstream)
    return running, client, sessionFilter


async def assertRefused(net: Network, address: Address, bindHost: str | None = None) -> None:
    with pytest.raises(ConnectionRefusedError):
        await net.connect(address, bindHost)


async def roundTrip(net: Network, internal: Address, target: PeerFactory) -> tuple[Peer, Peer]:
    """Connect to C{internal}, check bytes go both ways to the next peer of C{target}."""
    client: Peer = await net.connect(internal)
    client.send(b"ping")
    server: Peer = await within(target.accepted.get())
    assert await within(server.waitFor(4)) == b"ping"
    server.send(b"pong")
    assert await within(client.waitFor(4)) == b"pong"
    return client, server


@pytest_twisted.ensureDeferred
async def test_n_connect_addresses_get_n_consecutive_listeners(net: Network) -> None:
    _, _, sessionFilter = await primary(net)
    targets = [net.server() for _ in range(3)]
    redirection = await within(
        sessionFilter.session.redirectConnections([address for _, address in targets])
    )
    ports = [action.internalAddress.port for action in redirection.actions]
    assert ports == [ports[0], ports[0] + 1, ports[0] + 2]
    assert redirection.internalAddress == Address(LOCAL, ports[0])
    for i, (factory, _) in enumerate(targets):
        client: Peer = await net.connect(Address(LOCAL, ports[0] + i))
        client.send(b"to %d" % i)
        server: Peer = await within(factory.accepted.get())
        assert await within(server.waitFor(4)) == b"to %d" % i


@pytest_twisted.ensureDeferred
async def test_listener_accepts_as_soon_as_the_deferred_fires(net: Network) -> None:
    _, _, sessionFilter = await primary(net)
    target, address = net.server()
    fired: list[Any] = []
    d = sessionFilter.session.redirectConnections([address])
    # Connect from the callback itself: nothing runs between firing and connecting.
    d.addCallback(lambda redirection: fired.append(net.connect(redirection.internalAddress)))
    await within(d)
    client: Peer = await fired[0]
    client.send(b"early")
    server: Peer = await within(target.accepted.get())
    assert await within(server.waitFor(5)) == b"early"


@pytest_twisted.ensureDeferred
async def test_explicit_internal_port_is_honoured(net: Network) -> None:
    _, _, sessionFilter = await primary(net)
    target, address = net.server()
    port = net.freePort()
    redirection = await within(
        sessionFilter.session.redirectConnections([address], internalAddress=Address(LOCAL, port))
    )
    assert redirection.internalAddress == Address(LOCAL, port)
    await roundTrip(net, Address(LOCAL, port), target)


@pytest_twisted.ensureDeferred
async def test_explicit_port_already_taken_fails_with_port_unavailable(net: Network) -> None:
    _, _, sessionFilter = await primary(net)
    _, address = net.server()
    port = net.freePort()
    net.occupy(LOCAL, port)
    with pytest.raises(PortUnavailable) as caught:
        await within(
            sessionFilter.session.redirectConnections(
                [address], internalAddress=Address(LOCAL, port)
            )
        )
    assert str(caught.value) == f"port {port} on {LOCAL} is not available"
    assert sessionFilter.session.actions == ()


@pytest_twisted.ensureDeferred
async def test_exhausted_port_range_fails_with_port_range_exhausted(net: Network) -> None:
    low = net.occupyRun(3)
    settings = GatewaySettings(portRanges={LOCAL: (low, low + 2)})
    _, _, sessionFilter = await primary(net, settings)
    _, address = net.server()
    with pytest.raises(PortRangeExhausted) as caught:
        await within(sessionFilter.session.redirectConnections([address]))
    assert str(caught.value) == f"no 1 free consecutive port(s) on {LOCAL} in {low}-{low + 2}"


@pytest_twisted.ensureDeferred
async def test_nearly_full_range_still_yields_its_free_run(net: Network) -> None:
    low = net.occupyRun(4)
    net.release(low, low + 1, low + 2)
    settings = GatewaySettings(portRanges={LOCAL: (low, low + 3)})
    _, _, sessionFilter = await primary(net, settings)
    _, address = net.server()
    # The allocator starts at a random run: whichever it is, a free pair is found.
    for _ in range(8):
        redirection = await within(sessionFilter.session.redirectConnections([address] * 2))
        assert redirection.internalAddress.port in (low, low + 1)
        for action in redirection.actions:
            action.cancel()
            await within(action.whenFinished())


@pytest_twisted.ensureDeferred
async def test_run_longer_than_the_range_fails_at_once(net: Network) -> None:
    settings = GatewaySettings(portRanges={LOCAL: (30000, 30001)})
    _, _, sessionFilter = await primary(net, settings)
    _, address = net.server()
    with pytest.raises(PortRangeExhausted) as caught:
        await within(sessionFilter.session.redirectConnections([address] * 3))
    assert "range 30000-30001 is smaller" in str(caught.value)


@pytest_twisted.ensureDeferred
async def test_wrong_peer_is_refused_and_the_permission_stays_open(net: Network) -> None:
    _, _, sessionFilter = await primary(net)
    target, address = net.server()
    redirection = await within(sessionFilter.session.redirectConnections([address]))
    intruder: Peer = await net.connect(redirection.internalAddress, bindHost=WRONG_PEER)
    assert await within(intruder.eof) == b""
    await within(intruder.lost)
    refused = await within(sessionFilter.waitFor(FirewallEvent.REFUSED_CONNECTION))
    assert refused.clientAddress is not None and refused.clientAddress.host == WRONG_PEER
    assert refused.action is redirection.actions[0]
    assert target.peers == []
    assert redirection.actions[0].state is ActionState.LISTENING
    await roundTrip(net, redirection.internalAddress, target)
    assert redirection.actions[0].connectionCount == 1


@pytest_twisted.ensureDeferred
async def test_expected_peer_named_by_the_filter_is_the_only_one_accepted(net: Network) -> None:
    _, _, sessionFilter = await primary(net)
    target, address = net.server()
    redirection = await within(
        sessionFilter.session.redirectConnections([address], expectedPeer=WRONG_PEER)
    )
    client: Peer = await net.connect(redirection.internalAddress)
    assert await within(client.eof) == b""
    chosen: Peer = await net.connect(redirection.internalAddress, bindHost=WRONG_PEER)
    chosen.send(b"hi")
    server: Peer = await within(target.accepted.get())
    assert await within(server.waitFor(2)) == b"hi"


@pytest_twisted.ensureDeferred
async def test_permission_is_single_use_by_default(net: Network) -> None:
    _, _, sessionFilter = await primary(net)
    target, address = net.server()
    redirection = await within(sessionFilter.session.redirectConnections([address]))
    await roundTrip(net, redirection.internalAddress, target)
    assert redirection.actions[0].state is ActionState.USED
    await assertRefused(net, redirection.internalAddress)


@pytest_twisted.ensureDeferred
async def test_allow_multiple_accepts_connections_until_cancelled(net: Network) -> None:
    _, _, sessionFilter = await primary(net)
    target, address = net.server()
    redirection = await within(
        sessionFilter.session.redirectConnections([address], flags=RedirectFlags.ALLOW_MULTIPLE)
    )
    for _ in range(3):
        await roundTrip(net, redirection.internalAddress, target)
    action = redirection.actions[0]
    assert action.connectionCount == 3
    assert action.state is ActionState.LISTENING
    action.cancel()
    await within(action.whenFinished())
    await assertRefused(net, redirection.internalAddress)


@pytest_twisted.ensureDeferred
async def test_unused_permission_expires_after_the_redirect_timeout(net: Network) -> None:
    clock = Clock()
    _, _, sessionFilter = await primary(net, GatewaySettings(redirectTimeout=30), clock)
    _, address = net.server()
    redirection = await within(sessionFilter.session.redirectConnections([address]))
    action = redirection.actions[0]
    clock.advance(29.9)
    assert action.state is ActionState.LISTENING
    assert sessionFilter.events(FirewallEvent.PERMISSION_EXPIRED) == []
    clock.advance(0.1)
    assert action.state is ActionState.EXPIRED
    expired = await within(sessionFilter.waitFor(FirewallEvent.PERMISSION_EXPIRED))
    assert expired.action is action
    assert await within(action.whenFinished()) is ActionState.EXPIRED
    await assertRefused(net, redirection.internalAddress)
    assert sessionFilter.session.actions == ()


@pytest_twisted.ensureDeferred
async def test_used_permission_does_not_expire(net: Network) -> None:
    clock = Clock()
    _, _, sessionFilter = await primary(net, GatewaySettings(redirectTimeout=30), clock)
    target, address = net.server()
    redirection = await within(sessionFilter.session.redirectConnections([address]))
    client, server = await roundTrip(net, redirection.internalAddress, target)
    clock.advance(3600)
    assert sessionFilter.events(FirewallEvent.PERMISSION_EXPIRED) == []
    client.send(b"still here")
    assert await within(server.waitFor(14)) == b"pingstill here"


@pytest_twisted.ensureDeferred
async def test_permission_without_timeout_flag_never_expires(net: Network) -> None:
    clock = Clock()
    _, _, sessionFilter = await primary(net, GatewaySettings(redirectTimeout=30), clock)
    target, address = net.server()
    redirection = await within(
        sessionFilter.session.redirectConnections([address], flags=RedirectFlags.NONE)
    )
    clock.advance(3600)
    assert redirection.actions[0].state is ActionState.LISTENING
    await roundTrip(net, redirection.internalAddress, target)


@pytest_twisted.ensureDeferred
async def test_no_kernel_mode_flag_is_kept_on_the_action(net: Network) -> None:
    _, _, sessionFilter = await primary(net)
    target, address = net.server()
    flags = RedirectFlags.TIMEOUT | RedirectFlags.NO_KERNEL_MODE
    redirection = await within(sessionFilter.session.redirectConnections([address], flags=flags))
    assert redirection.actions[0].flags == flags
    await roundTrip(net, redirection.internalAddress, target)
    established = await within(sessionFilter.waitFor(FirewallEvent.ESTABLISHED_CONNECTION))
    assert established.fastPath is False


@pytest.mark.skipif(not splice.available(), reason="no splice(2) fast path on this OS")
@pytest_twisted.ensureDeferred
async def test_redirect_without_no_kernel_mode_takes_the_fast_path(net: Network) -> None:
    _, _, sessionFilter = await primary(net)
    target, address = net.server()
    redirection = await within(sessionFilter.session.redirectConnections([address]))
    await roundTrip(net, redirection.internalAddress, target)
    established = await within(sessionFilter.waitFor(FirewallEvent.ESTABLISHED_CONNECTION))
    assert established.fastPath is True


@pytest_twisted.ensureDeferred
async def test_established_connection_carries_the_filters_context(net: Network) -> None:
    _, _, sessionFilter = await primary(net)
    target, address = net.server()
    context = object()
    redirection = await within(
        sessionFilter.session.redirectConnections([address], context=context)
    )
    assert redirection.actions[0].context is context
    client, _ = await roundTrip(net, redirection.internalAddress, target)
    established = await within(sessionFilter.waitFor(FirewallEvent.ESTABLISHED_CONNECTION))
    assert established.context is context
    assert established.action is redirection.actions[0]
    assert established.clientAddress == Address(LOCAL, client.transport.getHost().port)
    assert established.serverAddress == address
    events = [n.event for n in sessionFilter.notifications]
    assert events.index(FirewallEvent.ACCEPTED_CONNECTION) < events.index(
        FirewallEvent.ESTABLISHED_CONNECTION
    )


@pytest_twisted.ensureDeferred
async def test_connection_terminating_reports_exact_byte_counts(net: Network) -> None:
    _, _, sessionFilter = await primary(net)
    target, address = net.server()
    redirection = await within(sessionFilter.session.redirectConnections([address]))
    client: Peer = await net.connect(redirection.internalAddress)
    client.send(b"c" * 3000)
    server: Peer = await within(target.accepted.get())
    await within(server.waitFor(3000))
    server.send(b"s" * 70001)
    await within(client.waitFor(70001))
    client.transport.loseConnection()
    await within(server.lost)
    ending = await within(sessionFilter.waitFor(FirewallEvent.CONNECTION_TERMINATING))
    assert ending.action is redirection.actions[0]
    assert (ending.counts.fromClient, ending.counts.fromServer) == (3000, 70001)
    assert await within(redirection.actions[0].whenFinished()) is ActionState.USED


@pytest_twisted.ensureDeferred
async def test_cancel_closes_an_unused_listener(net: Network) -> None:
    _, _, sessionFilter = await primary(net)
    _, address = net.server()
    redirection = await within(sessionFilter.session.redirectConnections([address]))
    action = redirection.actions[0]
    action.cancel()
    assert action.state is ActionState.CANCELLED
    assert await within(action.whenFinished()) is ActionState.CANCELLED
    await assertRefused(net, redirection.internalAddress)


@pytest_twisted.ensureDeferred
async def test_cancel_aborts_a_live_connection(net: Network) -> None:
    _, _, sessionFilter = await primary(net)
    target, address = net.server()
    redirection = await within(sessionFilter.session.redirectConnections([address]))
    client, server = await roundTrip(net, redirection.internalAddress, target)
    action = redirection.actions[0]
    action.cancel()
    await within(client.lost)
    await within(server.lost)
    assert await within(action.whenFinished()) is ActionState.CANCELLED
    ending = await within(sessionFilter.waitFor(FirewallEvent.CONNECTION_TERMINATING))
    assert ending.reason == "permission cancelled"


@pytest_twisted.ensureDeferred
async def test_cancel_twice_changes_nothing_more(net: Network) -> None:
    _, _, sessionFilter = await primary(net)
    target, address = net.server()
    redirection = await within(sessionFilter.session.redirectConnections([address]))
    client, _ = await roundTrip(net, redirection.internalAddress, target)
    action = redirection.actions[0]
    action.cancel()
    await within(client.lost)
    await within(action.whenFinished())
    before = list(sessionFilter.notifications)
    action.cancel()
    assert action.state is ActionState.CANCELLED
    assert sessionFilter.notifications == before
    assert len(sessionFilter.events(FirewallEvent.CONNECTION_TERMINATING)) == 1
    assert await within(action.whenFinished()) is ActionState.CANCELLED


@pytest_twisted.ensureDeferred
async def test_closing_the_primary_cancels_every_action_of_the_session(net: Network) -> None:
    _, client, sessionFilter = await primary(net)
    target, address = net.server()
    session = sessionFilter.session
    live = await within(session.redirectConnections([address], flags=RedirectFlags.ALLOW_MULTIPLE))
    idle = await within(session.redirectConnections([address, address]))
    redirected, server = await roundTrip(net, live.internalAddress, target)
    client.transport.loseConnection()
    await within(sessionFilter.detached)
    actions = [*live.actions, *idle.actions]
    for action in actions:
        assert await within(action.whenFinished()) is ActionState.CANCELLED
    await within(redirected.lost)
    await within(server.lost)
    assert session.closed and session.actions == ()
    for action in actions:
        await assertRefused(net, action.internalAddress)


@pytest_twisted.ensureDeferred
async def test_refusing_connect_address_reports_connect_failed(net: Network) -> None:
    _, _, sessionFilter = await primary(net)
    closedAddress = Address(LOCAL, net.freePort())
    redirection = await within(sessionFilter.session.redirectConnections([closedAddress]))
    client: Peer = await net.connect(redirection.internalAddress)
    client.send(b"anyone there?")
    failed = await within(sessionFilter.waitFor(FirewallEvent.CONNECT_FAILED))
    assert failed.reason is not None and str(closedAddress) in failed.reason
    assert "refused" in failed.reason
    assert await within(client.eof) == b""
    await within(client.lost)
    assert await within(redirection.actions[0].whenFinished()) is ActionState.USED
    assert sessionFilter.events(FirewallEvent.ESTABLISHED_CONNECTION) == []


@pytest_twisted.ensureDeferred
async def test_cancel_during_the_outbound_connect_is_not_a_connect_failure(net: Network) -> None:
    _, _, sessionFilter = await primary(net, GatewaySettings(connectTimeout=60))
    redirection = await within(sessionFilter.session.redirectConnections([net.unresponsive()]))
    client: Peer = await net.connect(redirection.internalAddress)
    await within(sessionFilter.waitFor(FirewallEvent.ACCEPTED_CONNECTION))
    action = redirection.actions[0]
    action.cancel()
    await within(client.lost)
    assert await within(action.whenFinished()) is ActionState.CANCELLED
    ending = await within(sessionFilter.waitFor(FirewallEvent.CONNECTION_TERMINATING))
    assert ending.reason == "permission cancelled"
    assert sessionFilter.events(FirewallEvent.CONNECT_FAILED) == []


@pytest_twisted.ensureDeferred
async def test_peer_leaving_during_the_outbound_connect_abandons_it(net: Network) -> None:
    _, _, sessionFilter = await primary(net, GatewaySettings(connectTimeout=60))
    redirection = await within(sessionFilter.session.redirectConnections([net.unresponsive()]))
    client: Peer = await net.connect(redirection.internalAddress)
    await within(sessionFilter.waitFor(FirewallEvent.ACCEPTED_CONNECTION))
    client.transport.abortConnection()
    # Bounded far below the connect timeout: the attempt is abandoned, not waited out.
    assert await within(redirection.actions[0].whenFinished()) is ActionState.USED
    await within(sessionFilter.waitFor(FirewallEvent.CONNECTION_TERMINATING))
    assert sessionFilter.events(FirewallEvent.CONNECT_FAILED) == []


@pytest_twisted.ensureDeferred
async def test_outbound_connect_gives_up_after_the_connect_timeout(net: Network) -> None:
    _, _, sessionFilter = await primary(net, GatewaySettings(connectTimeout=0.3))
    target = net.unresponsive()
    redirection = await within(sessionFilter.session.redirectConnections([target]))
    client: Peer = await net.connect(redirection.internalAddress)
    failed = await within(sessionFilter.waitFor(FirewallEvent.CONNECT_FAILED))
    assert failed.reason is not None and str(target) in failed.reason
    assert await within(client.eof) == b""
    assert await within(redirection.actions[0].whenFinished()) is ActionState.USED
