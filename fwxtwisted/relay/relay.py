"""Relay: the user-mode byte pump joining a client leg and a server leg.

It carries the data-filter chain (filterchain.py), flow control (each transport is
the other's streaming producer), half-close in each direction, and the byte counts
reported at close.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.python.failure import Failure

from fwxtwisted.interfaces import (
    TLS_UNFINISHED,
    ByteCounts,
    Direction,
    IDataFilter,
    LegTLS,
    Side,
)
from fwxtwisted.logs import Logger
from fwxtwisted.net.sendnow import writeNow
from fwxtwisted.relay import splice
from fwxtwisted.relay.fastswitch import FAST_PATH_AFTER, FastPathSwitch
from fwxtwisted.relay.filterchain import FilterChain
from fwxtwisted.relay.flow import HELD, ReadingControl, WriteWatch
from fwxtwisted.relay.heldbytes import HeldBytes
from fwxtwisted.relay.legs import (
    FROM,
    TARGET,
    describe,
    endWriting,
    opposite,
)
from fwxtwisted.relay.legs import RelayLeg as RelayLeg  # re-exported
from fwxtwisted.relay.tlslegs import TLSLegs, handshaking

log = Logger()

#: Bytes held for a leg that is not connected yet before the sending peer is paused.
PENDING_LIMIT = 256 * 1024


#: Iterating the enum costs a generator each time; this is on every leg's close.
_SIDES = (Side.CLIENT, Side.SERVER)


class Relay(ReadingControl, TLSLegs, FastPathSwitch):
    """Joins two legs.  The legs may connect in any order; bytes for a leg that is not
    up yet are held (the sender is paused past L{PENDING_LIMIT}).

    @ivar counts: bytes received from each peer so far.
    """

    def __init__(
        self,
        onEstablished: Callable[[], None] | None = None,
        onClosed: Callable[[ByteCounts, str | None], None] | None = None,
        onLegConnected: Callable[[RelayLeg], None] | None = None,
        reactor: Any = None,
        fastPath: bool = False,
        tls: dict[Side, LegTLS] | None = None,
        onLegLost: Callable[[Side, str], None] | None = None,
    ) -> None:
        self._onLegLost = onLegLost
        #: TLS to start on each leg as it connects.
        self._tls: dict[Side, LegTLS] = dict(tls or {})
        self._onEstablished = onEstablished
        self._reactor = reactor
        self._fastPathAllowed = fastPath and reactor is not None and splice.available()
        self._fast: splice.SpliceRelay | None = None
        #: True once the bytes move on the zero-copy fast path.
        self.onFastPath = False
        self._onLegConnected = onLegConnected
        self._onClosed = onClosed
        self._legs: dict[Side, RelayLeg] = {}
        self._lost: set[Side] = set()
        #: Made when the first data filter is attached: most relays never have one.
        self._chain: FilterChain | None = None
        #: What is held for a leg not connected yet, until it connects.
        self._held: dict[Side, HeldBytes] = {}
        self._eofSent: set[Direction] = set()
        #: Legs whose peer's EOF was read: the reactor no longer watches them.
        self._readEnded: set[Side] = set()
        self._fromClient = 0
        self._fromServer = 0
        self._connecting: list[Deferred[object]] = []
        self._closeReason: str | None = None
        #: A TLS check refused a leg: nothing more is relayed.
        self._refused = False
        self._finished = False
        #: close() was called: both legs are closing, neither is news to the owner.
        self._closing = False
        self.established = False
        #: Why each leg is not read now; it is read again once none is left.
        self._holds: dict[Side, set[Hashable]] = {}
        self._backed: set[Side] = set()

    @property
    def counts(self) -> ByteCounts:
        """Bytes received from each peer so far."""
        return ByteCounts(self._fromClient, self._fromServer)

    @property
    def finished(self) -> bool:
        """True once both legs are gone and the close was reported."""
        return self._finished

    def leg(self, side: Side) -> RelayLeg | None:
        """The connected leg of C{side}, if any (none once the relay has L{finished})."""
        return self._legs.get(side)

    def makeLeg(self, side: Side) -> RelayLeg:
        """A protocol for C{side}; it joins the relay when its connection is made."""
        return RelayLeg(self, side)

    def connecting(self, attempt: Deferred[object]) -> None:
        """Remember an outbound connect in flight, to cancel it if the relay ends first."""
        self._connecting.append(attempt)

    def attachDataFilter(self, dataFilter: IDataFilter, priority: int = 0) -> None:
        """Insert a filter; lower priorities see client bytes first, server bytes last.

        @raise RuntimeError: the relay already moves its bytes on the fast path.
        """
        if self._fast is not None:
            raise RuntimeError("a data filter cannot join a relay on the fast path")
        if self._chain is None:
            self._chain = FilterChain(
                self._deliver, self._deliverEOF, self.abort, self._filterHold, self._writable
            )
        self._chain.attach(dataFilter, priority)

    @property
    def fastPathEligible(self) -> bool:
        """True while the relay may still move to the fast path (or is on it)."""
        return self._fast is not None or (
            self._fastPathAllowed and self._chain is None and not self._refused
        )

    @property
    def hasDataFilters(self) -> bool:
        """True when any data filter is attached."""
        return self._chain is not None

    def abort(self, reason: str) -> None:
        """Close both legs now and cancel a connect in flight."""
        self._stopFastPath()
        if self._closeReason is None:
            self._closeReason = reason
        self._cancelConnecting()
        for side, leg in list(self._legs.items()):
            if side not in self._lost and leg.transport is not None:
                leg.transport.abortConnection()  # type: ignore[attr-defined]
        self._maybeFinish()

    def close(self, reason: str | None = None) -> None:
        """Close both legs after flushing what is already written to them; a leg whose
        TLS handshake has not ended is aborted (its close would wait for the handshake,
        which a stalled peer never ends, and what is written to it is not readable
        before)."""
        self._closing = True
        self._stopFastPath()
        if self._closeReason is None:
            self._closeReason = reason
        self._cancelConnecting()
        for side, leg in list(self._legs.items()):
            if side in self._lost or leg.transport is None:
                continue
            if handshaking(leg):
                leg.transport.abortConnection()  # type: ignore[attr-defined]
            else:
                endWriting(leg.transport, whole=True, readEnded=side in self._readEnded)
        self._maybeFinish()

    def connectFailed(self, reason: str) -> None:
        """The outbound leg will never come: close the other side."""
        self._lost.add(Side.SERVER)
        self.close(reason)

    def _cancelConnecting(self) -> None:
        attempts, self._connecting = self._connecting, []
        for attempt in attempts:
            if not attempt.called:
                attempt.cancel()

    # Called by the legs.

    def legConnected(self, leg: RelayLeg) -> None:
        if self._finished or (self._closeReason is not None and leg.side not in self._legs):
            if leg.transport is not None:
                leg.transport.loseConnection()
            return
        self._legs[leg.side] = leg
        legTLS = self._tls.get(leg.side)
        if legTLS is not None:
            self._startTLS(leg, legTLS)
        # Held bytes go out first: before anything the owner writes when told of the
        # leg, and even when the other leg is not up (a data filter may write to both
        # peers before either is connected).
        held = self._held.pop(leg.side, None)
        if held is not None:
            self._sendHeld(leg, held)
        transport: Any = leg.transport
        if self._holds.get(leg.side):
            transport.pauseProducing()
        if not self._closing and self._closeReason is None:
            # Each leg's transport says when what is written to it backs up (see
            # writesBacked), from its connect on: a filter may write to a peer before
            # the other leg exists.  A closing leg has had its producer unregistered
            # for good (endWriting): a TLS transport would hold back its close for a
            # producer registered again.
            transport.registerProducer(WriteWatch(self, leg.side), True)
        if self._onLegConnected is not None:
            self._onLegConnected(leg)
        other = self._legs.get(opposite(leg.side))
        if other is None or leg.side not in self._legs:
            return
        if held is not None and held.senderPaused:
            self.resumeReading(other.side, HELD)
        self.established = True
        if FAST_PATH_AFTER <= 0:
            self._tryFastPath()
        if self._onEstablished is not None:
            self._onEstablished()

    def legReceived(self, side: Side, data: bytes) -> None:
        if self._refused:
            return
        if side is Side.CLIENT:
            self._fromClient += len(data)
        else:
            self._fromServer += len(data)
        direction = FROM[side]
        if self._chain is not None:
            self._chain.received(direction, data)
            return
        if (
            self._fastPathAllowed
            and self._fast is None
            and self.established
            and self._fromClient + self._fromServer >= FAST_PATH_AFTER
            and self._tryFastPath((direction, data))
        ):
            return
        self._deliver(direction, data)

    def legEOF(self, side: Side) -> None:
        self._readEnded.add(side)
        direction = FROM[side]
        if self._chain is not None:
            self._chain.eofReceived(direction)
        else:
            self._deliverEOF(direction)

    def legLost(self, side: Side, reason: Failure) -> None:
        self._lost.add(side)
        lostLeg = self._legs.get(side)
        if lostLeg is not None and lostLeg.closeTimer is not None and lostLeg.closeTimer.active():
            lostLeg.closeTimer.cancel()
        if self._closeReason is None:
            clean = isinstance(reason.value, ConnectionDone)
            if not clean:
                self._closeReason = f"{side.value} connection lost: {reason.getErrorMessage()}"
            if lostLeg is not None and handshaking(lostLeg) and not self._closing:
                # However cleanly it closed, nothing it moved is whole: say so.
                self._closeReason = (
                    f"{side.value} {TLS_UNFINISHED}"
                    if clean
                    else f"{self._closeReason} (it {TLS_UNFINISHED})"
                )
        other = opposite(side)
        otherLeg = self._legs.get(other)
        if otherLeg is not None and other not in self._lost and otherLeg.transport is not None:
            # After close() the other leg is closing already (unless it connected
            # since), and its loss is no news to the owner.
            if not self._closing:
                if self._onLegLost is not None and not self._finished:
                    # The owner may still write to the other leg before it closes.
                    self._onLegLost(side, describe(reason))
                self._endLeg(otherLeg)
            elif not getattr(otherLeg.transport, "disconnecting", False):
                self._endLeg(otherLeg)
        elif otherLeg is None:
            self._cancelConnecting()
        self._maybeFinish()

    # Delivery to the legs.

    def _deliver(self, direction: Direction, data: bytes) -> None:
        if not data:
            return
        target = TARGET[direction]
        leg = self._legs.get(target)
        if leg is not None and leg.transport is not None:
            if target not in self._lost:
                writeNow(leg.transport, data)
            return
        if target in self._lost or self._closeReason is not None:
            return
        held = self._heldFor(target)
        if held.add(data) > PENDING_LIMIT and not held.senderPaused:
            held.senderPaused = True
            self.pauseReading(opposite(target), HELD)

    def _deliverEOF(self, direction: Direction) -> None:
        target = TARGET[direction]
        leg = self._legs.get(target)
        if leg is None:
            self._heldFor(target).eof = True
            return
        if direction in self._eofSent:
            return
        self._eofSent.add(direction)
        transport = leg.transport
        if target not in self._lost and transport is not None:
            endWriting(transport, whole=False)
        if len(self._eofSent) == 2:
            self.close()

    def _heldFor(self, side: Side) -> HeldBytes:
        held = self._held.get(side)
        if held is None:
            held = self._held[side] = HeldBytes()
        return held

    def _sendHeld(self, leg: RelayLeg, held: HeldBytes) -> None:
        assert leg.transport is not None
        data = held.take()
        if data:
            writeNow(leg.transport, data)
        if held.eof:
            self._deliverEOF(FROM[opposite(leg.side)])

    def _maybeFinish(self) -> None:
        if self._finished:
            return
        for side in _SIDES:
            if side in self._legs and side not in self._lost:
                return
        for attempt in self._connecting:
            if not attempt.called:
                return
        if not self._legs and self._closeReason is None:
            return
        self._finished = True
        if self._chain is not None:
            self._chain.detachAll()
        onClosed = self._onClosed
        # The owner's callbacks point back at the owner, and the legs at this relay:
        # dropped once it is over, a short connection is freed by reference counting
        # instead of a pass of the cyclic garbage collector (measured: about 6.5 % of
        # its CPU, docs/performance.md).
        self._onClosed = self._onLegConnected = self._onLegLost = self._onEstablished = None
        if onClosed is not None:
            onClosed(self.counts, self._closeReason)
        self._legs = {}
