"""A finished connection leaves nothing in a reference cycle: its session, relay and
legs are freed as it ends, without waiting for the cyclic garbage collector (which
would otherwise run over every short connection's objects)."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest
import pytest_twisted
import support
from support import Network, Peer, within
from twisted.internet import reactor
from twisted.internet.task import deferLater

from fwxtwisted.filters.tcp import tcpFilter
from fwxtwisted.interfaces import Side

net = support.net


@pytest.fixture
def collectorOff() -> Iterator[None]:
    """The cyclic collector stopped: what is freed is freed by reference counting."""
    wasEnabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if wasEnabled:
            gc.enable()


@pytest_twisted.ensureDeferred
async def test_a_finished_tcp_connection_is_freed_without_the_collector(
    net: Network, collectorOff: None
) -> None:
    upstream, upstreamAddress = net.server()
    running = net.startGateway(tcpFilter, upstream=upstreamAddress)
    client: Peer = await net.connect(running.address, peer=Peer())
    client.send(b"x")
    server: Peer = await within(upstream.accepted.get())
    assert await within(server.waitFor(1)) == b"x"
    (session,) = running.service.factories[0].sessions
    legs = [session.primary.leg(side) for side in Side]
    watched = [weakref.ref(o) for o in (session, session.primary, *legs)]
    closed = session.whenClosed()
    del session, legs

    client.shutdownWrite()
    await within(closed)
    assert await within(client.eof) == b""
    # The close is reported from inside the last leg's connectionLost: let it return.
    await deferLater(reactor, 0, lambda: None)

    alive = [ref() for ref in watched if ref() is not None]
    assert alive == [], f"still referenced after the close: {alive!r}"
