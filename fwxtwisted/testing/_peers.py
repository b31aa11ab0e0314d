"""PlaysPeers: what a FakeSession's test plays as the two peers of the primary connection."""

from __future__ import annotations

from collections.abc import Hashable

from fwxtwisted.interfaces import ByteCounts, Direction, Side
from fwxtwisted.testing._chain import CheckedChain


class PlaysPeers:
    """The part of L{FakeSession} that plays the client and the server: their bytes
    and half-closes go through the data filter chain; what leaves it accumulates."""

    closed: bool
    counts: ByteCounts
    toServer: bytes
    toClient: bytes
    toServerEOF: bool
    toClientEOF: bool
    _chain: CheckedChain
    _peerEOF: set[Direction]
    _lost: set[Side]
    readingPaused: set[Direction]
    _holds: dict[Direction, set[Hashable]]

    def clientSends(self, data: bytes) -> None:
        """Bytes from the client: into the chain toward the server."""
        self._peerSends(Direction.CLIENT_TO_SERVER, data)

    def serverSends(self, data: bytes) -> None:
        """Bytes from the server: into the chain toward the client."""
        self._peerSends(Direction.SERVER_TO_CLIENT, data)

    def clientEOF(self) -> None:
        """The client half-closes: the EOF goes through the chain toward the server."""
        self._peerEOFs(Direction.CLIENT_TO_SERVER)

    def serverEOF(self) -> None:
        """The server half-closes: the EOF goes through the chain toward the client."""
        self._peerEOFs(Direction.SERVER_TO_CLIENT)

    def _peerSends(self, direction: Direction, data: bytes) -> None:
        if not isinstance(data, bytes):
            raise TypeError(f"data must be bytes, not {type(data).__name__}")
        if direction in self._peerEOF:
            raise RuntimeError(f"the test sent {direction.value} bytes after its EOF")
        # A real transport never delivers empty chunks, nor anything after close.
        if self.closed or not data:
            return
        if direction is Direction.CLIENT_TO_SERVER:
            self.counts = ByteCounts(self.counts.fromClient + len(data), self.counts.fromServer)
        else:
            self.counts = ByteCounts(self.counts.fromClient, self.counts.fromServer + len(data))
        if self._chain:
            self._chain.received(direction, data)
        else:
            self._deliver(direction, data)

    def _peerEOFs(self, direction: Direction) -> None:
        if direction in self._peerEOF:
            raise RuntimeError(f"the test sent a second {direction.value} EOF")
        self._peerEOF.add(direction)
        if self.closed:
            return
        if self._chain:
            self._chain.eofReceived(direction)
        else:
            self._deliverEOF(direction)

    def _deliver(self, direction: Direction, data: bytes) -> None:
        if direction is Direction.CLIENT_TO_SERVER:
            if Side.SERVER not in self._lost:
                self.toServer += data
        elif Side.CLIENT not in self._lost:
            self.toClient += data

    def _deliverEOF(self, direction: Direction) -> None:
        if direction is Direction.CLIENT_TO_SERVER:
            self.toServerEOF = True
        else:
            self.toClientEOF = True

    def _hold(self, direction: Direction, holder: Hashable, paused: bool) -> None:
        holders = self._holds[direction]
        if paused:
            holders.add(holder)
        else:
            holders.discard(holder)
        if holders:
            self.readingPaused.add(direction)
        else:
            self.readingPaused.discard(direction)
