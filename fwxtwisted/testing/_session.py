"""FakeSession: an ISession that records what a filter asks and plays its primary connection."""

from __future__ import annotations

import itertools
from collections.abc import Hashable, Mapping

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionRefusedError, DNSLookupError
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from zope.interface import implementer

from fwxtwisted.address import Address, isIPLiteral, normalizeHost
from fwxtwisted.errors import FWXError, SessionClosed
from fwxtwisted.interfaces import (
    ByteCounts,
    Direction,
    FirewallEvent,
    FirewallNotification,
    IDataFilter,
    IFilter,
    IFirewallAction,
    ISession,
    ISessionFilter,
    ITransparentFilter,
    LegTLS,
    Side,
)
from fwxtwisted.net.connect import describeConnectFailure
from fwxtwisted.relay.filterchain import ChainLink
from fwxtwisted.settings import GatewaySettings
from fwxtwisted.testing._actions import (
    DEFAULT_CLIENT,
    DEFAULT_EXTERNAL_IP,
    DEFAULT_INTERNAL,
    DEFAULT_UPSTREAM,
)
from fwxtwisted.testing._calls import JoinCall, RedirectCall, UpstreamConnect
from fwxtwisted.testing._chain import AttachedDataFilter, CheckedChain
from fwxtwisted.testing._datagrams import FakeDatagramPorts, OpensDatagramPorts
from fwxtwisted.testing._events import PlaysPermissions
from fwxtwisted.testing._future import AllowCall, AllowsFutureConnects
from fwxtwisted.testing._grants import GrantsPermissions
from fwxtwisted.testing._peers import PlaysPeers

_SESSION_NUMBERS = itertools.count(1)


_DEFAULTS = GatewaySettings()

#: What a lost leg is called when its peer closed cleanly (Twisted's ConnectionDone).
CLEAN_CLOSE = "Connection was closed cleanly."


