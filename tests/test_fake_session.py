"""FakeSession behaves like Session: synchronous grants, the primary's events, the same
refusals, the relay's own filter chain; and fwxtwisted.testing's public names."""

from __future__ import annotations

from collections.abc import Mapping

import pytest
from twisted.python import usage
from zope.interface import implementer

import fwxtwisted.testing
from fwxtwisted.address import Address
from fwxtwisted.errors import ConfigError, FWXError, SessionClosed, TooManyPendingRedirects
from fwxtwisted.filters.forwarding import ForwardingSessionFilter
from fwxtwisted.interfaces import (
    ActionState,
    ByteCounts,
    Connect,
    Direction,
    FirewallEvent,
    FirewallNotification,
    IFilter,
    ISession,
    ISessionFilter,
    Listen,
    RedirectFlags,
    Side,
    Transport,
)
from fwxtwisted.relay.datafilter import PassThroughDataFilter
from fwxtwisted.relay.filterchain import FilterChain
from fwxtwisted.testing import FakeSession
from tests.test_testing import RecordingSessionFilter, failureOf, resultOf

SERVER = Address("203.0.113.50", 2100)


@implementer(IFilter)
class OptionsFilter:
    """Parses one option, "greeting", which must be bytes-able text."""

    name = "options"
    description = "parses options"
    protocols = ()

    def __init__(self) -> None:
        self.sessionFilter = RecordingSessionFilter()
        self.parsed: list[tuple[Mapping[str, object], Address | None]] = []

    def parseOptions(self, options: Mapping[str, object], upstream: Address | None) -> object:
        self.parsed.append((options, upstream))
        if not isinstance(options.get("greeting", ""), str):
            raise ConfigError("greeting: must be a string")
        return {"greeting": options.get("greeting", "hi")}

    def commandLineOptions(self) -> usage.Options | None:
        return None

    def attachToSession(self, session: ISession) -> ISessionFilter:
        return self.sessionFilter


def events(sessionFilter: RecordingSessionFilter) -> list[FirewallEvent]:
    return [n.event for n in sessionFilter.events]


def test_publicNamesAreTheRealObjects() -> None:
    """Every name in __all__ is there, and is the object of its private module."""
    from fwxtwisted.testing import _actions, _calls, _chain, _datagrams, _future, _session

    assert sorted(fwxtwisted.testing.__all__) == sorted(set(fwxtwisted.testing.__all__))
    origins = {}
    for module in (_actions, _calls, _chain, _datagrams, _future, _session):
        for name in dir(module):
            origins.setdefault(name, getattr(module, name))
    for name in fwxtwisted.testing.__all__:
        assert getattr(fwxtwisted.testing, name) is origins[name], name
    assert fwxtwisted.testing.FakeSession is _session.FakeSession
    public = {n for n in vars(fwxtwisted.testing) if not n.startswith("_")}
    assert public - set(fwxtwisted.testing.__all__) <= {"annotations"}


def test_forFilterParsesOptions() -> None:
    plugin = OptionsFilter()
    session = FakeSession.forFilter(plugin, {"greeting": "hello"}, upstream=SERVER)
    assert plugin.parsed == [({"greeting": "hello"}, SERVER)]
    assert session.options == {"greeting": "hello"}
    assert session.defaultUpstream == SERVER
    assert session.sessionFilter is plugin.sessionFilter
    assert plugin.sessionFilter.started == 1
    with pytest.raises(ConfigError, match="^greeting:"):
        FakeSession.forFilter(OptionsFilter(), {"greeting": 3})


def test_chainIsTheRelaysFilterChain() -> None:
    session = FakeSession()
    session.attachDataFilter(PassThroughDataFilter())
    assert isinstance(session._chain, FilterChain)


def test_autoGrantIsSynchronous() -> None:
    session = FakeSession(autoGrant=True, firstPort=41000)
    first = session.redirectConnections([SERVER, SERVER.withPort(2101)])
    redirection = resultOf(first)
    assert [a.internalAddress.port for a in redirection.actions] == [41000, 41001]
    assert redirection.internalAddress == session.internalAddress.withPort(41000)
    second = resultOf(session.redirectConnections([SERVER]))
    assert second.internalAddress.port == 41002
    asked = resultOf(session.redirectConnections([SERVER], Address("198.51.100.1", 2020)))
    assert asked.internalAddress == Address("198.51.100.1", 2020)
    join = resultOf(session.joinConnections(Listen("198.51.100.1", "192.0.2.10"), Connect(SERVER)))
    assert join.listeningAddresses == {Side.CLIENT: Address("198.51.100.1", 41003)}


