"""JoinAction: a single-use relay between two legs that may each be accepted or connected.

redirectConnections always accepts one leg and connects the other.  Translating FTP
data-channel modes needs the other two shapes: a passive client with an active server
(both peers connect to the gateway) and an active client with a passive server (the
gateway connects to both).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.error import ConnectingCancelledError
from twisted.internet.interfaces import IDelayedCall, IListeningPort
from twisted.internet.protocol import Protocol, ServerFactory
from twisted.python.failure import Failure
from zope.interface import implementer

from fwxtwisted.address import Address, normalizeHost
from fwxtwisted.interfaces import (
    ActionState,
    ByteCounts,
    Connect,
    FirewallEvent,
    FirewallNotification,
    IJoin,
    LegSpec,
    LegTLS,
    Listen,
    RedirectFlags,
    Side,
    Transport,
)
from fwxtwisted.logs import Logger
from fwxtwisted.net.connect import connectFrom
from fwxtwisted.net.portclosing import PortCloser
from fwxtwisted.net.quietport import listenQuietly
from fwxtwisted.permissions.gateway import Gateway
from fwxtwisted.relay.relay import Relay

log = Logger()

Notify = Callable[[FirewallNotification], None]


class _OnePeer(ServerFactory):
    noisy = False

    def __init__(self, action: JoinAction, side: Side) -> None:
        self._action = action
        self._side = side

    def buildProtocol(self, addr: object) -> Protocol | None:
        return self._action._accept(self._side, Address.fromTwisted(addr))


@implementer(IJoin)
class JoinAction:
    """Joins a CLIENT-side leg and a SERVER-side leg, each per its L{LegSpec}.

    Listening legs take one connection from their expected peer; others are refused
    and logged.  The whole join expires if it is not established within the timeout.
    """

    transport = Transport.TCP

    def __init__(
        self,
        gateway: Gateway,
        client: LegSpec,
        server: LegSpec,
        flags: RedirectFlags,
        context: object,
        notify: Notify,
        label: str = "",
        tls: Mapping[Side, LegTLS] | None = None,
    ) -> None:
        self._gateway = gateway
        self._specs = {Side.CLIENT: client, Side.SERVER: server}
        self.flags = flags
        self.context = context
        self._notify = notify
        self._label = label
        self.state = ActionState.LISTENING
        self.connectionCount = 0
        self.refusedCount = 0
        self.listeningAddresses: dict[Side, Address] = {}
        self._ports: dict[Side, IListeningPort] = {}
        self._closer = PortCloser(self._checkDone)
        self._timer: IDelayedCall | None = None
        self._waiters: list[Deferred[ActionState]] = []
        self._done = False
        self._relay = Relay(
            onEstablished=self._established,
            onClosed=self._closed,
            reactor=gateway.reactor,
            fastPath=gateway.fastPathFor(flags),
            tls=dict(tls or {}),
        )
        self._started = False

    @property
    def bytesMoved(self) -> int:
        """Bytes its connection has relayed so far, both ways (an idle check)."""
        counts = self._relay.counts
        return counts.fromClient + counts.fromServer

    # IFirewallAction attributes, in the terms of a redirect.

    @property
    def internalAddress(self) -> Address | None:
        """The client-side listening address, else the server-side one."""
        return self.listeningAddresses.get(Side.CLIENT) or self.listeningAddresses.get(Side.SERVER)

    @property
    def connectAddress(self) -> Address | None:
        """The address of the server-side leg when the gateway connects it."""
        spec = self._specs[Side.SERVER]
        return spec.address if isinstance(spec, Connect) else None

    @property
    def externalAddress(self) -> str | None:
        spec = self._specs[Side.SERVER]
        return spec.sourceHost if isinstance(spec, Connect) else spec.host

    @property
    def expectedPeer(self) -> str | None:
        spec = self._specs[Side.CLIENT]
        return spec.expectedPeer if isinstance(spec, Listen) else None

    def listeningSides(self) -> list[Side]:
        """The sides that need a port bound before L{start}."""
        return [side for side, spec in self._specs.items() if isinstance(spec, Listen)]

    def bind(self, side: Side, port: int) -> IListeningPort:
        """Listen for C{side}'s peer; raises C{CannotListenError} when the port is taken."""
        spec = self._specs[side]
        assert isinstance(spec, Listen)
        listening: IListeningPort = listenQuietly(
            self._gateway.reactor, port, _OnePeer(self, side), spec.host
        )
        self._ports[side] = listening
        self.listeningAddresses[side] = Address(spec.host, listening.getHost().port)  # type: ignore[attr-defined]
        return listening

    def start(self, timeout: float) -> None:
        """Start the connecting legs and arm the expiry timer."""
        self._started = True
        if RedirectFlags.TIMEOUT in self.flags:
            self._timer = self._gateway.clock.callLater(timeout, self._expire)
        for side, spec in self._specs.items():
            if isinstance(spec, Connect):
                self._connect(side, spec)

    def cancel(self) -> None:
        if self.state in (ActionState.LISTENING, ActionState.USED):
            self.state = ActionState.CANCELLED
        self._stopListening()
        self._relay.abort("permission cancelled")
        self._checkDone()

    def whenFinished(self) -> Deferred[ActionState]:
        if self._done:
            return succeed(self.state)
        waiter: Deferred[ActionState] = Deferred()
        self._waiters.append(waiter)
        return waiter

    # Internals.

    def _accept(self, side: Side, peer: Address) -> Protocol | None:
        spec = self._specs[side]
        assert isinstance(spec, Listen)
        if side not in self._ports:
            return None
        if peer.host != normalizeHost(spec.expectedPeer):
            self.refusedCount += 1
            log.warn(
                "{label}: refused data connection from {peer} to {internal}: "
                "only {expected} may connect",
                label=self._label,
                peer=str(peer),
                internal=str(self.listeningAddresses[side]),
                expected=spec.expectedPeer,
            )
            self._emit(FirewallEvent.REFUSED_CONNECTION, peer=peer, reason="wrong peer")
            return None
        self._closer.close(self._ports.pop(side))
        self.connectionCount += 1
        self._emit(FirewallEvent.ACCEPTED_CONNECTION, peer=peer)
        return self._relay.makeLeg(side)

    def _connect(self, side: Side, spec: Connect) -> None:
        attempt = connectFrom(
            self._gateway.reactor,
            spec.address,
            spec.sourceHost,
            self._relay.makeLeg(side),
            self._gateway.settings.connectTimeout,
        )

        def connected(_: object) -> None:
            self.connectionCount += 1
            self._emit(FirewallEvent.CONNECT_TCP, peer=spec.address)

        def failed(failure: Failure) -> None:
            if failure.check(CancelledError, ConnectingCancelledError):
                return
            reason = f"connect to {spec.address} failed: {failure.getErrorMessage()}"
            log.warn("{label}: {reason}", label=self._label, reason=reason)
            self._emit(FirewallEvent.CONNECT_FAILED, peer=spec.address, reason=reason)
            self.cancel()

        attempt.addCallbacks(connected, failed)
        # Both legs may be connecting at once; the relay cancels what is still pending.
        self._relay.connecting(attempt)  # type: ignore[arg-type]

    def _established(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if self.state is ActionState.LISTENING:
            self.state = ActionState.USED
        self._emit(FirewallEvent.ESTABLISHED_CONNECTION)

    def _closed(self, counts: ByteCounts, reason: str | None) -> None:
        self._stopListening()
        if self._relay.established:
            self._emit(FirewallEvent.CONNECTION_TERMINATING, counts=counts, reason=reason)
        self._checkDone()

    def _expire(self) -> None:
        self._timer = None
        if self.state is not ActionState.LISTENING:
            return
        self.state = ActionState.EXPIRED
        log.info("{label}: data connection join expired", label=self._label)
        self._emit(FirewallEvent.PERMISSION_EXPIRED, reason="timeout")
        self._stopListening()
        self._relay.abort("permission expired")
        self._checkDone()

    def _stopListening(self) -> None:
        for side in list(self._ports):
            self._closer.close(self._ports.pop(side))

    def _emit(
        self,
        event: FirewallEvent,
        peer: Address | None = None,
        counts: ByteCounts | None = None,
        reason: str | None = None,
    ) -> None:
        self._notify(
            FirewallNotification(
                event=event,
                action=self,
                context=self.context,
                clientAddress=peer,
                counts=counts or ByteCounts(),
                reason=reason,
                fastPath=(
                    self._relay.fastPathEligible
                    if event is FirewallEvent.ESTABLISHED_CONNECTION
                    else self._relay.onFastPath
                ),
            )
        )

    def _checkDone(self) -> None:
        if self._done or self._ports or self._closer.busy or self.state is ActionState.LISTENING:
            return
        if self._relay.established and not self._relay.finished:
            return
        self._done = True
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.callback(self.state)
