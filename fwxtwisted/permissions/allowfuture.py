"""allowFutureConnect, the part of L{fwxtwisted.permissions.session.Session} that lets a
flow through a transparent gateway (the permission itself is in future.py)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence

from twisted.internet.defer import Deferred, fail
from twisted.python.failure import Failure

from fwxtwisted.address import Address
from fwxtwisted.callchecks import futureFlow
from fwxtwisted.errors import FWXError, SessionClosed, TooManyPendingRedirects
from fwxtwisted.interfaces import (
    FirewallNotification,
    IDataFilter,
    IFirewallAction,
    ISessionFilter,
    LegTLS,
    RedirectFlags,
    Side,
    Transport,
)
from fwxtwisted.logs import Logger
from fwxtwisted.permissions.future import FutureConnectAction
from fwxtwisted.permissions.gateway import Gateway
from fwxtwisted.permissions.grants import Action

#: The session's own namespace: these lines are the session's, wherever the code is.
log = Logger(namespace="fwxtwisted.permissions.session")


class AllowsFutureConnects:
    """Session's L{ISession.allowFutureConnect}."""

    _gateway: Gateway
    sessionId: str
    closed: bool
    clientAddress: Address
    externalAddress: str | None
    _sessionFilter: ISessionFilter | None
    _actions: list[Action]

    def _notify(self, target: ISessionFilter | None, notification: FirewallNotification) -> None:
        raise NotImplementedError

    def _actionFinished(self, _: object, action: Action) -> None:
        raise NotImplementedError

    def _tooManyPending(self, more: int) -> TooManyPendingRedirects | None:
        raise NotImplementedError

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
        flow = futureFlow(source, destination, transport)
        if isinstance(flow, str):
            return fail(ValueError(flow))
        source, destination = flow
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
