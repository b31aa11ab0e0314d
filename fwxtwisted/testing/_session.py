"""FakeSession: an ISession that records what a filter asks and plays its primary connection."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionRefusedError, DNSLookupError
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from zope.interface import implementer

from fwxtwisted.address import Address, isIPLiteral, normalizeHost
from fwxtwisted.errors import SessionClosed
from fwxtwisted.interfaces import (
    Direction,
    FirewallNotification,
    IDataChannel,
    IDataFilter,
    IFilter,
    IFirewallAction,
    IJoin,
    ISession,
    ISessionFilter,
    LegSpec,
    LegTLS,
    RedirectFlags,
    Redirection,
    Side,
    Transport,
)
from fwxtwisted.testing._actions import (
    DEFAULT_CLIENT,
    DEFAULT_EXTERNAL_IP,
    DEFAULT_INTERNAL,
    DEFAULT_UPSTREAM,
)
from fwxtwisted.testing._calls import JoinCall, RedirectCall, UpstreamConnect

_SESSION_NUMBERS = itertools.count(1)


# Identity, not field equality: the same filter object may be attached twice.
@dataclass(eq=False)
class AttachedDataFilter:
    """A data filter in the fake primary connection's chain."""

    dataFilter: IDataFilter
    priority: int
    #: The channel the filter was given in C{attached}.
    channel: IDataChannel = field(repr=False)
    _eofSent: set[Direction] = field(default_factory=set, init=False, repr=False)


@implementer(IDataChannel)
class _StageChannel:
    """What one data filter of the fake chain writes to."""

    def __init__(self, session: FakeSession) -> None:
        self._session = session
        self.stage: AttachedDataFilter | None = None

    def write(self, direction: Direction, data: bytes) -> None:
        assert self.stage is not None
        self._session._forward(self.stage, direction, data)

    def writeEOF(self, direction: Direction) -> None:
        assert self.stage is not None
        self._session._forwardEOF(self.stage, direction)

    def close(self, reason: str) -> None:
        self._session.close(reason)

    def pauseReading(self, direction: Direction) -> None:
        self._session.readingPaused.add(direction)

    def resumeReading(self, direction: Direction) -> None:
        self._session.readingPaused.discard(direction)


