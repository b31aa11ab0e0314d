"""ProxyHeaderReader: the first protocol of a primary connection behind a load balancer.

It reads the PROXY protocol header (L{fwxtwisted.net.proxyprotocol}) within a timeout
and only then asks its listener for the session's protocol, naming the client the header
names; the transport is handed over to that protocol with the bytes that followed the
header. No session, filter or upstream connection exists before the header is valid.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure

from fwxtwisted.address import Address
from fwxtwisted.logs import Logger
from fwxtwisted.net.proxyprotocol import HeaderParser, ProxyHeader, ProxyHeaderError

log = Logger()

#: Seconds a connection gets to send its whole PROXY header.
HEADER_TIMEOUT = 5.0

#: Given the balancer's address and the header, returns the protocol that takes the
#: connection over, or None to close it.
StartSession = Callable[[Address, ProxyHeader], Protocol | None]


class ProxyHeaderReader(Protocol):
    """Reads one PROXY header, then gives the connection to what L{StartSession} returns."""

    def __init__(
        self, peer: Address, startSession: StartSession, clock: Any, timeout: float = HEADER_TIMEOUT
    ) -> None:
        self._peer = peer
        self._startSession: StartSession | None = startSession
        self._parser = HeaderParser()
        self._clock = clock
        self._timeout = timeout
        self._timer: Any = None

    def connectionMade(self) -> None:
        self._timer = self._clock.callLater(self._timeout, self._expired)

    def dataReceived(self, data: bytes) -> None:
        if self._startSession is None:
            return  # refused already: the connection is closing
        try:
            header = self._parser.feed(data)
        except ProxyHeaderError as e:
            self._refuse(f"bad PROXY protocol header: {e}")
            return
        if header is not None:
            self._handOver(header)

    def _handOver(self, header: ProxyHeader) -> None:
        startSession, self._startSession = self._startSession, None
        self._cancelTimer()
        assert startSession is not None and self.transport is not None
        transport = self.transport
        protocol = startSession(self._peer, header)
        if protocol is None:
            transport.loseConnection()
            return
        # Twisted's TCP connection reads, half-closes and closes through .protocol.
        transport.protocol = protocol  # type: ignore[attr-defined]
        protocol.makeConnection(transport)
        rest = self._parser.rest
        if rest and transport.protocol is protocol:  # type: ignore[attr-defined]
            protocol.dataReceived(rest)

    def _expired(self) -> None:
        self._timer = None
        if self._startSession is not None:
            self._refuse(f"no complete PROXY protocol header within {self._timeout:g} s")

    def _refuse(self, reason: str) -> None:
        self._startSession = None
        self._cancelTimer()
        log.warn("refused {peer}: {reason}", peer=str(self._peer), reason=reason)
        assert self.transport is not None
        self.transport.loseConnection()

    def _cancelTimer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def connectionLost(self, reason: Failure | None = None) -> None:
        if self._startSession is not None:
            log.debug(
                "{peer} closed before its PROXY protocol header was complete", peer=str(self._peer)
            )
        self._startSession = None
        self._cancelTimer()