@implementer(ISession)
class FakeSession(
    PlaysPeers, GrantsPermissions, AllowsFutureConnects, OpensDatagramPorts, PlaysPermissions
):
    """An L{ISession} that records what the filter asks for and plays its primary
    connection.

    A test attaches the filter under test with L{attachFilter} (or builds the session
    with L{forFilter}, which parses the options first), then plays both the peers and
    the gateway::

        session = FakeSession(defaultUpstream=Address("203.0.113.50", 21))
        session.attachFilter(MyFilter())
        session.succeedUpstream()
        session.serverSends(b"227 Entering Passive Mode (203,0,113,50,39,16)\\r\\n")
        session.redirectCalls[0].grant(40000)
        assert session.toClient == b"227 Entering Passive Mode (198,51,100,1,156,64)\\r\\n"

    By default nothing fires by itself: every Deferred the filter gets waits for the
    test, so the fake works the same under trial's C{SynchronousTestCase} and under
    plain pytest.  With C{autoGrant=True} redirects, joins and future connects are
    granted at once, as the real session does (its Deferred has fired when
    C{redirectConnections} returns), on ports counted up from C{firstPort}.

    It fails where L{Session} fails, in the same shape: a redirect with no connect
    address, or UDP with TLS or a data filter, is a failed Deferred (C{ValueError});
    more unused permissions than C{maxPendingRedirects} fail with
    C{TooManyPendingRedirects}; after close with C{SessionClosed}; so is an
    C{allowFutureConnect} for UDP, or not between IP literals of one family
    (C{ValueError}); C{connectUpstream} with no address raises C{ValueError} at once.

    The primary connection's events (action None) come as the real session sends
    them: CONNECT_TCP from L{succeedUpstream}, CONNECT_FAILED from L{failUpstream},
    LEG_CLOSED from L{clientDisconnects} and L{serverDisconnects}, GATEWAY_SHUTDOWN
    from L{shutdown}, CONNECTION_TERMINATING from L{close} (before C{detach()}).  A
    session filter whose C{wantsFirewallEvents} is False gets no CONNECT_TCP,
    LEG_CLOSED or CONNECTION_TERMINATING, as with the real session.  Events of a
    permission are played with L{actionEvent}, L{connectThrough}, L{endConnection}
    and L{mapUDPPeer}.

    Bytes the test pushes in with L{clientSends} and L{serverSends} go through the
    attached data filters in priority order, on the relay's own
    L{fwxtwisted.relay.filterchain.FilterChain}; what leaves the chain accumulates in
    L{toServer} and L{toClient}.  Writes after the session closed are dropped, as a
    closed connection would; writing after a half-close, or pushing bytes the test
    already half-closed, raises C{RuntimeError} since a real peer never does it.

    Unlike the real session, L{close} ends the fake at once: the real one is
    C{closed}, and sends CONNECTION_TERMINATING, once its legs are closed (a reactor
    turn or more later).

    @ivar redirectCalls: every L{RedirectCall}, oldest first (one refused for its
        arguments or the pending limit is not recorded).
    @ivar joinCalls: every L{JoinCall}, oldest first.
    @ivar allowCalls: every L{AllowCall} (allowFutureConnect), oldest first.
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
        *,
        autoGrant: bool = False,
        firstPort: int = 40000,
        maxPendingRedirects: int = _DEFAULTS.maxPendingRedirects,
        connectTimeout: float = _DEFAULTS.connectTimeout,
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
        #: Grant every redirect and join at once, as the real session does.
        self.autoGrant = autoGrant
        #: The next port L{autoGrant} hands out.
        self.nextPort = firstPort
        #: The gateway's max_pending_redirects: unused permissions a session may hold.
        self.maxPendingRedirects = maxPendingRedirects
        #: The gateway's connect_timeout, named in a timed-out connect's reason.
        self.connectTimeout = connectTimeout
        self.closed = False
        self.closeReason: str | None = None
        self.sessionFilter: ISessionFilter | None = None
        self.redirectCalls: list[RedirectCall] = []
        self.joinCalls: list[JoinCall] = []
        self.allowCalls: list[AllowCall] = []
        self.upstreamConnects: list[UpstreamConnect] = []
        self.actions: list[IFirewallAction] = []
        self.datagramPorts: list[FakeDatagramPorts] = []
        self.toServer = b""
        self.toClient = b""
        self.toServerEOF = False
        self.toClientEOF = False
        #: Bytes each peer sent (the counts of CONNECTION_TERMINATING).
        self.counts = ByteCounts()
        #: Directions whose sending peer a data filter asked not to read (pauseReading).
        self.readingPaused: set[Direction] = set()
        self._holds: dict[Direction, set[Hashable]] = {d: set() for d in Direction}
        #: Directions whose peer does not drain what is written to it (set by the test:
        #: a data channel's C{writable} is then False).
        self.backedUp: set[Direction] = set()
        self._chain = CheckedChain(
            self._deliver,
            self._deliverEOF,
            self.close,
            self._isClosed,
            self._hold,
            lambda direction: direction not in self.backedUp,
        )
        self._stages: list[AttachedDataFilter] = []
        self._peerEOF: set[Direction] = set()
        self._lost: set[Side] = set()
        self._closeWaiters: list[Deferred[None]] = []

    def __repr__(self) -> str:
        return f"<FakeSession {self.sessionId} {self.clientAddress}>"

    @classmethod
    def forFilter(
        cls,
        filterPlugin: IFilter,
        options: Mapping[str, object] | None = None,
        upstream: Address | None = DEFAULT_UPSTREAM,
        transparent: bool = False,
        **kwargs: object,
    ) -> FakeSession:
        """A session as the gateway makes one for a listener of C{filterPlugin}: its
        C{parseOptions(options, upstream)} runs first (a C{ConfigError} propagates), the
        result becomes L{options}, and the filter is attached (L{attachFilter}).

        @param transparent: a transparent listener's: C{parseTransparentOptions(options)}
            (L{ITransparentFilter}) instead; C{upstream} is the original destination.
        @param kwargs: the other arguments of L{FakeSession}.
        """
        if transparent:
            parsed = ITransparentFilter(filterPlugin).parseTransparentOptions(dict(options or {}))
        else:
            parsed = filterPlugin.parseOptions(dict(options or {}), upstream)
        session = cls(defaultUpstream=upstream, options=parsed, **kwargs)  # type: ignore[arg-type]
        session.attachFilter(filterPlugin)
        return session

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
        return list(self._stages)

    def succeedUpstream(self, address: Address | None = None) -> Address:
        """Fire the oldest pending L{connectUpstream} and set L{serverAddress}; the
        session filter gets CONNECT_TCP first, as from the real session.

        @param address: the upstream reached; by default the one asked for.
        @raise RuntimeError: no connect is pending.
        """
        connect = self._pendingUpstream()
        reached = address or connect.address
        self.serverAddress = reached
        self._primaryEvent(FirewallEvent.CONNECT_TCP, optional=True)
        connect.deferred.callback(reached)
        return reached

    def failUpstream(self, reason: BaseException | Failure | None = None) -> None:
        """Fail the oldest pending L{connectUpstream}; the session filter gets
        CONNECT_FAILED first, its reason in words, as from the real session.

        @param reason: what the filter's Deferred fails with.  By default what the real
            session fails with when the connection is refused: an C{FWXError} saying so.
        @raise RuntimeError: no connect is pending.
        """
        connect = self._pendingUpstream()
        if reason is None:
            refused = ConnectionRefusedError(string=str(connect.address))  # type: ignore[no-untyped-call]
            words = describeConnectFailure(Failure(refused), connect.address, self.connectTimeout)
            reason = FWXError(words)
        else:
            failure = reason if isinstance(reason, Failure) else Failure(reason)
            if failure.check(FWXError):
                words = failure.getErrorMessage()
            else:
                words = describeConnectFailure(failure, connect.address, self.connectTimeout)
        self._primaryEvent(
            FirewallEvent.CONNECT_FAILED, serverAddress=connect.address, reason=words
        )
        connect.deferred.errback(reason)

    def clientDisconnects(self, reason: str | None = None) -> None:
        """The client's connection is lost: see L{serverDisconnects}."""
        self._legLost(Side.CLIENT, reason)

    def serverDisconnects(self, reason: str | None = None) -> None:
        """The server's connection is lost (C{reason}: why; None for a clean close).

        As with the real session: while the other leg is up the session filter gets
        LEG_CLOSED (C{side}, C{reason}) and may still write to the other leg; then the
        session closes, its CONNECTION_TERMINATING reason None for a clean close, else
        C{"server connection lost: REASON"}.
        """
        self._legLost(Side.SERVER, reason)

    def shutdown(self, final: bool = False) -> None:
        """The gateway is stopping: GATEWAY_SHUTDOWN ("draining", or "grace period
        over" when C{final}); when C{final}, the session is closed, as the real one."""
        if self.closed:
            return
        self._primaryEvent(
            FirewallEvent.GATEWAY_SHUTDOWN, reason="grace period over" if final else "draining"
        )
        if final:
            self.close("gateway shutting down")

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
        stage = AttachedDataFilter(dataFilter, priority, ChainLink(self._chain, dataFilter))
        index = sum(1 for other in self._stages if other.priority <= priority)
        self._stages.insert(index, stage)
        self._chain.attach(dataFilter, priority)
        if self.closed:
            dataFilter.detached()

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

    def close(self, reason: str | None = None) -> None:
        """End the session as the gateway would, once: fail pending redirects and
        connects with C{SessionClosed}, cancel every action, detach the data filters,
        send CONNECTION_TERMINATING (its reason C{reason}, or "closed by the gateway")
        and call the session filter's C{detach()}."""
        self._end(reason, reason or "closed by the gateway")

    def whenClosed(self) -> Deferred[None]:
        """A Deferred firing once L{close} ran."""
        if self.closed:
            return succeed(None)
        waiter: Deferred[None] = Deferred()
        self._closeWaiters.append(waiter)
        return waiter

    # Internals.

    def _isClosed(self) -> bool:
        return self.closed

    def _end(self, reason: str | None, terminating: str | None) -> None:
        if self.closed:
            return
        self.closed = True
        self.closeReason = reason
        closedError = SessionClosed(f"session {self.sessionId} closed: {reason}")
        self._failPending(closedError)
        for connect in self.upstreamConnects:
            if not connect.deferred.called:
                connect.deferred.errback(closedError)
        for action in self.actions:
            action.cancel()
        self._chain.detachAll()
        self._primaryEvent(
            FirewallEvent.CONNECTION_TERMINATING,
            optional=True,
            counts=self.counts,
            reason=terminating,
        )
        if self.sessionFilter is not None:
            self.sessionFilter.detach()
        waiters, self._closeWaiters = self._closeWaiters, []
        for waiter in waiters:
            waiter.callback(None)

    def _primaryEvent(
        self,
        event: FirewallEvent,
        optional: bool = False,
        serverAddress: Address | None = None,
        **fields: object,
    ) -> None:
        target = self.sessionFilter
        if target is None:
            return
        if optional and not getattr(target, "wantsFirewallEvents", True):
            return
        notification = FirewallNotification(
            event,
            None,
            clientAddress=self.clientAddress,
            serverAddress=serverAddress or self.serverAddress,
            **fields,  # type: ignore[arg-type]
        )
        target.firewallEvent(notification)

    def _legLost(self, side: Side, reason: str | None) -> None:
        if self.closed or side in self._lost:
            return
        self._lost.add(side)
        otherUp = side is Side.SERVER or self.serverAddress is not None
        if otherUp:
            self._primaryEvent(
                FirewallEvent.LEG_CLOSED, optional=True, reason=reason or CLEAN_CLOSE, side=side
            )
        why = None if reason is None else f"{side.value} connection lost: {reason}"
        self._end(why or "closed by the peer", why)

    def _pendingUpstream(self) -> UpstreamConnect:
        for connect in self.upstreamConnects:
            if not connect.deferred.called:
                return connect
        raise RuntimeError("no connectUpstream is pending")
