"""connectOut: an outbound connection to an IP literal, made in one step, with
Twisted's own TCP connection as its transport."""

from __future__ import annotations

import socket
from typing import Any

import pytest
import pytest_twisted
import support
from support import Network, Peer, turns, within
from twisted.internet import error, reactor
from twisted.internet.interfaces import ITCPTransport
from zope.interface.verify import verifyObject

from fwxtwisted.address import Address
from fwxtwisted.net.connect import connectFrom
from fwxtwisted.net.outbound import OutboundConnection, connectOut
from tests.peers import hasIPv6Loopback

net = support.net


class _Leg(Peer):
    """A peer that reports its own connection, as the relay's legs do."""

    onConnected: Any = None

    def connectionMade(self) -> None:
        super().connectionMade()
        if self.onConnected is not None:
            self.onConnected(self)


@pytest_twisted.ensureDeferred
async def test_it_fires_with_the_protocol_once_connected(net: Network) -> None:
    server, address = net.server()
    leg = _Leg()
    made = await within(connectFrom(reactor, address, None, leg, 5.0))
    assert made is leg
    assert isinstance(leg.transport, OutboundConnection)
    assert verifyObject(ITCPTransport, leg.transport)
    peer = leg.transport.getPeer()
    assert (peer.host, peer.port) == (address.host, address.port)
    accepted: Peer = await within(server.accepted.get())
    leg.send(b"out")
    assert await within(accepted.waitFor(3)) == b"out"


@pytest_twisted.ensureDeferred
async def test_it_leaves_from_the_source_asked_for(net: Network) -> None:
    _, address = net.server()
    leg = _Leg()
    await within(connectFrom(reactor, address, "127.0.0.2", leg, 5.0))
    assert leg.transport is not None
    assert leg.transport.getHost().host == "127.0.0.2"


@pytest_twisted.ensureDeferred
async def test_a_tuned_socket_has_its_options_before_it_connects(net: Network) -> None:
    _, address = net.server()
    leg = _Leg()
    await within(connectFrom(reactor, address, None, leg, 5.0, tune=True))
    transport: Any = leg.transport
    assert transport.tuned
    handle = transport.getHandle()
    assert handle.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    assert handle.getsockopt(socket.SOL_SOCKET, socket.SO_OOBINLINE)


@pytest_twisted.ensureDeferred
async def test_a_refused_connect_fails_with_twisteds_error(net: Network) -> None:
    closed = Address("127.0.0.1", net.freePort())
    with pytest.raises(error.ConnectionRefusedError):
        await within(connectFrom(reactor, closed, None, _Leg(), 5.0))


@pytest_twisted.ensureDeferred
async def test_a_connect_that_hangs_times_out_and_stops_watching(net: Network) -> None:
    target = net.unresponsive()
    attempt = connectOut(reactor, target.host, target.port, None, _Leg(), 0.2)
    with pytest.raises(error.TimeoutError):
        await within(attempt)
    watched = [getattr(w, "addr", None) for w in reactor.getWriters()]
    assert (target.host, target.port) not in watched


@pytest_twisted.ensureDeferred
async def test_a_source_that_cannot_be_bound_fails_on_a_later_turn(net: Network) -> None:
    _, address = net.server()
    attempt = connectOut(reactor, address.host, address.port, "192.0.2.1", _Leg(), 5.0)
    assert not attempt.called
    with pytest.raises(error.ConnectBindError):
        await within(attempt)


@pytest_twisted.ensureDeferred
async def test_a_cancel_after_connectionmade_closes_the_connection(net: Network) -> None:
    server, address = net.server()
    leg = _Leg()
    attempt = connectOut(reactor, address.host, address.port, None, leg, 5.0)
    attempt.addErrback(lambda _: None)
    leg.onConnected = lambda _: attempt.cancel()
    accepted: Peer = await within(server.accepted.get())
    await within(accepted.lost)
    await turns(1)
    assert leg.transport is not None and not leg.transport.connected


@pytest.mark.skipif(not hasIPv6Loopback(), reason="no IPv6 loopback (::1) on this machine")
@pytest_twisted.ensureDeferred
async def test_ipv6_literals_connect_over_ipv6(net: Network) -> None:
    _, address = net.server(host="::1")
    leg = _Leg()
    await within(connectFrom(reactor, address, None, leg, 5.0))
    assert leg.transport is not None
    assert leg.transport.getHost().host == "::1"
    assert leg.transport.getPeer().port == address.port
