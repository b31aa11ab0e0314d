"""TCPRedirectAction: a TCP permission, its peer-checked listener and its relays."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from twisted.internet.defer import CancelledError
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import Protocol, ServerFactory
from twisted.python.failure import Failure
from zope.interface import implementer

from fwxtwisted.address import Address
from fwxtwisted.interfaces import (
    ActionState,
    ByteCounts,
    FirewallEvent,
    IDataFilter,
    IFirewallAction,
    LegTLS,
    RedirectFlags,
    Side,
    Transport,
)
from fwxtwisted.logs import Logger
from fwxtwisted.net.connect import connectFrom
from fwxtwisted.net.quietport import listenQuietly
from fwxtwisted.permissions.permission import ListeningPermission
from fwxtwisted.relay.relay import Relay

log = Logger()


class _PermissionFactory(ServerFactory):
    """Lets only the expected peer in: anyone else is dropped before a protocol exists."""

    noisy = False

    def __init__(self, action: TCPRedirectAction) -> None:
        self._action = action

    def buildProtocol(self, addr: Any) -> Protocol | None:
        return self._action._accept(Address.fromTwisted(addr))


@implementer(IFirewallAction)
class TCPRedirectAction(ListeningPermission):
    """One TCP permission: a listener on an internal port relaying to a connect address."""

    transport = Transport.TCP
    refusedWhat = "data connection"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: TLS for the legs of each connection (set by the session).
        self.tls: dict[Side, LegTLS] = {}
        #: Data filters for each connection (set by the session).
        self.dataFilterFactory: Callable[[], Sequence[IDataFilter]] | None = None
        self._relays: set[Relay] = set()

    def __repr__(self) -> str:
        return (
            f"<TCPRedirectAction {self.internalAddress} -> {self.connectAddress} {self.state.name}>"
        )

    # IFirewallAction

    def cancel(self) -> None:
        if self.state in (ActionState.LISTENING, ActionState.USED):
            self.state = ActionState.CANCELLED
        self._stopListening()
        for relay in list(self._relays):
            relay.abort("permission cancelled")
        self._checkDone()

    @property
    def bytesMoved(self) -> int:
        """Bytes its open connections have relayed so far, both ways (an idle check)."""
        return sum(r.counts.fromClient + r.counts.fromServer for r in self._relays)

    # Internals.

    def _listen(self, host: str, port: int) -> IListeningPort:
        return listenQuietly(self._gateway.reactor, port, _PermissionFactory(self), host)

    def _live(self) -> bool:
        return bool(self._relays)

    def _accept(self, peer: Address) -> Protocol | None:
        if self.state is not ActionState.LISTENING:
            return None
        if peer.host != self.expectedPeer:
            self._refuse(peer, "wrong peer")
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
                FirewallEvent.ESTABLISHED_CONNECTION,
                clientAddress=peer,
                fastPath=relay.fastPathEligible,
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