def test_refusedLikeTheRealSession() -> None:
    session = FakeSession(maxPendingRedirects=2)
    assert failureOf(session.redirectConnections([])).check(ValueError)
    udpWithFilter = session.redirectConnections(
        [SERVER], transport=Transport.UDP, dataFilterFactory=lambda: []
    )
    assert failureOf(udpWithFilter).check(ValueError)
    session.redirectConnections([SERVER, SERVER])
    assert failureOf(session.redirectConnections([SERVER])).check(TooManyPendingRedirects)
    assert failureOf(session.joinConnections(Connect(SERVER), Connect(SERVER))).check(
        TooManyPendingRedirects
    )
    assert len(session.redirectCalls) == 1
    [first, _] = session.redirectCalls[0].grant(40000).actions
    first.cancel()
    assert not session.redirectConnections([SERVER]).called


def test_primaryEvents() -> None:
    """CONNECT_TCP before the upstream Deferred fires, CONNECTION_TERMINATING with the
    byte counts before detach()."""
    session = FakeSession()
    sessionFilter = RecordingSessionFilter()
    session.sessionFilter = sessionFilter
    seen: list[list[FirewallEvent]] = []
    session.connectUpstream().addCallback(lambda _: seen.append(events(sessionFilter)))
    session.succeedUpstream()
    assert seen == [[FirewallEvent.CONNECT_TCP]]
    [connected] = sessionFilter.events
    assert (connected.action, connected.clientAddress, connected.serverAddress) == (
        None,
        session.clientAddress,
        session.defaultUpstream,
    )
    session.clientSends(b"abc")
    session.serverSends(b"de")
    session.close()
    terminating = sessionFilter.events[-1]
    assert terminating.event is FirewallEvent.CONNECTION_TERMINATING
    assert terminating.counts == ByteCounts(3, 2)
    assert terminating.reason == "closed by the gateway"
    assert sessionFilter.detached == 1


def test_connectFailedEvent() -> None:
    session = FakeSession()
    sessionFilter = RecordingSessionFilter()
    session.sessionFilter = sessionFilter
    failing = session.connectUpstream()
    session.failUpstream()
    [failed] = sessionFilter.events
    assert failed.event is FirewallEvent.CONNECT_FAILED
    assert failed.reason == f"connection to {session.defaultUpstream} refused"
    assert failureOf(failing).check(FWXError)


def test_legClosedThenTerminating() -> None:
    """The server leg lost: LEG_CLOSED while the client can still be written to, then
    the session ends with the reason the real one gives."""
    session = FakeSession()
    written: list[bytes] = []

    class Greeter(RecordingSessionFilter):
        def firewallEvent(self, notification: FirewallNotification) -> None:
            super().firewallEvent(notification)
            if notification.event is FirewallEvent.LEG_CLOSED:
                stage.write(Direction.SERVER_TO_CLIENT, b"421 bye\r\n")
                written.append(session.toClient)

    stage = PassThroughDataFilter()
    sessionFilter = Greeter()
    session.sessionFilter = sessionFilter
    session.attachDataFilter(stage)
    session.connectUpstream()
    session.succeedUpstream()
    session.serverDisconnects("Connection reset by peer")
    assert written == [b"421 bye\r\n"]
    assert events(sessionFilter) == [
        FirewallEvent.CONNECT_TCP,
        FirewallEvent.LEG_CLOSED,
        FirewallEvent.CONNECTION_TERMINATING,
    ]
    legClosed = sessionFilter.events[1]
    assert (legClosed.side, legClosed.reason) == (Side.SERVER, "Connection reset by peer")
    assert sessionFilter.events[2].reason == "server connection lost: Connection reset by peer"
    assert session.closed


def test_cleanClientCloseBeforeUpstream() -> None:
    """No server leg yet: no LEG_CLOSED; a clean close has no reason."""
    session = FakeSession()
    sessionFilter = RecordingSessionFilter()
    session.sessionFilter = sessionFilter
    upstream = session.connectUpstream()
    session.clientDisconnects()
    assert events(sessionFilter) == [FirewallEvent.CONNECTION_TERMINATING]
    assert sessionFilter.events[0].reason is None
    assert failureOf(upstream).check(SessionClosed)


def test_shutdown() -> None:
    session = FakeSession()
    sessionFilter = RecordingSessionFilter()
    session.sessionFilter = sessionFilter
    session.shutdown()
    assert not session.closed
    session.shutdown(final=True)
    assert [n.reason for n in sessionFilter.events] == [
        "draining",
        "grace period over",
        "gateway shutting down",
    ]
    assert session.closeReason == "gateway shutting down"


