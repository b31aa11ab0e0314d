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
from twisted.internet.interfaces import IPushProducer
from twisted.python.failure import Failure
from zope.interface import implementer

from fwxtwisted.interfaces import (
    TLS_UNFINISHED,
    ByteCounts,
    Direction,
    IDataFilter,
    LegTLS,
    Side,
)
from fwxtwisted.logs import Logger
from fwxtwisted.net.sendnow import writeNow, writingShutElsewhere
from fwxtwisted.net.tls import tlsConnectionOf
from fwxtwisted.relay import splice
from fwxtwisted.relay.filterchain import FilterChain
from fwxtwisted.relay.heldbytes import HeldBytes
from fwxtwisted.relay.legs import (
    FROM,
    TARGET,
    describe,
    endWriting,
    isTLSTransport,
    opposite,
)
from fwxtwisted.relay.legs import RelayLeg as RelayLeg  # re-exported

log = Logger()

#: Bytes held for a leg that is not connected yet before the sending peer is paused.
PENDING_LIMIT = 256 * 1024

#: Bytes a relay carries in user mode before it moves to the fast path.  Setting up
#: the pipes costs more than relaying a short exchange in Python: an interactive
#: session, a directory listing or a one-byte request never pays for them, and idle
#: connections hold no pipes.
FAST_PATH_AFTER = 64 * 1024

#: Seconds a leg still in its TLS handshake when a TLS check refuses the other leg
#: gets to finish it before it is aborted (see L{Relay._refuse}).
TLS_CLOSE_WAIT = 10.0

#: Iterating the enum costs a generator each time; this is on every leg's close.
_SIDES = (Side.CLIENT, Side.SERVER)

#: Why a leg is not read (see L{Relay.pauseReading}): the other leg's peer does not
#: take what is written to it; bytes are held for a leg not connected yet; the leg's
#: own peer does not take what is written to it (only with data filters, which may
#: answer a peer themselves).
_PEER_BACKED = "peer backed up"
_HELD = "held for a leg not connected"
_OWN_BACKED = "own writes backed up"


@implementer(IPushProducer)
class _WriteWatch:
    """The producer registered on one leg's transport: told when what is written to
    that leg backs up, and when it drains.  Stop does nothing: a transport stops its
    producer as soon as its own connection is lost, before the relay hears of it; the
    relay closes the other leg itself, after what the owner writes to it then (a
    stopped TLS transport would drop that: the 421 that tells an FTP client why its
    server went away)."""

    __slots__ = ("_relay", "_side")

    def __init__(self, relay: Relay, side: Side) -> None:
        self._relay = relay
        self._side = side

    def pauseProducing(self) -> None:
        self._relay.writesBacked(self._side, True)

    def resumeProducing(self) -> None:
        self._relay.writesBacked(self._side, False)

    def stopProducing(self) -> None:
        pass


def _handshaking(leg: RelayLeg) -> bool:
    """True when C{leg} speaks TLS and its handshake has not ended."""
    return not leg.handshaken and isTLSTransport(leg.transport)


