"""A session's one info event: at its end, with who, where, how long and how much."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import pytest_twisted
import support
from support import Network, Peer, within
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.logger import LogEvent, LogLevel, formatEvent, globalLogPublisher

from fwxtwisted.filters.tcp import tcpFilter

net = support.net


@pytest.fixture
def sessionEvents() -> Iterator[list[LogEvent]]:
    """Every event from fwxtwisted.permissions.session at info or above, while the test runs."""
    events: list[LogEvent] = []

    def observe(event: LogEvent) -> None:
        if event.get("log_namespace") == "fwxtwisted.permissions.session":
            events.append(event)

    globalLogPublisher.addObserver(observe)
    yield events
    globalLogPublisher.removeObserver(observe)


async def closedEvent(events: list[LogEvent]) -> LogEvent:
    for _ in range(200):
        closed = [e for e in events if e.get("fwx_event") == "session.closed"]
        if closed:
            return closed[0]
        waited: Deferred[None] = Deferred()
        reactor.callLater(0.01, waited.callback, None)
        await waited
    raise AssertionError("no session.closed event within 2 s")


@pytest_twisted.ensureDeferred
async def test_a_forwarded_session_ends_with_one_structured_event(
    net: Network, sessionEvents: list[LogEvent]
) -> None:
    upstream, upstreamAddress = net.server()
    running = net.startGateway(tcpFilter, upstream=upstreamAddress)
    client: Peer = await net.connect(running.address, peer=Peer(closeOnEOF=False))
    client.send(b"hello")
    server: Peer = await within(upstream.accepted.get())
    assert await within(server.waitFor(5)) == b"hello"
    server.send(b"bye!")
    assert await within(client.waitFor(4)) == b"bye!"
    client.shutdownWrite()
    await within(client.eof)
    event = await closedEvent(sessionEvents)
    assert event["log_level"] is LogLevel.info
    local = client.transport.getHost()  # type: ignore[union-attr]
    assert event["client"] == f"{local.host}:{local.port}"
    assert event["server"] == str(upstreamAddress)
    assert event["listener"] == "test"
    assert (event["fromClient"], event["fromServer"]) == (5, 4)
    assert event["reason"] == "normal close"
    assert 0 <= event["duration"] < 10
    text = formatEvent(event)
    assert text.endswith(f"after {event['duration']:.3f} s: 5 bytes from client, 4 from server")
    infos = [e for e in sessionEvents if e["log_level"] is LogLevel.info]
    assert infos == [event]
