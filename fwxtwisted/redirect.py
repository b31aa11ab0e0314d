"""TCPRedirectAction: a TCP permission, its peer-checked listener and its relays."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IListeningPort
from twisted.internet.protocol import Protocol, ServerFactory
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from fwxtwisted.address import Address, normalizeHost
from fwxtwisted.connect import connectFrom
from fwxtwisted.gateway import Gateway
from fwxtwisted.interfaces import (
    ActionState,
    ByteCounts,
    FirewallEvent,
    FirewallNotification,
    IDataFilter,
    IFirewallAction,
    LegTLS,
    RedirectFlags,
    Transport,
)
from fwxtwisted.portclosing import PortCloser
from fwxtwisted.relay import Relay, Side

log = Logger()

Notify = Callable[[FirewallNotification], None]


class _PermissionFactory(ServerFactory):
    """Lets only the expected peer in: anyone else is dropped before a protocol exists."""

    noisy = False

    def __init__(self, action: TCPRedirectAction) -> None:
        self._action = action

    def buildProtocol(self, addr: Any) -> Protocol | None:
        return self._action._accept(Address.fromTwisted(addr))


@implementer(IFirewallAction)
class TCPRedirectAction:
    """One TCP permission: a listener on an internal port relaying to a connect address."""

    transport = Transport.TCP

    def __init__(
        self,
        gateway: Gateway,
        connectAddress: Address,
        externalAddress: str | None,
        expectedPeer: str,
        flags: RedirectFlags,
        context: object,
        notify: Notify,
        label: str = "",
    ) -> None:
        self._gateway = gateway
        self.connectAddress = connectAddress
        self.externalAddress = externalAddress
        self.expectedPeer = normalizeHost(expectedPeer)
        self.flags = flags
        self.context = context
        self._notify = notify
        self._label = label
        self.internalAddress: Address | None = None
        #: TLS for the legs of each connection (set by the session).
        self.tls: dict[Side, LegTLS] = {}
        #: Data filters for each connection (set by the session).
        self.dataFilterFactory: Callable[[], Sequence[IDataFilter]] | None = None
        self.state = ActionState.LISTENING
        self.connectionCount = 0
        self.refusedCount = 0
        self._port: IListeningPort | None = None
        self._timer: IDelayedCall | None = None
        self._relays: set[Relay] = set()
        self._waiters: list[Deferred[ActionState]] = []
        self._closer = PortCloser(self._checkDone)
        self._done = False

    def __repr__(self) -> str:
        return (
            f"<TCPRedirectAction {self.internalAddress} -> {self.connectAddress} {self.state.name}>"
        )

    # Set-up, by the session.

    def bind(self, host: str, port: int) -> IListeningPort:
        """Listen on C{host}:C{port}; raises C{CannotListenError} when it is taken."""
        listening: IListeningPort = self._gateway.reactor.listenTCP(
            port, _PermissionFactory(self), interface=host
        )
        self._port = listening
        self.internalAddress = Address(host, listening.getHost().port)  # type: ignore[attr-defined]
        return listening

    def start(self, timeout: float) -> None:
        """Arm the expiry timer when the permission was granted with TIMEOUT."""
        if RedirectFlags.TIMEOUT in self.flags and self.state is ActionState.LISTENING:
            self._timer = self._gateway.clock.callLater(timeout, self._expire)

    # IFirewallAction

    def cancel(self) -> None:
        if self.state in (ActionState.LISTENING, ActionState.USED):
            self.state = ActionState.CANCELLED
        self._stopListening()
        for relay in list(self._relays):
            relay.abort("permission cancelled")
        self._checkDone()

    def whenFinished(self) -> Deferred[ActionState]:
        if self._done:
            return succeed(self.state)
        waiter: Deferred[ActionState] = Deferred()
        self._waiters.append(waiter)
        return waiter

    # Internals.

    def _accept(self, peer: Address) -> Protocol | None:
        if self.state is not ActionState.LISTENING:
            return None
        if peer.host != self.expectedPeer:
            self.refusedCount += 1
            log.warn(
                "{label}: refused data connection from {peer} to {internal}: "
                "only {expected} may connect",
                label=self._label,
                peer=str(peer),
                internal=str(self.internalAddress),
                expected=self.expectedPeer,
            )
            self._emit(FirewallEvent.REFUSED_CONNECTION, clientAddress=peer, reason="wrong peer")
            return None
        self.connectionCount += 1
        self._cancelTimer()
        if RedirectFlags.ALLOW_MULTIPLE not in self.flags:
            self.state = ActionState.USED
            self._stopListening()
        return self._relayFrom(peer)

    def _relayFrom(self, peer: Address) -> Protocol:
        relay: Relay

        def established() -> None:
            self._emit(
                FirewallEvent.ESTABLISHED_CONNECTION, clientAddress=peer, fastPath=relay.onFastPath
            )

        def closed(counts: ByteCounts, reason: str | None) -> None:
            self._relays.discard(relay)
            self._emit(
                FirewallEvent.CONNECTION_TERMINATING,
                clientAddress=peer,
                counts=counts,
                reason=reason,
                fastPath=relay.onFastPath,
            )
            self._checkDone()

        relay = Relay(
            onEstablished=established,
            onClosed=closed,
            reactor=self._gateway.reactor,
            fastPath=self._gateway.fastPathFor(self.flags) and not self.dataFilterFactory,
            tls=self.tls,
        )
        if self.dataFilterFactory is not None:
            for priority, dataFilter in enumerate(self.dataFilterFactory()):
                relay.attachDataFilter(dataFilter, priority)
        self._relays.add(relay)
        self._emit(FirewallEvent.ACCEPTED_CONNECTION, clientAddress=peer)
        attempt = connectFrom(
            self._gateway.reactor,
            self.connectAddress,
            self.externalAddress,
            relay.makeLeg(Side.SERVER),
            self._gateway.settings.connectTimeout,
        )
        relay.connecting(attempt)  # type: ignore[arg-type]

        def connected(_: object) -> None:
            self._emit(FirewallEvent.CONNECT_TCP, clientAddress=peer)

        def failed(failure: Failure) -> None:
            if failure.check(CancelledError):
                relay.connectFailed("cancelled")
                return
            reason = f"connect to {self.connectAddress} failed: {failure.getErrorMessage()}"
            log.warn("{label}: {reason}", label=self._label, reason=reason)
            self._emit(FirewallEvent.CONNECT_FAILED, clientAddress=peer, reason=reason)
            relay.connectFailed(reason)

        attempt.addCallbacks(connected, failed)
        return relay.makeLeg(Side.CLIENT)

    def _expire(self) -> None:
        self._timer = None
        if self.state is not ActionState.LISTENING:
            return
        self.state = ActionState.EXPIRED
        self._stopListening()
        log.info(
            "{label}: permission on {internal} expired unused",
            label=self._label,
            internal=str(self.internalAddress),
        )
        self._emit(FirewallEvent.PERMISSION_EXPIRED, reason="timeout")
        self._checkDone()

    def _emit(
        self,
        event: FirewallEvent,
        clientAddress: Address | None = None,
        counts: ByteCounts | None = None,
        reason: str | None = None,
        fastPath: bool = False,
    ) -> None:
        self._notify(
            FirewallNotification(
                event=event,
                action=self,
                context=self.context,
                clientAddress=clientAddress,
                serverAddress=self.connectAddress,
                counts=counts or ByteCounts(),
                reason=reason,
                fastPath=fastPath,
            )
        )

    def _cancelTimer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _stopListening(self) -> None:
        self._cancelTimer()
        if self._port is not None:
            port, self._port = self._port, None
            self._closer.close(port)

    def _checkDone(self) -> None:
        if self._done or self._port is not None or self._closer.busy or self._relays:
            return
        if self.state is ActionState.LISTENING:
            return
        self._done = True
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.callback(self.state)
