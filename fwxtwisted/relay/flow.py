"""ReadingControl: when a relay's legs are read, and WriteWatch, which says when what is
written to a leg backs up."""

from __future__ import annotations

from collections.abc import Hashable
from typing import TYPE_CHECKING, Any

from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer

from fwxtwisted.interfaces import Direction, Side
from fwxtwisted.net.tls import tlsConnectionOf
from fwxtwisted.relay.legs import TARGET, RelayLeg, opposite

if TYPE_CHECKING:
    from fwxtwisted.relay import splice
    from fwxtwisted.relay.filterchain import FilterChain

#: Why a leg is not read (see L{ReadingControl.pauseReading}): the other leg's peer
#: does not take what is written to it; bytes are held for a leg not connected yet;
#: the leg's own peer does not take what is written to it (only with data filters,
#: which may answer a peer themselves).
PEER_BACKED = "peer backed up"
HELD = "held for a leg not connected"
OWN_BACKED = "own writes backed up"


class ReadingControl:
    """The part of a L{fwxtwisted.relay.relay.Relay} that pauses and resumes reading its
    legs, each for the reasons given, and reads a leg again once none is left."""

    _holds: dict[Side, set[Hashable]]
    #: Legs whose written bytes are backed up now.
    _backed: set[Side]
    _legs: dict[Side, RelayLeg]
    _lost: set[Side]
    _readEnded: set[Side]
    _chain: FilterChain | None
    _fast: splice.SpliceRelay | None
    _refused: bool

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
        if backed:
            self._backed.add(side)
        else:
            self._backed.discard(side)
        hold = self.pauseReading if backed else self.resumeReading
        hold(opposite(side), PEER_BACKED)
        if not backed:
            self.resumeReading(side, OWN_BACKED)
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
        self.pauseReading(side, OWN_BACKED)

    def _writable(self, direction: Direction) -> bool:
        """Whether what is written in C{direction} drains (see IDataChannel.writable)."""
        return TARGET[direction] not in self._backed

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


@implementer(IPushProducer)
class WriteWatch:
    """The producer registered on one leg's transport: told when what is written to
    that leg backs up, and when it drains.  Stop does nothing: a transport stops its
    producer as soon as its own connection is lost, before the relay hears of it; the
    relay closes the other leg itself, after what the owner writes to it then (a
    stopped TLS transport would drop that: the 421 that tells an FTP client why its
    server went away)."""

    __slots__ = ("_relay", "_side")

    def __init__(self, relay: ReadingControl, side: Side) -> None:
        self._relay = relay
        self._side = side

    def pauseProducing(self) -> None:
        self._relay.writesBacked(self._side, True)

    def resumeProducing(self) -> None:
        self._relay.writesBacked(self._side, False)

    def stopProducing(self) -> None:
        pass
