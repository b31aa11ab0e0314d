"""TLSLegs: TLS on a relay's legs: starting it, checking a finished handshake, and
closing a leg whose handshake is still under way."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fwxtwisted.interfaces import LegTLS, Side
from fwxtwisted.logs import Logger
from fwxtwisted.relay.legs import RelayLeg, endWriting, isTLSTransport, opposite

log = Logger("fwxtwisted.relay.relay")

#: Seconds a leg still in its TLS handshake when a TLS check refuses the other leg
#: gets to finish it before it is aborted (see L{Relay._refuse}).
TLS_CLOSE_WAIT = 10.0


def handshaking(leg: RelayLeg) -> bool:
    """True when C{leg} speaks TLS and its handshake has not ended."""
    return not leg.handshaken and isTLSTransport(leg.transport)


class TLSLegs:
    """The part of a L{fwxtwisted.relay.relay.Relay} that runs TLS on its legs."""

    _tls: dict[Side, LegTLS]
    _legs: dict[Side, RelayLeg]
    _lost: set[Side]
    _readEnded: set[Side]
    _holds: dict[Side, set[Any]]
    _reactor: Any
    _refused: bool
    _closeReason: str | None
    _fastPathAllowed: bool

    if TYPE_CHECKING:

        def _stopFastPath(self) -> None: ...

        def _cancelConnecting(self) -> None: ...

        def _maybeFinish(self) -> None: ...

    def startTLS(self, side: Side, legTLS: LegTLS) -> None:
        """Start TLS now on the connected leg of C{side} (e.g. after FTP's AUTH TLS).

        What was written to the leg before goes out in clear; what follows is
        encrypted.  The relay leaves the fast path for good.
        """
        self._stopFastPath()
        self._fastPathAllowed = False
        self._tls[side] = legTLS
        leg = self._legs.get(side)
        if leg is not None:
            self._startTLS(leg, legTLS)

    def isTLS(self, side: Side) -> bool:
        """True when the leg of C{side} speaks (or will speak) TLS."""
        return side in self._tls

    def tlsConnection(self, side: Side) -> Any:
        """The pyOpenSSL connection of a TLS leg, else None."""
        leg = self._legs.get(side)
        getHandle = getattr(leg.transport, "getHandle", None) if leg is not None else None
        return getHandle() if getHandle is not None and side in self._tls else None

    def _startTLS(self, leg: RelayLeg, legTLS: LegTLS) -> None:
        self._fastPathAllowed = False
        transport: Any = leg.transport
        # Twisted's startTLS picks the role from who connected; FTPS needs it chosen.
        connectedOut = getattr(transport, "_tlsClientDefault", True)
        transport.startTLS(legTLS.creator, connectedOut == (not legTLS.asServer))

    def legHandshakeCompleted(self, leg: RelayLeg) -> None:
        if self._refused:
            # Its close waited for the end of its handshake (see _refuse).
            self._endLeg(leg)
            return
        legTLS = self._tls.get(leg.side)
        if legTLS is None or legTLS.check is None:
            return
        problem = legTLS.check(self.tlsConnection(leg.side))
        if problem is not None:
            log.warn("{side} TLS refused: {problem}", side=leg.side.value, problem=problem)
            self._refuse(leg, problem)

    def _refuse(self, refused: RelayLeg, reason: str) -> None:
        """A TLS check refused C{refused}: abort it (not a byte more for that peer) and
        relay nothing more.  The other leg is closed cleanly, and if its own TLS
        handshake is under way, once that is done (at most L{TLS_CLOSE_WAIT} seconds):
        cutting a peer's handshake short can end more than this connection (vsftpd
        ends the whole FTP session when a data connection's SSL_accept fails), whereas
        a closed data connection is an ordinary failed transfer.
        """
        self._refused = True
        if self._closeReason is None:
            self._closeReason = reason
        self._cancelConnecting()
        self._holds.clear()
        for leg in self._legs.values():
            transport: Any = leg.transport
            if transport is not None and leg.side not in self._lost:
                # A leg paused for the other must read on, to its close.
                transport.unregisterProducer()
                transport.resumeProducing()
        if refused.transport is not None and refused.side not in self._lost:
            refused.transport.abortConnection()  # type: ignore[attr-defined]
        other = self._legs.get(opposite(refused.side))
        if other is not None:
            self._endLeg(other)
        self._maybeFinish()

    def _endLeg(self, leg: RelayLeg) -> None:
        """Close C{leg} whole, after what is written to it; once the relay is refused,
        a leg whose TLS handshake is under way is closed when that ends."""
        transport: Any = leg.transport
        if leg.side in self._lost or transport is None:
            return
        waiting = self._refused and leg.side in self._tls and not leg.handshaken
        if waiting and self._reactor is not None:
            if leg.closeTimer is None:
                leg.closeTimer = self._reactor.callLater(TLS_CLOSE_WAIT, transport.abortConnection)
            return
        if leg.closeTimer is not None and leg.closeTimer.active():
            leg.closeTimer.cancel()
        leg.closeTimer = None
        endWriting(transport, whole=True, readEnded=leg.side in self._readEnded)
        if handshaking(leg) and self._reactor is not None and leg.side not in self._lost:
            # Its TLS close waits for the handshake: bounded, as for a refused leg.
            leg.closeTimer = self._reactor.callLater(TLS_CLOSE_WAIT, transport.abortConnection)
