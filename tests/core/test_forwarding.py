"""ForwardingSessionFilter: a plain forward takes no firewall events, so none are
built for it; a filter built on it that handles them still hears every one."""

from __future__ import annotations

import pytest_twisted
import support
from support import Network, Peer, within
from twisted.internet.defer import Deferred

from fwxtwisted.filters.forwarding import ForwardingSessionFilter
from fwxtwisted.filters.tcp import TCPForwardFilter
from fwxtwisted.interfaces import FirewallEvent, FirewallNotification, ISession, ISessionFilter

net = support.net


class _Listening(ForwardingSessionFilter):
    def __init__(self, session: ISession, closed: Deferred[list[FirewallEvent]]) -> None:
        super().__init__(session)
        self.heard: list[FirewallEvent] = []
        self._closed = closed

    def firewallEvent(self, notification: FirewallNotification) -> None:
        self.heard.append(notification.event)
        if notification.event is FirewallEvent.CONNECTION_TERMINATING:
            self._closed.callback(self.heard)


class _ListeningFilter(TCPForwardFilter):
    def __init__(self) -> None:
        self.closed: Deferred[list[FirewallEvent]] = Deferred()

    def attachToSession(self, session: ISession) -> ISessionFilter:
        return _Listening(session, self.closed)


def test_a_plain_forward_takes_no_events() -> None:
    assert ForwardingSessionFilter(None).wantsFirewallEvents is False  # type: ignore[arg-type]


def test_a_filter_that_handles_events_takes_them() -> None:
    assert _Listening(None, Deferred()).wantsFirewallEvents is True  # type: ignore[arg-type]


@pytest_twisted.ensureDeferred
async def test_a_filter_built_on_the_forward_hears_connect_and_close(net: Network) -> None:
    upstream, upstreamAddress = net.server()
    listening = _ListeningFilter()
    running = net.startGateway(listening, upstream=upstreamAddress)
    client: Peer = await net.connect(running.address, peer=Peer(closeOnEOF=False))
    client.send(b"x")
    server: Peer = await within(upstream.accepted.get())
    assert await within(server.waitFor(1)) == b"x"
    client.shutdownWrite()
    await within(client.eof)
    heard = await within(listening.closed)
    assert heard[0] is FirewallEvent.CONNECT_TCP
    assert heard[-1] is FirewallEvent.CONNECTION_TERMINATING
