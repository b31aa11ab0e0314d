"""Session: one primary connection, its session filter and the permissions it granted."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from twisted.internet import error
from twisted.internet.defer import CancelledError, Deferred, DeferredList, fail, succeed
from twisted.python.failure import Failure
from zope.interface import implementer

from fwxtwisted.address import Address, isIPLiteral, normalizeHost
from fwxtwisted.errors import FWXError, SessionClosed, UpstreamTimeout
from fwxtwisted.interfaces import (
    ByteCounts,
    FirewallEvent,
    FirewallNotification,
    IDataFilter,
    ISession,
    ISessionFilter,
    LegTLS,
    Side,
)
from fwxtwisted.logs import Logger
from fwxtwisted.metrics import hooks
from fwxtwisted.net.connect import connectFrom, describeConnectFailure, keepUrgentInline
from fwxtwisted.net.tls import tlsConnectionOf
from fwxtwisted.permissions.allowfuture import AllowsFutureConnects
from fwxtwisted.permissions.closing import logSessionClosed
from fwxtwisted.permissions.gateway import Gateway
from fwxtwisted.permissions.grants import Action, GrantsPermissions
from fwxtwisted.relay.relay import Relay, RelayLeg

log = Logger()


@implementer(ISession)
class Session(GrantsPermissions, AllowsFutureConnects):
    """The gateway's side of one primary connection.

    The service makes it when a client connects, hands L{clientLeg} to the listening
    port, and gives it the session filter with L{start}.
    """

    def __init__(
        self,
        gateway: Gateway,
        clientAddress: Address,
        defaultUpstream: Address | None = None,
        options: object = None,
        onClosed: Callable[[Session], None] | None = None,
        listener: str | None = None,
        clientSocketTuned: bool = False,
    ) -> None:
        self._gateway = gateway
        #: The listening socket already gave the accepted one its options (Linux
        #: copies SO_OOBINLINE and TCP_NODELAY to accepted sockets): two syscalls saved.
        self._clientSocketTuned = clientSocketTuned
        self._listener = listener
        self._startedAt = gateway.clock.seconds()
        self.sessionId = gateway.nextSessionId()
        self.clientAddress = clientAddress
        self._internalAddress: Address | None = None
        self._clientUp = False
        pool = gateway.externalPool
        # Toward an IP known now (a fixed or transparent upstream): one of its family.
        self.externalAddress: str | None = (
            pool.nextFor(defaultUpstream.host)
            if defaultUpstream is not None and isIPLiteral(defaultUpstream.host)
            else pool.next()
        )
        self.serverAddress: Address | None = None
        self.defaultUpstream = defaultUpstream
        self.options = options
        self.closed = False
        self._onClosed = onClosed
        self._sessionFilter: ISessionFilter | None = None
        #: The session filter takes the primary connection's events (see L{start}).
        self._eventsWanted = True
        self._actions: list[Action] = []
        self._closeWaiters: list[Deferred[None]] = []
        #: Closed, and the connections of its permissions are over too.
        self._over = False
        self.primary = Relay(
            onClosed=self._primaryClosed,
            onLegConnected=self._legConnected,
            reactor=gateway.reactor,
            fastPath=gateway.primaryFastPath,
            onLegLost=self._primaryLegLost,
        )
        self.clientLeg: RelayLeg = self.primary.makeLeg(Side.CLIENT)

    def __repr__(self) -> str:
        return f"<Session {self.sessionId} {self.clientAddress}>"

    def start(self, sessionFilter: ISessionFilter) -> None:
        """Attach the session filter; it is told once the client leg is up."""
        self._sessionFilter = sessionFilter
        # A filter may say it ignores them (ForwardingSessionFilter's no-op): the
        # connect, leg and close notifications are then not built at all.
        self._eventsWanted = getattr(sessionFilter, "wantsFirewallEvents", True)
        if self._clientUp:
            self._started()

    @property
    def internalAddress(self) -> Address | None:
        """Where the gateway accepted the client, asked of the socket on first use
        (most sessions of a plain forward never need it)."""
        if self._internalAddress is None and self._clientUp:
            try:
                self._internalAddress = Address.fromTwisted(self.clientLeg.transport.getHost())  # type: ignore[union-attr]
            except (OSError, AttributeError):
                return None  # the connection is gone already
        return self._internalAddress

    @property
    def clock(self) -> Any:
        """The gateway's clock, for the filter's own timers."""
        return self._gateway.clock

    def resolveHost(self, host: str) -> Deferred[str]:
        if isIPLiteral(host):
            return succeed(normalizeHost(host))
        resolved: Deferred[str] = self._gateway.reactor.resolve(host)
        return resolved

    @property
    def actions(self) -> Sequence[Action]:
        """The permissions of this session that are not finished yet."""
        return tuple(self._actions)

    # ISession

    def connectUpstream(self, address: Address | None = None) -> Deferred[Address]:
        target = address or self.defaultUpstream
        if target is None:
            raise ValueError("no upstream address given and none configured")
        if self.closed:
            return fail(SessionClosed(f"session {self.sessionId} is closed"))
        timeout = self._gateway.settings.connectTimeout
        attempt = connectFrom(
            self._gateway.reactor,
            target,
            self.externalAddress,
            self.primary.makeLeg(Side.SERVER),
            timeout,
            tune=True,
        )
        self.primary.connecting(attempt)  # type: ignore[arg-type]

        def connected(leg: RelayLeg) -> Address:
            assert leg.transport is not None
            if isIPLiteral(target.host) and normalizeHost(target.host) == target.host:
                # Connected to a canonical literal: that is the peer, without asking
                # the socket and building Twisted's address for it.
                self.serverAddress = target
            else:
                self.serverAddress = Address.fromTwisted(leg.transport.getPeer())
            if self.externalAddress is None:
                self.externalAddress = Address.fromTwisted(leg.transport.getHost()).host
            log.debug(
                "{session}: upstream {server} connected from {external}",
                session=self.sessionId,
                server=self.serverAddress,
                external=self.externalAddress,
            )
            if not self._eventsWanted:
                return self.serverAddress
            self._notify(
                None,
                FirewallNotification(
                    FirewallEvent.CONNECT_TCP,
                    None,
                    clientAddress=self.clientAddress,
                    serverAddress=self.serverAddress,
                ),
            )
            return self.serverAddress

        def failed(failure: Failure) -> Failure:
            if failure.check(CancelledError) or self.closed:
                return Failure(SessionClosed(f"session {self.sessionId} closed while connecting"))
            reason = describeConnectFailure(failure, target, timeout)
            log.warn("{session}: {reason}", session=self.sessionId, reason=reason)
            self._notify(
                None,
                FirewallNotification(
                    FirewallEvent.CONNECT_FAILED,
                    None,
                    clientAddress=self.clientAddress,
                    serverAddress=target,
                    reason=reason,
                ),
            )
            return Failure(
                UpstreamTimeout(reason) if failure.check(error.TimeoutError) else FWXError(reason)
            )

        # One Deferred, the connect's own: cancelling it stops the connect.
        connecting: Deferred[Address] = attempt.addCallbacks(connected, failed)
        return connecting

    def attachDataFilter(self, dataFilter: IDataFilter, priority: int = 0) -> None:
        self.primary.attachDataFilter(dataFilter, priority)

    def startTLS(self, side: Side, tls: LegTLS) -> None:
        self.primary.startTLS(side, tls)

    def isTLS(self, side: Side) -> bool:
        if self.primary.isTLS(side):
            return True
        leg = self.primary.leg(side)
        return leg is not None and tlsConnectionOf(leg.transport) is not None

    def tlsConnection(self, side: Side) -> object:
        leg = self.primary.leg(side)
        return tlsConnectionOf(leg.transport) if leg is not None else None

    def close(self, reason: str | None = None) -> None:
        if self.closed:
            return
        self._cancelActions()
        self.primary.close(reason or "closed by the gateway")
        if not self.primary.finished and self.clientLeg.transport is None:
            self._primaryClosed(self.primary.counts, reason)

    def shutdown(self, final: bool) -> None:
        """The gateway is stopping: tell the session filter; when C{final}, close."""
        if self.closed:
            return
        self._notify(
            None,
            FirewallNotification(
                FirewallEvent.GATEWAY_SHUTDOWN,
                None,
                clientAddress=self.clientAddress,
                serverAddress=self.serverAddress,
                reason="grace period over" if final else "draining",
            ),
        )
        if final:
            self.close("gateway shutting down")

    def abort(self, reason: str) -> None:
        """End the session at once, without flushing (a hostile or broken peer)."""
        self._cancelActions()
        self.primary.abort(reason)

    def whenClosed(self) -> Deferred[None]:
        if self._over:
            return succeed(None)
        waiter: Deferred[None] = Deferred()
        self._closeWaiters.append(waiter)
        return waiter

    # Internals.

    def _legConnected(self, leg: RelayLeg) -> None:
        if leg.side is Side.CLIENT:
            if not self._clientSocketTuned:
                keepUrgentInline(leg.transport)
            self._clientUp = True
            if self._sessionFilter is not None:
                self._started()
        elif not getattr(leg.transport, "tuned", False):
            keepUrgentInline(leg.transport)

    def _started(self) -> None:
        assert self._sessionFilter is not None
        try:
            self._sessionFilter.sessionStarted()
        except Exception:
            log.failure("{session}: session filter failed to start", session=self.sessionId)
            self.abort("session filter failed")

    def _primaryLegLost(self, side: Side, reason: str) -> None:
        if not self._eventsWanted:
            return
        self._notify(
            None,
            FirewallNotification(
                FirewallEvent.LEG_CLOSED,
                None,
                clientAddress=self.clientAddress,
                serverAddress=self.serverAddress,
                reason=reason,
                side=side,
            ),
        )

    def _notify(self, target: ISessionFilter | None, notification: FirewallNotification) -> None:
        hooks.observer.notification(self, notification)
        target = target if target is not None else self._sessionFilter
        if target is None:
            return
        try:
            target.firewallEvent(notification)
        except Exception:
            log.failure(
                "{session}: session filter failed on {event}",
                session=self.sessionId,
                event=notification.event.name,
            )

    def _actionFinished(self, _: object, action: Action) -> None:
        if action in self._actions:
            self._actions.remove(action)

    def _cancelActions(self) -> None:
        for action in list(self._actions):
            action.cancel()

    def _primaryClosed(self, counts: ByteCounts, reason: str | None) -> None:
        if self.closed:
            return
        self.closed = True
        self._cancelActions()
        logSessionClosed(
            self.sessionId,
            self.clientAddress,
            self.serverAddress,
            self.externalAddress,
            self._listener,
            reason,
            self._gateway.clock.seconds() - self._startedAt,
            counts,
        )
        if self._eventsWanted:
            self._notify(
                None,
                FirewallNotification(
                    FirewallEvent.CONNECTION_TERMINATING,
                    None,
                    clientAddress=self.clientAddress,
                    serverAddress=self.serverAddress,
                    counts=counts,
                    reason=reason,
                ),
            )
        if self._sessionFilter is not None:
            try:
                self._sessionFilter.detach()
            except Exception:
                log.failure("{session}: session filter failed to detach", session=self.sessionId)
            # A detached filter hears nothing more, and holds this session: let it go.
            self._sessionFilter = None
        if self._onClosed is not None:
            self._onClosed(self)
        # Fully over once the permissions cancelled above have ended their connections
        # too (on the next reactor turns): a gateway stopping waits for them.
        if not self._actions:
            self._fullyOver(None)
            return
        ending = DeferredList([action.whenFinished() for action in self._actions])
        ending.addCallback(self._fullyOver)

    def _fullyOver(self, _: object) -> None:
        self._over = True
        waiters, self._closeWaiters = self._closeWaiters, []
        for waiter in waiters:
            waiter.callback(None)