class Relay:
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
            self._chain = FilterChain(self._deliver, self._deliverEOF, self.abort, self._filterHold)
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
            if _handshaking(leg):
                leg.transport.abortConnection()  # type: ignore[attr-defined]
            else:
                endWriting(leg.transport, whole=True, readEnded=side in self._readEnded)
        self._maybeFinish()

    def connectFailed(self, reason: str) -> None:
        """The outbound leg will never come: close the other side."""
        self._lost.add(Side.SERVER)
        self.close(reason)

    # Flow control.

    def pauseReading(self, side: Side, reason: Hashable) -> None:
        """Stop reading from the leg of C{side} (now, or when it connects) until every
        reason given is withdrawn with L{resumeReading}.  Idempotent per reason."""
        holds = self._holds.setdefault(side, set())
        if reason in holds:
            return
        holds.add(reason)
        if len(holds) == 1:
            self._setReading(side, False)

    def resumeReading(self, side: Side, reason: Hashable) -> None:
        """Withdraw C{reason}; the leg is read again when no reason is left."""
        holds = self._holds.get(side)
        if not holds or reason not in holds:
            return
        holds.discard(reason)
        if not holds:
            self._setReading(side, True)

    def writesBacked(self, side: Side, backed: bool) -> None:
        """What is written to the leg of C{side} backs up (C{backed}) or has drained:
        the other leg is not read meanwhile, nor, when data filters are attached, this
        leg itself (a filter may answer a peer by itself, as an FTP gateway does: a
        peer that does not read those answers must not be read either, or they pile
        up in its write buffer)."""
        hold = self.pauseReading if backed else self.resumeReading
        hold(opposite(side), _PEER_BACKED)
        if not backed:
            self.resumeReading(side, _OWN_BACKED)
            return
        leg = self._legs.get(side)
        if self._chain is None or leg is None:
            return
        if not leg.handshaken and (
            getattr(leg.transport, "TLS", False) or tlsConnectionOf(leg.transport) is not None
        ):
            # A TLS transport also pauses its producer while its handshake holds the
            # bytes written: that handshake needs the leg read.
            return
        self.pauseReading(side, _OWN_BACKED)

    def _filterHold(self, direction: Direction, reason: Hashable, paused: bool) -> None:
        """A data filter pauses or resumes reading the peer that sends C{direction}."""
        source = opposite(TARGET[direction])
        if paused:
            self.pauseReading(source, reason)
        else:
            self.resumeReading(source, reason)

    def _setReading(self, side: Side, reading: bool) -> None:
        if self._fast is not None or self._refused or side in self._lost:
            return
        leg = self._legs.get(side)
        transport: Any = leg.transport if leg is not None else None
        if transport is None:
            return  # applied when the leg connects
        if not reading:
            transport.pauseProducing()
        elif side not in self._readEnded:
            # A transport whose peer's EOF was read is not watched again.
            transport.resumeProducing()

    # TLS.

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
        if _handshaking(leg) and self._reactor is not None and leg.side not in self._lost:
            # Its TLS close waits for the handshake: bounded, as for a refused leg.
            leg.closeTimer = self._reactor.callLater(TLS_CLOSE_WAIT, transport.abortConnection)

    # The fast path.

    def _tryFastPath(self, inHand: tuple[Direction, bytes] | None = None) -> bool:
        """Move to the fast path if the relay may and both write buffers are empty.

        @param inHand: bytes just read in user mode, not yet delivered: the fast path
            sends them first.
        @return: True when the relay is on the fast path now.
        """
        if not self._fastPathAllowed or self._fast is not None or self._chain is not None:
            return False
        if self._closeReason is not None or self._lost or self._eofSent:
            return False
        client, server = self._legs.get(Side.CLIENT), self._legs.get(Side.SERVER)
        if client is None or server is None:
            return False
        clientTransport, serverTransport = client.transport, server.transport
        if not (
            splice.transportEligible(clientTransport) and splice.transportEligible(serverTransport)
        ):
            # Bytes still sit in a Twisted write buffer: a later read tries again.
            return False
        try:
            self._fast = splice.SpliceRelay(
                self._reactor,
                clientTransport,
                serverTransport,
                self._countFromClient,
                self._countFromServer,
                self._fastPathEnded,
                fromClient=inHand[1] if inHand and inHand[0] is Direction.CLIENT_TO_SERVER else b"",
                fromServer=inHand[1] if inHand and inHand[0] is Direction.SERVER_TO_CLIENT else b"",
            )
        except splice.PipeUnavailable as e:
            # Relaying in Python beats splicing through one-page pipes, and a relay
            # must not fail for want of them.
            self._fastPathAllowed = False
            splice.reportUnavailable(str(e))
            return False
        for transport in (clientTransport, serverTransport):
            transport.unregisterProducer()  # type: ignore[union-attr]
        self.onFastPath = True
        return True

    def _countFromClient(self, count: int) -> None:
        self._fromClient += count

    def _countFromServer(self, count: int) -> None:
        self._fromServer += count

    def _fastPathEnded(self, error: str | None) -> None:
        self._fast = None
        if error is None:
            self._eofSent.update(Direction)
            for leg in self._legs.values():
                # The pumps read each socket's EOF and shut its writing half: a clean
                # end, not the hang-up Twisted would report as a non-clean loss.
                self._readEnded.add(leg.side)
                writingShutElsewhere(leg.transport)
            self.close()
        else:
            self.abort(error)

    def _stopFastPath(self) -> None:
        if self._fast is not None:
            fast, self._fast = self._fast, None
            fast.stop()

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
            transport.registerProducer(_WriteWatch(self, leg.side), True)
        if self._onLegConnected is not None:
            self._onLegConnected(leg)
        other = self._legs.get(opposite(leg.side))
        if other is None or leg.side not in self._legs:
            return
        if held is not None and held.senderPaused:
            self.resumeReading(other.side, _HELD)
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
            if lostLeg is not None and _handshaking(lostLeg) and not self._closing:
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
            self.pauseReading(opposite(target), _HELD)

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
