"""Session: one primary connection, its session filter and the permissions it granted."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from twisted.internet import error
from twisted.internet.defer import CancelledError, Deferred, DeferredList, fail, succeed
from twisted.python.failure import Failure
from zope.interface import implementer

from fwxtwisted.address import Address, isIPLiteral, normalizeHost
from fwxtwisted.errors import (
    FWXError,
    PortRangeExhausted,
    SessionClosed,
    TooManyPendingRedirects,
    UpstreamTimeout,
)
from fwxtwisted.interfaces import (
    ActionState,
    ByteCounts,
    FirewallEvent,
    FirewallNotification,
    IDataFilter,
    IDatagramPorts,
    IFirewallAction,
    IJoin,
    ISession,
    ISessionFilter,
    LegSpec,
    LegTLS,
    Listen,
    RedirectFlags,
    Redirection,
    Side,
    Transport,
)
from fwxtwisted.logs import Logger
from fwxtwisted.metrics import hooks
from fwxtwisted.net.connect import connectFrom, describeConnectFailure, keepUrgentInline
from fwxtwisted.net.tls import tlsConnectionOf
from fwxtwisted.permissions.datagrams import DatagramPorts, openDatagramPorts
from fwxtwisted.permissions.future import FutureConnectAction
from fwxtwisted.permissions.gateway import Gateway
from fwxtwisted.permissions.join import JoinAction
from fwxtwisted.permissions.redirect import TCPRedirectAction
from fwxtwisted.permissions.udp import UDPRedirectAction, udpOptionsProblem
from fwxtwisted.relay.relay import Relay, RelayLeg

log = Logger()

#: The one info line of a session, at its end (the C{session.closed} event).
CLOSED_LINE = (
    "{session}: {client} to {server} from {external} (listener {listener}) closed "
    "({reason}) after {duration:.3f} s: {fromClient} bytes from client, "
    "{fromServer} from server"
)

_Redirect = TCPRedirectAction | UDPRedirectAction
_Action = _Redirect | JoinAction | DatagramPorts | FutureConnectAction


@implementer(ISession)
class Session:
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
        self._actions: list[_Action] = []
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
    def actions(self) -> Sequence[_Action]:
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
        *,
        outboundPorts: IDatagramPorts | None = None,
        peerAddresses: Sequence[Address] | None = None,
        udpIdleTimeout: float | None = None,
    ) -> Deferred[Redirection]:
        if self.closed:
            return fail(SessionClosed(f"session {self.sessionId} is closed"))
        if not connectAddresses:
            return fail(ValueError("redirectConnections needs at least one connect address"))
        if transport is Transport.UDP and (tls or dataFilterFactory):
            return fail(ValueError("TLS and data filters apply to TCP redirections only"))
        problem = udpOptionsProblem(
            len(connectAddresses), transport, flags, outboundPorts, peerAddresses
        )
        if problem is not None:
            return fail(ValueError(problem))
        crowded = self._tooManyPending(len(connectAddresses))
        if crowded is not None:
            hooks.observer.permissionRefused(self, transport.value, "too_many_pending")
            return fail(crowded)
        listenHost = internalAddress.host if internalAddress is not None else None
        if not listenHost:
            assert self.internalAddress is not None
            listenHost = self.internalAddress.host
        listenPort = internalAddress.port if internalAddress is not None else 0
        external = (
            proxyExternalAddress if proxyExternalAddress is not None else self.externalAddress
        )
        peer = expectedPeer if expectedPeer is not None else self.clientAddress.host
        target = sessionFilter if sessionFilter is not None else self._sessionFilter
        actionType: type[_Redirect] = (
            TCPRedirectAction if transport is Transport.TCP else UDPRedirectAction
        )
        actions: list[_Redirect] = [
            actionType(
                self._gateway,
                connectAddress,
                external,
                peer,
                flags,
                context,
                lambda notification: self._notify(target, notification),
                label=self.sessionId,
            )
            for connectAddress in connectAddresses
        ]
        for action in actions:
            if isinstance(action, TCPRedirectAction):
                action.tls = dict(tls or {})
                action.dataFilterFactory = dataFilterFactory
        ports = self._gateway.ports
        even = RedirectFlags.EVEN_PORTS in flags
        try:
            if listenPort:
                ports.bindExact(
                    listenHost,
                    listenPort,
                    len(actions),
                    lambda i, port: actions[i].bind(listenHost, port),
                    even,
                )
            else:
                ports.bindRun(
                    listenHost,
                    len(actions),
                    lambda i, port: actions[i].bind(listenHost, port),
                    portRange,
                    even,
                )
        except (PortRangeExhausted, FWXError) as e:
            log.warn("{session}: redirect refused: {error}", session=self.sessionId, error=str(e))
            hooks.observer.permissionRefused(self, transport.value, _refusalKind(e))
            return fail(e)
        for index, action in enumerate(actions):
            if isinstance(action, UDPRedirectAction):
                action.idleTimeout = udpIdleTimeout
                if peerAddresses is not None:
                    action.expectPeer(peerAddresses[index])
                if isinstance(outboundPorts, DatagramPorts):
                    action.useOutbound(outboundPorts, index)
        for action in actions:
            action.start(self._gateway.settings.redirectTimeout)
            self._actions.append(action)
            action.whenFinished().addCallback(self._actionFinished, action)
        used = None if listenPort else portRange or ports.rangeFor(listenHost)
        hooks.observer.permissionsGranted(self, actions, [used] * len(actions))
        first = actions[0].internalAddress
        assert first is not None
        log.debug(
            "{session}: redirect {internal} -> {targets}",
            session=self.sessionId,
            internal=str(first),
            targets=", ".join(str(a) for a in connectAddresses),
        )
        return succeed(Redirection(first, tuple(actions)))

    def openDatagramPorts(
        self,
        count: int,
        host: str | None = None,
        *,
        evenBase: bool = False,
        expectedPeer: str | None = None,
        portRange: tuple[int, int] | None = None,
    ) -> DatagramPorts:
        """Bind C{count} UDP sockets on consecutive ports (see L{ISession.openDatagramPorts})."""
        if self.closed:
            raise SessionClosed(f"session {self.sessionId} is closed")
        bindHost = host if host is not None else self.externalAddress
        if bindHost is None:
            raise ValueError("no external address yet: connect upstream first, or name host")
        peer = expectedPeer
        if peer is None:
            if host is None or normalizeHost(host) == self.externalAddress:
                if self.serverAddress is None:
                    raise ValueError("no upstream yet to expect datagrams from: name expectedPeer")
                peer = self.serverAddress.host
            else:
                peer = self.clientAddress.host
        ports = openDatagramPorts(
            self._gateway, bindHost, count, peer, evenBase, portRange, self.sessionId
        )
        self._actions.append(ports)
        ports.whenFinished().addCallback(self._actionFinished, ports)
        used = portRange or self._gateway.ports.rangeFor(ports.host)
        hooks.observer.datagramPortsOpened(self, ports, used)
        return ports

    def joinConnections(
        self,
        client: LegSpec,
        server: LegSpec,
        flags: RedirectFlags = RedirectFlags.TIMEOUT,
        sessionFilter: ISessionFilter | None = None,
        context: object = None,
        tls: Mapping[Side, LegTLS] | None = None,
    ) -> Deferred[IJoin]:
        """Relay one connection between two legs, each accepted (L{Listen}) or connected
        (L{Connect}): the shapes redirectConnections cannot make.

        @return: a Deferred firing with the action once its listening legs are bound
            (see C{action.listeningAddresses}); it fails like redirectConnections.
        """
        if self.closed:
            return fail(SessionClosed(f"session {self.sessionId} is closed"))
        crowded = self._tooManyPending(1)
        if crowded is not None:
            hooks.observer.permissionRefused(self, "tcp", "too_many_pending")
            return fail(crowded)
        target = sessionFilter if sessionFilter is not None else self._sessionFilter
        action = JoinAction(
            self._gateway,
            client,
            server,
            flags,
            context,
            lambda notification: self._notify(target, notification),
            label=self.sessionId,
            tls=tls,
        )
        ports = self._gateway.ports
        used: list[tuple[int, int] | None] = []
        try:
            for side in action.listeningSides():
                spec = client if side is Side.CLIENT else server
                assert isinstance(spec, Listen)
                bindOne = lambda i, port, side=side: action.bind(side, port)  # noqa: E731
                if spec.port:
                    ports.bindExact(spec.host, spec.port, 1, bindOne)
                else:
                    ports.bindRun(spec.host, 1, bindOne, spec.portRange)
                used.append(None if spec.port else spec.portRange or ports.rangeFor(spec.host))
        except FWXError as e:
            action.cancel()
            log.warn("{session}: data join refused: {error}", session=self.sessionId, error=str(e))
            hooks.observer.permissionRefused(self, "tcp", _refusalKind(e))
            return fail(e)
        action.start(self._gateway.settings.redirectTimeout)
        self._actions.append(action)
        action.whenFinished().addCallback(self._actionFinished, action)
        hooks.observer.permissionsGranted(self, [action], used)
        joined: Deferred[IJoin] = succeed(action)
        return joined

    def allowFutureConnect(
        self,
        source: Address,
        destination: Address,
        flags: RedirectFlags = RedirectFlags.TIMEOUT,
        proxyExternalAddress: str | None = None,
        transport: Transport = Transport.TCP,
        protocolId: uuid.UUID | None = None,
        sessionFilter: ISessionFilter | None = None,
        context: object = None,
        tls: Mapping[Side, LegTLS] | None = None,
        dataFilterFactory: Callable[[], Sequence[IDataFilter]] | None = None,
    ) -> Deferred[IFirewallAction]:
        """Let the next flow from C{source} to C{destination} through the gateway (see
        L{ISession.allowFutureConnect})."""
        if self.closed:
            return fail(SessionClosed(f"session {self.sessionId} is closed"))
        registry = self._gateway.futureConnects
        if registry is None:
            return fail(
                FWXError(
                    "allowFutureConnect needs the gateway's nftables table "
                    "(a transparent listener, nft, CAP_NET_ADMIN)"
                )
            )
        if transport is not Transport.TCP:
            return fail(ValueError("allowFutureConnect: TCP flows only (UDP is not done yet)"))
        if not (isIPLiteral(source.host) and isIPLiteral(destination.host)):
            return fail(ValueError("allowFutureConnect: source and destination are IP literals"))
        source = Address(normalizeHost(source.host), source.port)
        destination = Address(normalizeHost(destination.host), destination.port)
        if source.isIPv6 != destination.isIPv6 or not destination.port:
            return fail(ValueError(f"allowFutureConnect: {source} -> {destination} cannot be"))
        crowded = self._tooManyPending(1)
        if crowded is not None:
            return fail(crowded)
        target = sessionFilter if sessionFilter is not None else self._sessionFilter
        external = (
            proxyExternalAddress if proxyExternalAddress is not None else self.externalAddress
        )
        action = FutureConnectAction(
            self._gateway,
            destination,
            external,
            source.host,
            flags,
            context,
            lambda notification: self._notify(target, notification),
            label=self.sessionId,
            source=source,
            registry=registry,
        )
        action.tls = dict(tls or {})
        action.dataFilterFactory = dataFilterFactory
        try:
            registered = action.register()
        except FWXError as e:
            return fail(e)
        action.start(self._gateway.settings.redirectTimeout)
        self._actions.append(action)
        action.whenFinished().addCallback(self._actionFinished, action)
        log.debug(
            "{session}: future connect {source} -> {destination}",
            session=self.sessionId,
            source=str(source),
            destination=str(destination),
        )

        def refused(failure: Failure) -> Failure:
            log.warn(
                "{session}: future connect {source} -> {destination} refused: {error}",
                session=self.sessionId,
                source=str(source),
                destination=str(destination),
                error=failure.getErrorMessage(),
            )
            action.cancel()
            return failure

        permitted: Deferred[IFirewallAction] = registered.addCallbacks(lambda _: action, refused)
        return permitted

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

    def _tooManyPending(self, more: int) -> TooManyPendingRedirects | None:
        limit = self._gateway.settings.maxPendingRedirects
        pending = sum(
            1
            for a in self._actions
            if a.state is ActionState.LISTENING and not isinstance(a, DatagramPorts)
        )
        if pending + more <= limit:
            return None
        log.warn(
            "{session}: refused {more} more permission(s): {pending} unused already",
            session=self.sessionId,
            more=more,
            pending=pending,
        )
        return TooManyPendingRedirects(
            f"{pending} unused permissions already (at most {limit} per session)"
        )

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

    def _actionFinished(self, _: object, action: _Action) -> None:
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
        # The one event of a session at info level: who, where, how long, how much.
        log.info(
            CLOSED_LINE,
            fwx_event="session.closed",
            session=self.sessionId,
            client=str(self.clientAddress),
            server=str(self.serverAddress) if self.serverAddress else "no upstream",
            external=self.externalAddress or "any",
            listener=self._listener or "-",
            reason=reason or "normal close",
            duration=self._gateway.clock.seconds() - self._startedAt,
            fromClient=counts.fromClient,
            fromServer=counts.fromServer,
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


def _refusalKind(error: Exception) -> str:
    """The C{reason} label of a permission refused for want of ports."""
    return "ports_exhausted" if isinstance(error, PortRangeExhausted) else "port_unavailable"