@implementer(ISession)
class FakeSession:
    """An L{ISession} that records what the filter asks for and plays its primary
    connection.

    A test attaches the filter under test with L{attachFilter}, then plays both the
    peers and the gateway::

        session = FakeSession(defaultUpstream=Address("203.0.113.50", 21))
        session.attachFilter(MyFilter())
        session.succeedUpstream()
        session.serverSends(b"227 Entering Passive Mode (203,0,113,50,39,16)\\r\\n")
        session.redirectCalls[0].grant(40000)
        assert session.toClient == b"227 Entering Passive Mode (198,51,100,1,156,64)\\r\\n"

    Nothing fires by itself: every Deferred the filter gets waits for the test, so the
    fake works the same under trial's C{SynchronousTestCase} and under plain pytest.

    Bytes the test pushes in with L{clientSends} and L{serverSends} go through the
    attached data filters in priority order (lower priorities see client bytes first
    and server bytes last); what leaves the chain accumulates in L{toServer} and
    L{toClient}.  Writes after the session closed are dropped, as a closed connection
    would; writing after a half-close, or pushing bytes the test already half-closed,
    raises C{RuntimeError} since a real peer never does it.

    @ivar redirectCalls: every L{RedirectCall}, oldest first.
    @ivar joinCalls: every L{JoinCall}, oldest first.
    @ivar upstreamConnects: every L{UpstreamConnect}, oldest first.
    @ivar actions: every action of a succeeded redirect or join; L{close} cancels them.
    @ivar sessionFilter: the filter attached by L{attachFilter}, or set by the test.
    @ivar toServer: bytes that left the chain toward the server.
    @ivar toClient: bytes that left the chain toward the client.
    @ivar toServerEOF: True once a half-close left the chain toward the server.
    @ivar toClientEOF: True once a half-close left the chain toward the client.
    @ivar readingPaused: directions a data filter paused reading (flow control).
    @ivar closeReason: the reason given to the first L{close}.
    """

    def __init__(
        self,
        clientAddress: Address = DEFAULT_CLIENT,
        internalAddress: Address = DEFAULT_INTERNAL,
        externalAddress: str | None = DEFAULT_EXTERNAL_IP,
        defaultUpstream: Address | None = DEFAULT_UPSTREAM,
        options: object = None,
        serverAddress: Address | None = None,
        sessionId: str | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.sessionId = sessionId or f"fake-{next(_SESSION_NUMBERS)}"
        #: The session's clock: a C{task.Clock} the test advances.
        self.clock = clock if clock is not None else Clock()
        #: Names L{resolveHost} knows, name to IP; others fail with DNSLookupError.
        self.hostnames: dict[str, str] = {}
        #: Every startTLS call: (side, LegTLS).
        self.tlsStarted: list[tuple[Side, LegTLS]] = []
        #: Sides that are TLS from the start (implicit TLS).
        self.tlsSides: set[Side] = set()
        #: Stand-ins for pyOpenSSL connections, by side, for tlsConnection.
        self.tlsConnections: dict[Side, object] = {}
        self.clientAddress = clientAddress
        self.internalAddress = internalAddress
        self.externalAddress = externalAddress
        self.serverAddress = serverAddress
        self.defaultUpstream = defaultUpstream
        self.options = options
        self.closed = False
        self.closeReason: str | None = None
        self.sessionFilter: ISessionFilter | None = None
        self.redirectCalls: list[RedirectCall] = []
        self.joinCalls: list[JoinCall] = []
        self.upstreamConnects: list[UpstreamConnect] = []
        self.actions: list[IFirewallAction] = []
        self.toServer = b""
        self.toClient = b""
        self.toServerEOF = False
        self.toClientEOF = False
        #: Directions whose sending peer a data filter asked not to read (pauseReading).
        self.readingPaused: set[Direction] = set()
        self._chain: list[AttachedDataFilter] = []
        self._peerEOF: set[Direction] = set()
        self._closeWaiters: list[Deferred[None]] = []

    def __repr__(self) -> str:
        return f"<FakeSession {self.sessionId} {self.clientAddress}>"

    # The test's side: attaching, and playing the gateway and the peers.

    def attachFilter(self, filterPlugin: IFilter) -> ISessionFilter:
        """Do what the gateway does for a new primary connection: ask C{filterPlugin}
        for a session filter, keep it as L{sessionFilter} and call its C{sessionStarted}."""
        sessionFilter = filterPlugin.attachToSession(self)
        self.sessionFilter = sessionFilter
        sessionFilter.sessionStarted()
        return sessionFilter

    @property
    def dataFilters(self) -> list[AttachedDataFilter]:
        """The attached data filters in chain order (priority, then attach order)."""
        return list(self._chain)

    def succeedUpstream(self, address: Address | None = None) -> Address:
        """Fire the oldest pending L{connectUpstream} and set L{serverAddress}.

        @param address: the upstream reached; by default the one asked for.
        @raise RuntimeError: no connect is pending.
        """
        connect = self._pendingUpstream()
        reached = address or connect.address
        self.serverAddress = reached
        connect.deferred.callback(reached)
        return reached

    def failUpstream(self, reason: BaseException | Failure | None = None) -> None:
        """Fail the oldest pending L{connectUpstream} (by default: connection refused).

        @raise RuntimeError: no connect is pending.
        """
        connect = self._pendingUpstream()
        if reason is None:
            # Twisted's error classes carry no annotations.
            reason = ConnectionRefusedError(string=str(connect.address))  # type: ignore[no-untyped-call]
        connect.deferred.errback(reason)

    def clientSends(self, data: bytes) -> None:
        """Bytes from the client: into the chain toward the server."""
        self._peerSends(Direction.CLIENT_TO_SERVER, data)

    def serverSends(self, data: bytes) -> None:
        """Bytes from the server: into the chain toward the client."""
        self._peerSends(Direction.SERVER_TO_CLIENT, data)

    def clientEOF(self) -> None:
        """The client half-closes: the EOF goes through the chain toward the server."""
        self._peerEOFs(Direction.CLIENT_TO_SERVER)

    def serverEOF(self) -> None:
        """The server half-closes: the EOF goes through the chain toward the client."""
        self._peerEOFs(Direction.SERVER_TO_CLIENT)

    def fireEvent(self, notification: FirewallNotification) -> None:
        """Deliver C{notification} to the session filter that should get it.

        That is the session filter given to the redirect or join that granted
        C{notification.action}, else the attached L{sessionFilter}.

        @raise RuntimeError: the session is closed (filters get no events after detach).
        @raise LookupError: no session filter to deliver to.
        """
        if self.closed:
            raise RuntimeError(f"{self!r} is closed: no events after detach()")
        target = self._grantingFilter(notification.action) or self.sessionFilter
        if target is None:
            raise LookupError(f"no session filter to deliver {notification.event} to")
        target.firewallEvent(notification)

    # ISession

    def connectUpstream(self, address: Address | None = None) -> Deferred[Address]:
        """Record the connect; the test fires it with L{succeedUpstream} or
        L{failUpstream}."""
        target = address or self.defaultUpstream
        if target is None:
            raise ValueError("no upstream address and no default upstream")
        if self.closed:
            return fail(SessionClosed(f"session {self.sessionId} is closed"))
        connect = UpstreamConnect(target, Deferred())
        self.upstreamConnects.append(connect)
        return connect.deferred

    def attachDataFilter(self, dataFilter: IDataFilter, priority: int = 0) -> None:
        """Insert C{dataFilter} in the fake primary connection's chain.

        Among equal priorities the earlier attached sees client bytes first.  A filter
        attached after close is attached and detached at once.
        """
        channel = _StageChannel(self)
        stage = AttachedDataFilter(dataFilter, priority, channel)
        channel.stage = stage
        index = len(self._chain)
        while index > 0 and self._chain[index - 1].priority > priority:
            index -= 1
        self._chain.insert(index, stage)
        dataFilter.attached(channel)
        if self.closed:
            dataFilter.detached()

    def redirectConnections(
        self,
        connectAddresses: Sequence[Address],
        internalAddress: Address | None = None,
        proxyExternalAddress: str | None = None,
        transport: Transport = Transport.TCP,
        flags: RedirectFlags = RedirectFlags.TIMEOUT,
        protocolId: uuid.UUID | None = None,
        sessionFilter: ISessionFilter | None = None,
        context: object = None,
        expectedPeer: str | None = None,
        portRange: tuple[int, int] | None = None,
        tls: Mapping[Side, LegTLS] | None = None,
        dataFilterFactory: Callable[[], Sequence[IDataFilter]] | None = None,
    ) -> Deferred[Redirection]:
        """Record a L{RedirectCall}; the test answers it.  After close the call is still
        recorded but its Deferred has already failed with C{SessionClosed}.

        @raise ValueError: no connect address.
        """
        if not connectAddresses:
            raise ValueError("redirectConnections needs at least one connect address")
        deferred: Deferred[Redirection] = Deferred()
        self.redirectCalls.append(
            RedirectCall(
                connectAddresses=tuple(connectAddresses),
                internalAddress=internalAddress,
                proxyExternalAddress=proxyExternalAddress,
                transport=transport,
                flags=flags,
                protocolId=protocolId,
                sessionFilter=sessionFilter,
                context=context,
                expectedPeer=expectedPeer,
                portRange=portRange,
                tls=tls,
                dataFilterFactory=dataFilterFactory,
                deferred=deferred,
                session=self,
            )
        )
        if self.closed:
            deferred.errback(SessionClosed(f"session {self.sessionId} is closed"))
        return deferred

    def startTLS(self, side: Side, tls: LegTLS) -> None:
        """Record the TLS start (see L{tlsStarted}); nothing is encrypted here."""
        self.tlsStarted.append((side, tls))

    def isTLS(self, side: Side) -> bool:
        """True once startTLS was called for C{side}, or the test listed it in
        L{tlsSides} (an implicit-TLS listener)."""
        return side in self.tlsSides or any(s is side for s, _ in self.tlsStarted)

    def tlsConnection(self, side: Side) -> object:
        """What the test put in L{tlsConnections} for C{side}, else None."""
        return self.tlsConnections.get(side)

    def resolveHost(self, host: str) -> Deferred[str]:
        """IP literals come back normalized; names from L{hostnames}, else a failure."""
        if isIPLiteral(host):
            return succeed(normalizeHost(host))
        if host in self.hostnames:
            return succeed(self.hostnames[host])
        return fail(DNSLookupError(host))

    def joinConnections(
        self,
        client: LegSpec,
        server: LegSpec,
        flags: RedirectFlags = RedirectFlags.TIMEOUT,
        sessionFilter: ISessionFilter | None = None,
        context: object = None,
        tls: Mapping[Side, LegTLS] | None = None,
    ) -> Deferred[IJoin]:
        """Record a L{JoinCall}; the test answers it.  After close the call is still
        recorded but its Deferred has already failed with C{SessionClosed}."""
        deferred: Deferred[IJoin] = Deferred()
        self.joinCalls.append(
            JoinCall(client, server, flags, sessionFilter, context, deferred, self, dict(tls or {}))
        )
        if self.closed:
            deferred.errback(SessionClosed(f"session {self.sessionId} is closed"))
        return deferred

    def close(self, reason: str | None = None) -> None:
        """End the session as the gateway would, once: fail pending redirects and
        connects with C{SessionClosed}, cancel every action, detach the data filters,
        then call the session filter's C{detach()}."""
        if self.closed:
            return
        self.closed = True
        self.closeReason = reason
        closedError = SessionClosed(f"session {self.sessionId} closed: {reason}")
        for call in self.redirectCalls:
            if call.pending:
                call.deferred.errback(closedError)
        for join in self.joinCalls:
            if join.pending:
                join.deferred.errback(closedError)
        for connect in self.upstreamConnects:
            if not connect.deferred.called:
                connect.deferred.errback(closedError)
        for action in self.actions:
            action.cancel()
        for stage in list(self._chain):
            stage.dataFilter.detached()
        if self.sessionFilter is not None:
            self.sessionFilter.detach()
        waiters, self._closeWaiters = self._closeWaiters, []
        for waiter in waiters:
            waiter.callback(None)

    def whenClosed(self) -> Deferred[None]:
        """A Deferred firing once L{close} ran."""
        if self.closed:
            return succeed(None)
        waiter: Deferred[None] = Deferred()
        self._closeWaiters.append(waiter)
        return waiter

    # The chain.

    def _grantingFilter(self, action: IFirewallAction | None) -> ISessionFilter | None:
        if action is None:
            return None
        for call in self.redirectCalls:
            granted = call.redirection.actions if call.redirection is not None else ()
            if any(candidate is action for candidate in granted):
                return call.sessionFilter
        for join in self.joinCalls:
            if join.join is action:
                return join.sessionFilter
        return None

    def _pendingUpstream(self) -> UpstreamConnect:
        for connect in self.upstreamConnects:
            if not connect.deferred.called:
                return connect
        raise RuntimeError("no connectUpstream is pending")

    def _peerSends(self, direction: Direction, data: bytes) -> None:
        if not isinstance(data, bytes):
            raise TypeError(f"data must be bytes, not {type(data).__name__}")
        if direction in self._peerEOF:
            raise RuntimeError(f"the test sent {direction.value} bytes after its EOF")
        # A real transport never delivers empty chunks, nor anything after close.
        if self.closed or not data:
            return
        first = self._entry(direction)
        if first is None:
            self._deliver(direction, data)
        else:
            first.dataFilter.dataReceived(direction, data)

    def _peerEOFs(self, direction: Direction) -> None:
        if direction in self._peerEOF:
            raise RuntimeError(f"the test sent a second {direction.value} EOF")
        self._peerEOF.add(direction)
        if self.closed:
            return
        first = self._entry(direction)
        if first is None:
            self._deliverEOF(direction)
        else:
            first.dataFilter.eofReceived(direction)

    def _entry(self, direction: Direction) -> AttachedDataFilter | None:
        if not self._chain:
            return None
        return self._chain[0] if direction is Direction.CLIENT_TO_SERVER else self._chain[-1]

    def _after(self, stage: AttachedDataFilter, direction: Direction) -> AttachedDataFilter | None:
        index = self._chain.index(stage)
        index += 1 if direction is Direction.CLIENT_TO_SERVER else -1
        if 0 <= index < len(self._chain):
            return self._chain[index]
        return None

    def _forward(self, stage: AttachedDataFilter, direction: Direction, data: bytes) -> None:
        if not isinstance(data, bytes):
            raise TypeError(f"{stage.dataFilter!r} wrote {type(data).__name__}, not bytes")
        if direction in stage._eofSent:
            raise RuntimeError(f"{stage.dataFilter!r} wrote {direction.value} after its EOF")
        if self.closed:
            return
        following = self._after(stage, direction)
        if following is None:
            self._deliver(direction, data)
        else:
            following.dataFilter.dataReceived(direction, data)

    def _forwardEOF(self, stage: AttachedDataFilter, direction: Direction) -> None:
        if direction in stage._eofSent:
            raise RuntimeError(f"{stage.dataFilter!r} wrote a second {direction.value} EOF")
        stage._eofSent.add(direction)
        if self.closed:
            return
        following = self._after(stage, direction)
        if following is None:
            self._deliverEOF(direction)
        else:
            following.dataFilter.eofReceived(direction)

    def _deliver(self, direction: Direction, data: bytes) -> None:
        if direction is Direction.CLIENT_TO_SERVER:
            self.toServer += data
        else:
            self.toClient += data

    def _deliverEOF(self, direction: Direction) -> None:
        if direction is Direction.CLIENT_TO_SERVER:
            self.toServerEOF = True
        else:
            self.toClientEOF = True
