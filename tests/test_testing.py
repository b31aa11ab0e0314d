"""Tests for fwxtwisted.testing (FakeSession, FakeFirewallAction) and PassThroughDataFilter."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionRefusedError
from twisted.python import usage
from twisted.python.failure import Failure
from zope.interface import implementer
from zope.interface.verify import verifyObject

from fwxtwisted.address import Address
from fwxtwisted.errors import FWXError, PortRangeExhausted, SessionClosed
from fwxtwisted.interfaces import (
    ActionState,
    Connect,
    Direction,
    FirewallEvent,
    FirewallNotification,
    IDataChannel,
    IDataFilter,
    IFilter,
    IFirewallAction,
    IJoin,
    ISession,
    ISessionFilter,
    Listen,
    RedirectFlags,
    Redirection,
    Side,
    Transport,
)
from fwxtwisted.relay.datafilter import PassThroughDataFilter
from fwxtwisted.testing import FakeFirewallAction, FakeJoin, FakeSession

T = TypeVar("T")

C2S = Direction.CLIENT_TO_SERVER
S2C = Direction.SERVER_TO_CLIENT
SERVER = Address("203.0.113.50", 2100)


def resultOf(deferred: Deferred[T]) -> T:
    """The result a Deferred has already fired with."""
    results: list[T] = []
    deferred.addCallback(results.append)
    assert results, f"{deferred!r} has not fired"
    return results[0]


def failureOf(deferred: Deferred[T]) -> Failure:
    """The Failure a Deferred has already failed with (now handled)."""
    failures: list[Failure] = []
    deferred.addErrback(failures.append)
    assert failures, f"{deferred!r} has not failed"
    return failures[0]


class TagFilter(PassThroughDataFilter):
    """Appends its tag to every chunk it passes on, and logs its life."""

    def __init__(self, tag: bytes, log: list[str]) -> None:
        self.tag = tag
        self.log = log

    def dataReceived(self, direction: Direction, data: bytes) -> None:
        self.write(direction, data + self.tag)

    def eofReceived(self, direction: Direction) -> None:
        self.log.append(f"eof {self.tag.decode()} {direction.value}")
        self.writeEOF(direction)

    def detached(self) -> None:
        self.log.append(f"detached {self.tag.decode()}")
        super().detached()


class HoldingFilter(PassThroughDataFilter):
    """Keeps server bytes and the server EOF until released."""

    def __init__(self) -> None:
        self.held = b""
        self.eof = False

    def dataReceived(self, direction: Direction, data: bytes) -> None:
        if direction is S2C:
            self.held += data
        else:
            self.write(direction, data)

    def eofReceived(self, direction: Direction) -> None:
        if direction is S2C:
            self.eof = True
        else:
            self.writeEOF(direction)

    def release(self) -> None:
        self.write(S2C, self.held)
        if self.eof:
            self.writeEOF(S2C)


@implementer(ISessionFilter)
class RecordingSessionFilter:
    """Records everything the session tells it."""

    def __init__(self) -> None:
        self.started = 0
        self.events: list[FirewallNotification] = []
        self.detached = 0

    def sessionStarted(self) -> None:
        self.started += 1

    def firewallEvent(self, notification: FirewallNotification) -> None:
        self.events.append(notification)

    def detach(self) -> None:
        self.detached += 1


@implementer(IFilter)
class RecordingFilter:
    """An IFilter handing out one RecordingSessionFilter."""

    name = "recording"
    description = "records"
    protocols = ()

    def __init__(self) -> None:
        self.sessionFilter = RecordingSessionFilter()
        self.sessions: list[ISession] = []

    def parseOptions(self, options: Mapping[str, object], upstream: Address | None) -> object:
        return options

    def commandLineOptions(self) -> usage.Options | None:
        return None

    def attachToSession(self, session: ISession) -> ISessionFilter:
        self.sessions.append(session)
        return self.sessionFilter


def test_interfaces() -> None:
    session = FakeSession()
    session.attachDataFilter(PassThroughDataFilter())
    action = FakeFirewallAction(Address("198.51.100.1", 40000), SERVER.withPort(4000))
    assert verifyObject(ISession, session)
    assert verifyObject(IFirewallAction, action)
    assert verifyObject(IDataChannel, session.dataFilters[0].channel)
    assert verifyObject(IDataFilter, PassThroughDataFilter())
    join = FakeJoin(Listen("198.51.100.1", "192.0.2.10"), Connect(SERVER), {})
    assert verifyObject(IJoin, join)


def test_attachFilter() -> None:
    filterPlugin = RecordingFilter()
    session = FakeSession()
    assert session.attachFilter(filterPlugin) is filterPlugin.sessionFilter
    assert filterPlugin.sessions == [session]
    assert session.sessionFilter is filterPlugin.sessionFilter
    assert filterPlugin.sessionFilter.started == 1


def test_noFilterPassesBytes() -> None:
    session = FakeSession()
    session.clientSends(b"hello")
    session.serverSends(b"world")
    session.clientEOF()
    assert (session.toServer, session.toClient) == (b"hello", b"world")
    assert session.toServerEOF and not session.toClientEOF


def test_chainOrder() -> None:
    """Lower priorities see client bytes first and server bytes last; equal priorities
    go in attach order."""
    log: list[str] = []
    session = FakeSession()
    session.attachDataFilter(TagFilter(b"B", log), priority=10)
    session.attachDataFilter(TagFilter(b"A", log), priority=0)
    session.attachDataFilter(TagFilter(b"C", log), priority=10)
    assert [stage.priority for stage in session.dataFilters] == [0, 10, 10]
    session.clientSends(b"x")
    session.serverSends(b"y")
    assert session.toServer == b"xABC"
    assert session.toClient == b"yCBA"


def test_eofThroughChain() -> None:
    log: list[str] = []
    session = FakeSession()
    session.attachDataFilter(TagFilter(b"A", log), priority=0)
    session.attachDataFilter(TagFilter(b"B", log), priority=1)
    session.clientEOF()
    session.serverEOF()
    assert log == ["eof A c2s", "eof B c2s", "eof B s2c", "eof A s2c"]
    assert session.toServerEOF and session.toClientEOF


def test_heldEOF() -> None:
    """A filter that keeps the EOF keeps it from the peer until it passes it on."""
    session = FakeSession()
    holder = HoldingFilter()
    session.attachDataFilter(holder)
    session.serverSends(b"late")
    session.serverEOF()
    assert (session.toClient, session.toClientEOF) == (b"", False)
    holder.release()
    assert (session.toClient, session.toClientEOF) == (b"late", True)


def test_writeAfterEOF() -> None:
    session = FakeSession()
    holder = HoldingFilter()
    session.attachDataFilter(holder)
    session.clientEOF()
    with pytest.raises(RuntimeError):
        holder.write(C2S, b"more")
    with pytest.raises(RuntimeError):
        session.clientSends(b"more")
    with pytest.raises(RuntimeError):
        session.clientEOF()


def test_bytesOnly() -> None:
    session = FakeSession()
    holder = HoldingFilter()
    session.attachDataFilter(holder)
    with pytest.raises(TypeError):
        holder.write(S2C, "text")  # type: ignore[arg-type]


def test_redirectCallRecorded() -> None:
    session = FakeSession()
    sessionFilter = RecordingSessionFilter()
    connect = [SERVER.withPort(4000), SERVER.withPort(4001)]
    deferred = session.redirectConnections(
        connect, flags=RedirectFlags.NONE, sessionFilter=sessionFilter, context="ctx"
    )
    [call] = session.redirectCalls
    assert call.pending
    assert list(call.connectAddresses) == connect
    assert call.internalAddress is None
    assert call.transport is Transport.TCP
    assert call.flags is RedirectFlags.NONE
    assert call.sessionFilter is sessionFilter
    assert call.context == "ctx"
    assert call.deferred is deferred


def test_grant() -> None:
    """grant() listens on consecutive ports of the session's internal IP and fills in
    the outbound IP and the expected peer."""
    session = FakeSession()
    deferred = session.redirectConnections(
        [SERVER.withPort(4000), SERVER.withPort(4001)], context="ctx"
    )
    call = session.redirectCalls[0]
    redirection = call.grant(40000)
    assert resultOf(deferred) is redirection
    assert not call.pending and call.redirection is redirection
    assert redirection.internalAddress == session.internalAddress.withPort(40000)
    ports = [action.internalAddress.port for action in redirection.actions]
    assert ports == [40000, 40001]
    first = redirection.actions[0]
    assert first.connectAddress == SERVER.withPort(4000)
    assert first.externalAddress == session.externalAddress
    assert first.expectedPeer == session.clientAddress.host
    assert first.context == "ctx"
    assert first.state is ActionState.LISTENING
    assert session.actions == list(redirection.actions)


def test_grantExplicit() -> None:
    session = FakeSession()
    session.redirectConnections(
        [Address("192.0.2.10", 20)],
        internalAddress=Address("203.0.113.1", 2020),
        proxyExternalAddress="198.51.100.1",
        expectedPeer="203.0.113.50",
    )
    redirection = session.redirectCalls[0].grant()
    [action] = redirection.actions
    assert action.internalAddress == Address("203.0.113.1", 2020)
    assert action.externalAddress == "198.51.100.1"
    assert action.expectedPeer == "203.0.113.50"


def test_grantNeedsPort() -> None:
    session = FakeSession()
    session.redirectConnections([SERVER])
    with pytest.raises(ValueError):
        session.redirectCalls[0].grant()


def test_succeedChecksActions() -> None:
    session = FakeSession()
    session.redirectConnections([SERVER])
    with pytest.raises(ValueError):
        session.redirectCalls[0].succeed(Redirection(SERVER, []))


def test_redirectFail() -> None:
    session = FakeSession()
    deferred = session.redirectConnections([SERVER])
    session.redirectCalls[0].fail(PortRangeExhausted("no ports left"))
    assert failureOf(deferred).check(PortRangeExhausted)


def test_redirectNeedsAddress() -> None:
    """As with the real session: a failed Deferred, not a synchronous raise."""
    session = FakeSession()
    assert failureOf(session.redirectConnections([])).check(ValueError)
    assert session.redirectCalls == []


def test_upstream() -> None:
    session = FakeSession(defaultUpstream=SERVER)
    deferred = session.connectUpstream()
    assert [connect.address for connect in session.upstreamConnects] == [SERVER]
    assert session.serverAddress is None
    assert session.succeedUpstream() == SERVER
    assert resultOf(deferred) == SERVER
    assert session.serverAddress == SERVER
    with pytest.raises(RuntimeError):
        session.succeedUpstream()


def test_upstreamFails() -> None:
    session = FakeSession()
    deferred = session.connectUpstream(Address("192.0.2.99", 21))
    session.failUpstream()
    failure = failureOf(deferred)
    assert failure.check(FWXError)
    assert failure.getErrorMessage() == "connection to 192.0.2.99:21 refused"
    assert session.serverAddress is None


def test_upstreamFailsWithTheGivenReason() -> None:
    session = FakeSession()
    deferred = session.connectUpstream(Address("192.0.2.99", 21))
    session.failUpstream(ConnectionRefusedError(string="192.0.2.99:21"))
    assert failureOf(deferred).check(ConnectionRefusedError)


def test_upstreamNeedsAddress() -> None:
    with pytest.raises(ValueError):
        FakeSession(defaultUpstream=None).connectUpstream()


def test_fireEventToRedirectFilter() -> None:
    """An event about an action goes to the session filter given with its redirect."""
    session = FakeSession()
    attached = RecordingSessionFilter()
    other = RecordingSessionFilter()
    session.sessionFilter = attached
    session.redirectConnections([SERVER], sessionFilter=other, context="ctx")
    [action] = session.redirectCalls[0].grant(40000).actions
    event = FirewallNotification(FirewallEvent.ESTABLISHED_CONNECTION, action, "ctx")
    session.fireEvent(event)
    assert other.events == [event]
    assert attached.events == []


def test_fireEventToAttachedFilter() -> None:
    session = FakeSession()
    attached = RecordingSessionFilter()
    session.sessionFilter = attached
    event = FirewallNotification(FirewallEvent.CONNECTION_TERMINATING, None)
    session.fireEvent(event)
    assert attached.events == [event]


def test_fireEventNoTarget() -> None:
    with pytest.raises(LookupError):
        FakeSession().fireEvent(FirewallNotification(FirewallEvent.CONNECT_TCP, None))


def test_close() -> None:
    """close() fails what is pending, cancels actions, detaches every filter once."""
    log: list[str] = []
    session = FakeSession()
    sessionFilter = RecordingSessionFilter()
    session.sessionFilter = sessionFilter
    session.attachDataFilter(TagFilter(b"A", log))
    upstream = session.connectUpstream()
    session.redirectConnections([SERVER])
    [action] = session.redirectCalls[0].grant(40000).actions
    pending = session.redirectConnections([SERVER.withPort(4001)])
    closed = session.whenClosed()

    session.close("done")
    session.close("again")

    assert session.closed and session.closeReason == "done"
    assert failureOf(pending).check(SessionClosed)
    assert failureOf(upstream).check(SessionClosed)
    assert action.state is ActionState.CANCELLED
    assert log == ["detached A"]
    assert sessionFilter.detached == 1
    assert resultOf(closed) is None
    assert resultOf(session.whenClosed()) is None


def test_afterClose() -> None:
    """After close bytes are dropped, redirects fail and events are refused."""
    session = FakeSession()
    session.sessionFilter = RecordingSessionFilter()
    session.close()
    session.clientSends(b"late")
    assert session.toServer == b""
    assert failureOf(session.redirectConnections([SERVER])).check(SessionClosed)
    with pytest.raises(RuntimeError):
        session.fireEvent(FirewallNotification(FirewallEvent.CONNECT_TCP, None))


def test_channelClose() -> None:
    session = FakeSession()
    passThrough = PassThroughDataFilter()
    session.attachDataFilter(passThrough)
    assert passThrough.channel is not None
    passThrough.channel.close("bad bytes")
    assert session.closed and session.closeReason == "bad bytes"
    assert passThrough.channel is None
    passThrough.write(C2S, b"dropped")
    assert session.toServer == b""


def test_actionCancel() -> None:
    action = FakeFirewallAction(Address("198.51.100.1", 40000), SERVER)
    finished = action.whenFinished()
    action.cancel()
    action.cancel()
    assert action.state is ActionState.CANCELLED
    assert action.cancelCalls == 2
    assert resultOf(finished) is ActionState.CANCELLED
    assert resultOf(action.whenFinished()) is ActionState.CANCELLED


def test_actionSingleUse() -> None:
    action = FakeFirewallAction(Address("198.51.100.1", 40000), SERVER)
    finished = action.whenFinished()
    action.accept()
    assert (action.state, action.connectionCount) == (ActionState.USED, 1)
    assert not finished.called
    action.finish()
    assert resultOf(finished) is ActionState.USED
    action.cancel()
    assert action.state is ActionState.USED


def test_actionMultiple() -> None:
    action = FakeFirewallAction(
        Address("198.51.100.1", 40000), SERVER, flags=RedirectFlags.ALLOW_MULTIPLE
    )
    action.accept()
    action.accept()
    assert (action.state, action.connectionCount) == (ActionState.LISTENING, 2)


def test_actionExpire() -> None:
    action = FakeFirewallAction(Address("198.51.100.1", 40000), SERVER)
    action.expire()
    action.cancel()
    assert action.state is ActionState.EXPIRED
    assert resultOf(action.whenFinished()) is ActionState.EXPIRED


def test_joinGrant() -> None:
    """A join is recorded, and granted with the listening legs bound."""
    session = FakeSession()
    sessionFilter = RecordingSessionFilter()
    client = Listen("198.51.100.1", "192.0.2.10")
    server = Listen("203.0.113.1", "203.0.113.50", port=2020)
    deferred = session.joinConnections(client, server, sessionFilter=sessionFilter, context=1)
    [call] = session.joinCalls
    assert (call.client, call.server, call.context) == (client, server, 1)
    join = call.grant(clientPort=40000)
    assert resultOf(deferred) is join
    assert join.listeningAddresses == {
        Side.CLIENT: Address("198.51.100.1", 40000),
        Side.SERVER: Address("203.0.113.1", 2020),
    }
    assert join.internalAddress == Address("198.51.100.1", 40000)
    assert join.expectedPeer == "192.0.2.10"
    assert join.connectAddress is None
    event = FirewallNotification(FirewallEvent.ESTABLISHED_CONNECTION, join, 1)
    session.fireEvent(event)
    assert sessionFilter.events == [event]
    session.close()
    assert join.state is ActionState.CANCELLED


def test_joinConnectLegs() -> None:
    session = FakeSession()
    session.joinConnections(Connect(Address("192.0.2.10", 20)), Connect(SERVER, "203.0.113.1"))
    join = session.joinCalls[0].grant()
    assert join.listeningAddresses == {}
    assert join.connectAddress == SERVER
    assert join.externalAddress == "203.0.113.1"


def test_joinNeedsPort() -> None:
    session = FakeSession()
    session.joinConnections(Listen("198.51.100.1", "192.0.2.10"), Connect(SERVER))
    with pytest.raises(ValueError):
        session.joinCalls[0].grant()


def test_joinPendingAtClose() -> None:
    session = FakeSession()
    deferred = session.joinConnections(Connect(SERVER), Connect(SERVER))
    session.close()
    assert failureOf(deferred).check(SessionClosed)
