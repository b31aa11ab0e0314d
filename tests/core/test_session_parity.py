"""The same filter-author scenarios on FakeSession and on a real Session over loopback:
what a filter sees of one must be what it sees of the other."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pytest
import pytest_twisted
import support
from support import Network, Peer, RecordingFilter, RecordingSessionFilter, within
from twisted.internet.defer import Deferred

from fwxtwisted.address import Address
from fwxtwisted.errors import SessionClosed, TooManyPendingRedirects
from fwxtwisted.interfaces import (
    ActionState,
    Direction,
    FirewallEvent,
    IDataFilter,
    Redirection,
    Transport,
)
from fwxtwisted.relay.linefilter import LineDataFilter
from fwxtwisted.settings import GatewaySettings
from fwxtwisted.testing import FakeSession

net = support.net

PENDING_LIMIT = 2


class Shout(LineDataFilter):
    """Server lines upper-cased."""

    directions = (Direction.SERVER_TO_CLIENT,)

    def lineReceived(self, direction: Direction, line: bytes) -> bytes:
        return line.upper()


def shouting(_: RecordingSessionFilter) -> Sequence[tuple[int, IDataFilter]]:
    return [(0, Shout())]


class Driver:
    """One side of the comparison: a session with a recording filter and its upstream
    connected, and the peers' bytes."""

    sessionFilter: RecordingSessionFilter

    async def start(self, dataFilters: Callable[..., Any] | None = None) -> None:
        raise NotImplementedError

    async def serverSends(self, data: bytes) -> None:
        raise NotImplementedError

    async def clientGets(self, size: int) -> bytes:
        raise NotImplementedError

    @property
    def session(self) -> Any:
        return self.sessionFilter.session


class FakeDriver(Driver):
    def __init__(self) -> None:
        self.fake = FakeSession(autoGrant=True, maxPendingRedirects=PENDING_LIMIT)

    async def start(self, dataFilters: Callable[..., Any] | None = None) -> None:
        recording = RecordingFilter(connectUpstream=True, dataFilters=dataFilters)
        self.sessionFilter = self.fake.attachFilter(recording)  # type: ignore[assignment]
        self.fake.succeedUpstream()

    async def serverSends(self, data: bytes) -> None:
        self.fake.serverSends(data)

    async def clientGets(self, size: int) -> bytes:
        assert len(self.fake.toClient) >= size
        return self.fake.toClient


class RealDriver(Driver):
    def __init__(self, net: Network) -> None:
        self.net = net

    async def start(self, dataFilters: Callable[..., Any] | None = None) -> None:
        recording = RecordingFilter(connectUpstream=True, dataFilters=dataFilters)
        servers, upstream = self.net.server()
        settings = GatewaySettings(maxPendingRedirects=PENDING_LIMIT)
        running = self.net.startGateway(recording, settings, upstream=upstream)
        client, self.sessionFilter = await self.net.openSession(running, recording)
        self.client: Peer = client
        assert self.sessionFilter.upstream is not None
        await within(self.sessionFilter.upstream)
        self.server: Peer = await within(servers.accepted.get())

    async def serverSends(self, data: bytes) -> None:
        self.server.send(data)

    async def clientGets(self, size: int) -> bytes:
        return await within(self.client.waitFor(size))


@pytest.fixture(params=["fake", "real"])
def driver(request: pytest.FixtureRequest, net: Network) -> Driver:
    return FakeDriver() if request.param == "fake" else RealDriver(net)


def failureType(deferred: Deferred[Any]) -> type[BaseException] | None:
    """The exception a Deferred has already failed with (handled), None if it has not."""
    failures: list[Any] = []
    deferred.addErrback(failures.append)
    return type(failures[0].value) if failures else None


def resultOf(deferred: Deferred[Any]) -> Any:
    results: list[Any] = []
    deferred.addCallback(results.append)
    assert results, "not fired"
    return results[0]


@pytest_twisted.ensureDeferred
async def test_connect_event_comes_before_the_upstream_result(driver: Driver) -> None:
    await driver.start()
    [connected] = driver.sessionFilter.notifications
    assert connected.event is FirewallEvent.CONNECT_TCP
    assert connected.action is None
    assert connected.serverAddress == driver.session.serverAddress
    assert connected.clientAddress == driver.session.clientAddress


@pytest_twisted.ensureDeferred
async def test_redirect_is_granted_synchronously(driver: Driver) -> None:
    await driver.start()
    server = driver.session.serverAddress
    targets = [server.withPort(4000), server.withPort(4001)]
    redirection: Redirection = resultOf(driver.session.redirectConnections(targets, context="ctx"))
    first, second = redirection.actions
    assert second.internalAddress.port == first.internalAddress.port + 1
    assert redirection.internalAddress == first.internalAddress
    assert redirection.internalAddress.host == driver.session.internalAddress.host
    assert [a.connectAddress for a in redirection.actions] == targets
    assert first.expectedPeer == driver.session.clientAddress.host
    assert first.externalAddress == driver.session.externalAddress
    assert (first.state, first.context) == (ActionState.LISTENING, "ctx")


@pytest_twisted.ensureDeferred
async def test_refusals_are_failed_deferreds(driver: Driver) -> None:
    await driver.start()
    session = driver.session
    server: Address = session.serverAddress
    assert failureType(session.redirectConnections([])) is ValueError
    udpWithFilter = session.redirectConnections(
        [server], transport=Transport.UDP, dataFilterFactory=lambda: []
    )
    assert failureType(udpWithFilter) is ValueError
    assert failureType(session.redirectConnections([server, server])) is None
    assert failureType(session.redirectConnections([server])) is TooManyPendingRedirects
    session.close("done")
    await within(driver.sessionFilter.detached)
    assert failureType(session.redirectConnections([server])) is SessionClosed


@pytest_twisted.ensureDeferred
async def test_close_sends_terminating_then_detaches(driver: Driver) -> None:
    await driver.start()
    driver.session.close("filter says so")
    await within(driver.sessionFilter.detached)
    last = driver.sessionFilter.notifications[-1]
    assert last.event is FirewallEvent.CONNECTION_TERMINATING
    assert last.action is None
    assert last.reason == "filter says so"
    assert driver.session.closed


@pytest_twisted.ensureDeferred
async def test_a_line_filter_rewrites_the_server_lines(driver: Driver) -> None:
    await driver.start(shouting)
    await driver.serverSends(b"hello\r\nwor")
    await driver.serverSends(b"ld\n")
    assert await driver.clientGets(13) == b"HELLO\r\nWORLD\n"