def test_filterDecliningPrimaryEvents() -> None:
    """wantsFirewallEvents False: no CONNECT_TCP, LEG_CLOSED or CONNECTION_TERMINATING;
    CONNECT_FAILED and GATEWAY_SHUTDOWN still come."""
    seen: list[FirewallEvent] = []

    class Quiet(ForwardingSessionFilter):
        wantsFirewallEvents = False

        def firewallEvent(self, notification: FirewallNotification) -> None:
            seen.append(notification.event)

    session = FakeSession()
    session.sessionFilter = Quiet(session)
    session.connectUpstream()
    session.succeedUpstream()
    session.shutdown()
    session.serverDisconnects()
    assert seen == [FirewallEvent.GATEWAY_SHUTDOWN]


def test_permissionEvents() -> None:
    session = FakeSession(autoGrant=True)
    sessionFilter = RecordingSessionFilter()
    session.sessionFilter = sessionFilter
    [tcp] = resultOf(session.redirectConnections([SERVER], context="tcp")).actions
    session.connectThrough(tcp)
    assert tcp.state is ActionState.USED and tcp.connectionCount == 1
    session.endConnection(tcp, counts=ByteCounts(1, 2))
    assert resultOf(tcp.whenFinished()) is ActionState.USED
    [udp] = resultOf(
        session.redirectConnections([SERVER], transport=Transport.UDP, context="udp")
    ).actions
    peer = Address("192.0.2.10", 5004)
    session.mapUDPPeer(udp, peer)
    assert events(sessionFilter) == [
        FirewallEvent.ACCEPTED_CONNECTION,
        FirewallEvent.CONNECT_TCP,
        FirewallEvent.ESTABLISHED_CONNECTION,
        FirewallEvent.CONNECTION_TERMINATING,
        FirewallEvent.UDP_DESTINATION,
    ]
    mapped = sessionFilter.events[-1]
    assert (mapped.action, mapped.context, mapped.clientAddress, mapped.serverAddress) == (
        udp,
        "udp",
        peer,
        SERVER,
    )
    assert sessionFilter.events[3].counts == ByteCounts(1, 2)
    assert udp.state is ActionState.USED
    flags = RedirectFlags.ALLOW_MULTIPLE
    [multiple] = resultOf(session.redirectConnections([SERVER], flags=flags)).actions
    session.connectThrough(multiple)
    assert multiple.state is ActionState.LISTENING


def test_allowFutureConnectRecordedAndAnswered() -> None:
    """allowFutureConnect waits in allowCalls for grant()/fail(); the action routes its
    events to the session filter the call named, and close cancels it."""
    session = FakeSession()
    other = RecordingSessionFilter()
    session.sessionFilter = RecordingSessionFilter()
    source, destination = Address("::ffff:192.0.2.10", 0), Address("203.0.113.50", 2121)
    waiting = session.allowFutureConnect(source, destination, context="data", sessionFilter=other)
    [call] = session.allowCalls
    assert call.pending and not waiting.called
    assert call.source == Address("192.0.2.10", 0)  # normalized, as the real session does
    action = call.grant()
    assert resultOf(waiting) is action and session.actions == [action]
    assert (action.internalAddress, action.connectAddress) == (destination, destination)
    assert action.expectedPeer == "192.0.2.10" and action.context == "data"
    assert action.externalAddress == session.externalAddress
    session.connectThrough(action)
    assert events(other)[0] is FirewallEvent.ACCEPTED_CONNECTION
    assert session.sessionFilter.events == []
    failing = session.allowFutureConnect(source, destination.withPort(2122))
    session.allowCalls[-1].fail(FWXError("no nftables table"))
    assert failureOf(failing).check(FWXError)
    pending = session.allowFutureConnect(source, destination.withPort(2123))
    session.close("over")
    assert failureOf(pending).check(SessionClosed)
    assert action.state is ActionState.CANCELLED
    late = session.allowFutureConnect(source, destination)
    assert failureOf(late).check(SessionClosed) and len(session.allowCalls) == 4


def test_allowFutureConnectAutoGrantAndRefusals() -> None:
    session = FakeSession(autoGrant=True, maxPendingRedirects=1)
    client = Address("192.0.2.10", 0)
    for source, destination, transport in (
        (client, Address("203.0.113.50", 53), Transport.UDP),
        (client, Address("ftp.example", 21), Transport.TCP),
        (client, Address("2001:db8::1", 21), Transport.TCP),
        (client, Address("203.0.113.50", 0), Transport.TCP),
    ):
        refused = session.allowFutureConnect(source, destination, transport=transport)
        assert failureOf(refused).check(ValueError), destination
    assert session.allowCalls == []
    action = resultOf(session.allowFutureConnect(client, Address("203.0.113.50", 21)))
    assert action.state is ActionState.LISTENING and session.allowCalls[0].action is action
    crowded = session.allowFutureConnect(client, Address("203.0.113.50", 22))
    assert failureOf(crowded).check(TooManyPendingRedirects)
