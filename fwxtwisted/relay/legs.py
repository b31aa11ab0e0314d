"""The pieces a Relay is made of: its leg protocol, the link a data filter writes to,
and the small rules for ending a leg and naming why it ended."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from typing import Protocol as TypingProtocol

from twisted.internet.interfaces import (
    IHalfCloseableProtocol,
    IHandshakeListener,
    IPushProducer,
    ISSLTransport,
)
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from zope.interface import implementer

from fwxtwisted.interfaces import Direction, Side
from fwxtwisted.net.sendnow import CONNECTION_DONE, closeNow, shutWritingNow


class LegOwner(TypingProtocol):
    """What a leg tells about itself: a Relay, or anything else that joins two legs."""

    def legConnected(self, leg: RelayLeg) -> None:
        """The leg's connection is made."""

    def legReceived(self, side: Side, data: bytes) -> None:
        """The leg's peer sent C{data}."""

    def legEOF(self, side: Side) -> None:
        """The leg's peer half-closed its sending side."""

    def legHandshakeCompleted(self, leg: RelayLeg) -> None:
        """The leg's TLS handshake is done."""

    def legLost(self, side: Side, reason: Failure) -> None:
        """The leg's connection is gone."""


FROM = {Side.CLIENT: Direction.CLIENT_TO_SERVER, Side.SERVER: Direction.SERVER_TO_CLIENT}
TARGET = {Direction.CLIENT_TO_SERVER: Side.SERVER, Direction.SERVER_TO_CLIENT: Side.CLIENT}


@implementer(IHalfCloseableProtocol, IHandshakeListener)
class RelayLeg(Protocol):
    """The Twisted protocol of one side; everything it hears goes to its relay."""

    def __init__(self, relay: LegOwner, side: Side) -> None:
        self.relay = relay
        self.side = side
        #: Told once the leg is connected (set by whoever connects it out).
        self.onConnected: Callable[[RelayLeg], None] | None = None
        #: True once this leg's TLS handshake is done.
        self.handshaken = False
        #: Aborts the leg if its close waits for a TLS handshake that does not end.
        self.closeTimer: Any = None

    def connectionMade(self) -> None:
        self.relay.legConnected(self)
        # Called once, then dropped: the connect's callback holds its Deferred, and
        # through it this protocol (a cycle the garbage collector would have to find).
        onConnected, self.onConnected = self.onConnected, None
        if onConnected is not None:
            onConnected(self)

    def dataReceived(self, data: bytes) -> None:
        self.relay.legReceived(self.side, data)

    def readConnectionLost(self) -> None:
        self.relay.legEOF(self.side)

    def writeConnectionLost(self) -> None:
        pass

    def handshakeCompleted(self) -> None:
        self.handshaken = True
        self.relay.legHandshakeCompleted(self)

    def connectionLost(self, reason: Failure = CONNECTION_DONE) -> None:
        self.relay.legLost(self.side, reason)


@implementer(IPushProducer)
class LegProducer:
    """A leg as the producer of the other leg's transport: pause and resume pass, stop
    does not.  A transport stops its producer as soon as its own connection is lost,
    before the relay hears of it; the relay closes the other leg itself, after what
    the owner writes to it then (a stopped TLS transport would drop that: the 421
    that tells an FTP client why its server went away)."""

    def __init__(self, leg: RelayLeg) -> None:
        self._leg = leg

    def pauseProducing(self) -> None:
        if self._leg.transport is not None:
            self._leg.transport.pauseProducing()  # type: ignore[attr-defined]

    def resumeProducing(self) -> None:
        if self._leg.transport is not None:
            self._leg.transport.resumeProducing()  # type: ignore[attr-defined]

    def stopProducing(self) -> None:
        pass


def isTLSTransport(transport: Any) -> bool:
    """True for a transport that speaks TLS: started on a TCP connection (Twisted sets
    its C{TLS} flag and gives it L{ISSLTransport}) or accepted on a TLS listener."""
    return bool(getattr(transport, "TLS", False)) or ISSLTransport.providedBy(transport)


def endWriting(transport: Any, whole: bool, readEnded: bool = False) -> None:
    """Close C{transport} (C{whole}) or its writing half, after what is written to it.

    The other leg stops being its producer first: a TLS transport defers its close
    while a producer is registered, and would keep the last bytes and the close.  A
    TLS transport has no half-close, so it closes whole, through the TLS layer (a
    close_notify first).  A plain TCP transport with nothing queued sends its FIN at
    once, and closes at once when its FIN is out and C{readEnded} says the peer's EOF
    has been read (see sendnow.py).
    """
    transport.unregisterProducer()
    if isTLSTransport(transport):
        # Never the TCP connection's own loseWriteConnection (a TLS transport has one,
        # from the socket under it, and a TLS listener's passes it through): a FIN
        # under the TLS layer, without close_notify, that the TLS layer does not know
        # of; its close then finds the connection gone and fails inside Twisted.
        transport.loseConnection()
        return
    if whole:
        if readEnded and closeNow(transport):
            return
    elif shutWritingNow(transport):
        return
    halfClose = None if whole else getattr(transport, "loseWriteConnection", None)
    if halfClose is not None:
        halfClose()
    else:
        transport.loseConnection()


def describe(reason: Failure) -> str:
    """A short reason for a lost connection (TLS errors are long lists otherwise)."""
    value = reason.value
    args = getattr(value, "args", ())
    if args and isinstance(args[0], list) and args[0] and isinstance(args[0][-1], tuple):
        # pyOpenSSL: [(library, function, reason), ...]: the last reason says it.
        return f"TLS error: {args[0][-1][-1]}"
    mismatches = getattr(value, "errors", None)
    if isinstance(mismatches, list) and mismatches and hasattr(mismatches[0], "mismatched_id"):
        # service_identity: a valid certificate for another name than the one expected.
        names = ", ".join(_identity(m.mismatched_id) for m in mismatches)
        return f"TLS error: certificate does not match {names}"
    return reason.getErrorMessage()


def _identity(pattern: Any) -> str:
    ip = getattr(pattern, "ip", None)
    if ip is not None:
        return str(ip)
    name = getattr(pattern, "hostname", pattern)
    return name.decode("ascii", "replace") if isinstance(name, bytes) else str(name)


def opposite(side: Side) -> Side:
    return Side.SERVER if side is Side.CLIENT else Side.CLIENT
