"""listenQuietly: a permission's listener accepts as Twisted's does, and logs nothing
when it starts or stops."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import pytest_twisted
import support
from support import Network, PeerFactory
from twisted.internet import reactor
from twisted.internet.error import CannotListenError
from twisted.logger import globalLogPublisher

from fwxtwisted.address import Address
from fwxtwisted.net.quietport import listenQuietly
from tests.peers import hasIPv6Loopback

net = support.net


@pytest.fixture
def logged() -> Iterator[list[dict[str, Any]]]:
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    yield events
    globalLogPublisher.removeObserver(events.append)


@pytest_twisted.ensureDeferred
async def test_it_accepts_and_closes_without_a_log_line(
    net: Network, logged: list[dict[str, Any]]
) -> None:
    factory = PeerFactory()
    listening = listenQuietly(reactor, 0, factory, "127.0.0.1")
    client = await net.connect(Address("127.0.0.1", listening.getHost().port))
    client.transport.write(b"hello")
    server = await support.within(factory.accepted.get())
    assert await support.within(server.waitFor(5)) == b"hello"
    await listening.stopListening()
    assert [e for e in logged if "Port" in str(e.get("message", ""))] == []
    assert [e for e in logged if "starting on" in str(e.get("message", ""))] == []


def test_a_taken_port_is_a_cannot_listen_error(net: Network) -> None:
    taken = net.listenTCP(PeerFactory()).getHost().port
    with pytest.raises(CannotListenError):
        listenQuietly(reactor, taken, PeerFactory(), "127.0.0.1")


@pytest.mark.skipif(not hasIPv6Loopback(), reason="no IPv6 loopback here")
@pytest_twisted.ensureDeferred
async def test_it_listens_on_ipv6(net: Network) -> None:
    listening = listenQuietly(reactor, 0, PeerFactory(), "::1")
    try:
        assert listening.getHost().host == "::1"
    finally:
        await listening.stopListening()
