"""The permissions a session grants (redirects, joins, datagram ports) and the checks
before them: the part of L{fwxtwisted.permissions.session.Session} that grants."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence

from twisted.internet.defer import Deferred, fail, gatherResults, succeed

from fwxtwisted.address import Address, normalizeHost
from fwxtwisted.errors import FWXError, PortRangeExhausted, SessionClosed, TooManyPendingRedirects
from fwxtwisted.interfaces import (
    ActionState,
    FirewallNotification,
    IDataFilter,
    IDatagramPorts,
    IJoin,
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
from fwxtwisted.permissions.datagrams import DatagramPorts, openDatagramPorts
from fwxtwisted.permissions.future import FutureConnectAction
from fwxtwisted.permissions.gateway import Gateway
from fwxtwisted.permissions.join import JoinAction
from fwxtwisted.permissions.redirect import TCPRedirectAction
from fwxtwisted.permissions.udp import UDPRedirectAction, udpOptionsProblem

#: The session's own namespace: these lines are the session's, wherever the code is.
log = Logger(namespace="fwxtwisted.permissions.session")

Redirect = TCPRedirectAction | UDPRedirectAction
#: Everything a session may hold and cancels at its close.
Action = Redirect | JoinAction | DatagramPorts | FutureConnectAction


class GrantsPermissions:
    """Session's L{ISession.redirectConnections}, L{ISession.joinConnections} and
    L{ISession.openDatagramPorts}, and the limit on unused permissions."""

    _gateway: Gateway
    sessionId: str
    closed: bool
    clientAddress: Address
    externalAddress: str | None
    serverAddress: Address | None
    _sessionFilter: ISessionFilter | None
    _actions: list[Action]

    def _notify(self, target: ISessionFilter | None, notification: FirewallNotification) -> None:
        raise NotImplementedError

    def _actionFinished(self, _: object, action: Action) -> None:
        raise NotImplementedError

    @property
    def internalAddress(self) -> Address | None:
        raise NotImplementedError

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
        actionType: type[Redirect] = (
            TCPRedirectAction if transport is Transport.TCP else UDPRedirectAction
        )
        actions: list[Redirect] = [
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
            hooks.observer.permissionRefused(self, transport.value, refusalKind(e))
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
        redirection = Redirection(first, tuple(actions))
        readiness = [a.ready() for a in actions if isinstance(a, UDPRedirectAction)]
        if not all(d.called for d in readiness):
            # The kernel UDP path is being set up: the filter announces these ports
            # once datagrams to them take the path they will keep.
            return gatherResults(readiness).addCallback(lambda _: redirection)
        return succeed(redirection)

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
            hooks.observer.permissionRefused(self, "tcp", refusalKind(e))
            return fail(e)
        action.start(self._gateway.settings.redirectTimeout)
        self._actions.append(action)
        action.whenFinished().addCallback(self._actionFinished, action)
        hooks.observer.permissionsGranted(self, [action], used)
        joined: Deferred[IJoin] = succeed(action)
        return joined

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


def refusalKind(error: Exception) -> str:
    """The C{reason} label of a permission refused for want of ports."""
    return "ports_exhausted" if isinstance(error, PortRangeExhausted) else "port_unavailable"
