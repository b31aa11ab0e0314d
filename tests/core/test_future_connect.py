"""allowFutureConnect over real loopback sockets, the kernel played by the test: the
nftables table is a recording fake, and the redirect's original destination is
patched in (tests/transparent/test_netns_future.py does it for real, as root)."""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted
import support
from support import LOCAL, Network, Peer, recordingSession, within
from twisted.internet import reactor
from twisted.internet.defer import Deferred, succeed
from zope.interface.verify import verifyObject

from fwxtwisted.address import Address
from fwxtwisted.errors import FWXError
from fwxtwisted.interfaces import ActionState, FirewallEvent, IFirewallAction, RedirectFlags
from fwxtwisted.net import origdst
from fwxtwisted.permissions.future import FutureConnects
from fwxtwisted.relay import splice

net = support.net


class FakeTable:
    """Records what the gateway would tell the kernel."""

    name = "fake"

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def setup(self, port4: int | None, port6: int | None) -> None:
        self.calls.append(("setup", port4, port6))

    def teardown(self) -> None:
        self.calls.append(("teardown",))

    def add(self, source: Address, destination: Address, timeout: float | None) -> Deferred[None]:
        self.calls.append(("add", str(source), str(destination), timeout))
        return succeed(None)

    def delete(self, source: Address, destination: Address) -> Deferred[None]:
        self.calls.append(("delete", str(source), str(destination)))
        return succeed(None)


@pytest.fixture
def redirectedTo(monkeypatch: pytest.MonkeyPatch) -> list[Address]:
    """The original destination every intercepted connection reports (set by the test)."""
    target: list[Address] = []
    monkeypatch.setattr(origdst, "originalDestination", lambda handle: target[0])
    return target


@pytest_twisted.ensureDeferred
async def test_permitted_flow_passes_once(net: Network, redirectedTo: list[Address]) -> None:
    sessionFilter = await recordingSession(net)
    session = sessionFilter.session
    table = FakeTable()
    registry = FutureConnects(reactor, table)  # type: ignore[arg-type]
    registry.start(LOCAL, "::1")
    session._gateway.futureConnects = registry
    try:
        servers, destination = net.server()
        redirectedTo.append(destination)
        action = await within(
            session.allowFutureConnect(Address(LOCAL, 0), destination, context="ctx")
        )
        assert verifyObject(IFirewallAction, action)
        assert action.internalAddress == destination and action.expectedPeer == LOCAL
        assert table.calls[-1] == ("add", f"{LOCAL}:0", str(destination), 65.0)

        client: Peer = await net.connect(Address(LOCAL, registry.port4))
        client.send(b"ping")
        server: Peer = await within(servers.accepted.get())
        assert await within(server.waitFor(4)) == b"ping"
        server.send(b"pong")
        assert await within(client.waitFor(4)) == b"pong"
        # Single use: gone from the kernel and the gateway as it was accepted.
        assert action.state is ActionState.USED
        assert table.calls[-1] == ("delete", f"{LOCAL}:0", str(destination))
        assert registry.permitted == 0

        second: Peer = await net.connect(Address(LOCAL, registry.port4))
        await within(second.lost)
        assert second.received == b""
        assert servers.accepted.pending == []

        client.transport.loseConnection()  # type: ignore[union-attr]
        ended = await within(sessionFilter.waitFor(FirewallEvent.CONNECTION_TERMINATING, 1))
        assert ended.context == "ctx" and ended.counts.fromClient == 4
        established = sessionFilter.events(FirewallEvent.ESTABLISHED_CONNECTION)[-1]
        assert established.action is action
        assert established.fastPath is splice.available()  # as eligible as a redirect
        events = {n.event for n in sessionFilter.notifications if n.action is action}
        assert events >= {
            FirewallEvent.ACCEPTED_CONNECTION,
            FirewallEvent.CONNECT_TCP,
            FirewallEvent.ESTABLISHED_CONNECTION,
            FirewallEvent.CONNECTION_TERMINATING,
        }
    finally:
        session._gateway.futureConnects = None
        registry.stop()
    assert table.calls[-1] == ("teardown",)


@pytest_twisted.ensureDeferred
async def test_wrong_source_port_and_cancel(net: Network, redirectedTo: list[Address]) -> None:
    sessionFilter = await recordingSession(net)
    session = sessionFilter.session
    table = FakeTable()
    registry = FutureConnects(reactor, table)  # type: ignore[arg-type]
    registry.start(LOCAL, "::1")
    session._gateway.futureConnects = registry
    try:
        _, destination = net.server()
        action = await within(
            session.allowFutureConnect(
                Address(LOCAL, 1), destination, flags=RedirectFlags.ALLOW_MULTIPLE
            )
        )
        assert table.calls[-1] == ("add", f"{LOCAL}:1", str(destination), None)
        with pytest.raises(FWXError, match="permitted already"):
            await session.allowFutureConnect(Address(LOCAL, 1), destination)
        # Its source port is not 1: refused by the gateway too.
        assert registry.decide(Address(LOCAL, 40000), destination) is None
        action.cancel()
        assert await within(action.whenFinished()) is ActionState.CANCELLED
        assert table.calls[-1] == ("delete", f"{LOCAL}:1", str(destination))
    finally:
        session._gateway.futureConnects = None
        registry.stop()


@pytest_twisted.ensureDeferred
async def test_without_table_fails_clearly(net: Network) -> None:
    sessionFilter = await recordingSession(net)
    with pytest.raises(FWXError, match="nftables table"):
        await sessionFilter.session.allowFutureConnect(Address(LOCAL, 0), Address("192.0.2.1", 80))
