"""What a primary leg takes from its socket: urgent data in line and no Nagle delay
(from the listening socket on Linux, else set on each accepted one), and the
client-facing address, read when first asked."""

from __future__ import annotations

import socket
import sys

import pytest
import pytest_twisted
import support
from support import Network, Peer, PeerFactory, RunningGateway, within

from fwxtwisted.filters.tcp import tcpFilter
from fwxtwisted.interfaces import Side
from fwxtwisted.net.connect import tuneListener
from fwxtwisted.permissions.session import Session

net = support.net


def options(transport: object) -> tuple[int, int]:
    handle = transport.getHandle()  # type: ignore[attr-defined]
    return (
        handle.getsockopt(socket.SOL_SOCKET, socket.SO_OOBINLINE),
        handle.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY),
    )


async def forwardOne(
    net: Network, running: RunningGateway, upstream: PeerFactory
) -> tuple[Peer, Session]:
    """A client whose first byte reached C{upstream} through C{running}, and its session."""
    client: Peer = await net.connect(running.address, peer=Peer(closeOnEOF=False))
    client.send(b"x")
    server: Peer = await within(upstream.accepted.get())
    assert await within(server.waitFor(1)) == b"x"
    (session,) = running.service.factories[0].sessions
    return client, session


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("inherited", [True, False])
async def test_both_primary_legs_have_oobinline_and_nodelay(
    net: Network, inherited: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    upstream, upstreamAddress = net.server()
    running = net.startGateway(tcpFilter, upstream=upstreamAddress)
    factory = running.service.factories[0]
    if not inherited:
        # A platform that does not copy options to accepted sockets: each is tuned.
        monkeypatch.setattr(factory, "acceptedSocketsTuned", False)
        listening = running.service.ports[0].socket  # type: ignore[attr-defined]
        listening.setsockopt(socket.SOL_SOCKET, socket.SO_OOBINLINE, 0)
        listening.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 0)
    else:
        assert factory.acceptedSocketsTuned is sys.platform.startswith("linux")
    _, session = await forwardOne(net, running, upstream)
    for side in Side:
        leg = session.primary.leg(side)
        assert leg is not None
        assert options(leg.transport) == (1, 1), side


def test_a_listener_without_a_socket_is_not_tuned() -> None:
    assert tuneListener(object()) is False


async def forwarded(net: Network) -> tuple[Peer, Session, RunningGateway]:
    """A gateway with the tcp filter, a client forwarded through it, and its session."""
    upstream, upstreamAddress = net.server()
    running = net.startGateway(tcpFilter, upstream=upstreamAddress)
    client, session = await forwardOne(net, running, upstream)
    return client, session, running


@pytest_twisted.ensureDeferred
async def test_the_client_facing_address_read_while_connected_outlives_the_client(
    net: Network,
) -> None:
    client, session, running = await forwarded(net)
    assert session.internalAddress == running.address
    client.transport.abortConnection()  # type: ignore[union-attr]
    await within(session.whenClosed())
    assert session.internalAddress == running.address


@pytest_twisted.ensureDeferred
async def test_the_client_facing_address_never_read_is_none_once_the_client_is_gone(
    net: Network,
) -> None:
    client, session, _ = await forwarded(net)
    client.transport.abortConnection()  # type: ignore[union-attr]
    await within(session.whenClosed())
    assert session.internalAddress is None
