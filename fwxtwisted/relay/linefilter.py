"""LineDataFilter: a data filter that cuts a direction into lines, for a subclass to rewrite."""

from __future__ import annotations

from dataclasses import dataclass

from twisted.internet.defer import CancelledError, Deferred
from twisted.python.failure import Failure

from fwxtwisted.errors import SessionClosed
from fwxtwisted.interfaces import Direction
from fwxtwisted.logs import Logger
from fwxtwisted.relay.datafilter import PassThroughDataFilter

log = Logger()

_WHO = {Direction.CLIENT_TO_SERVER: "client", Direction.SERVER_TO_CLIENT: "server"}


@dataclass
class _Lane:
    """What one filtered direction holds."""

    buffer: bytes = b""
    #: The Deferred of a line being rewritten: everything after it waits.
    waiting: Deferred[bytes | None] | None = None
    eof: bool = False
    #: No more bytes to handle: the EOF passed on, or the connection dropped.
    done: bool = False
    pumping: bool = False


class LineDataFilter(PassThroughDataFilter):
    """Cuts the bytes of L{directions} into lines and passes each through
    L{lineReceived}; a subclass writes only that method.

    - A line is handed over with its terminator (C{b"\\n"} or C{b"\\r\\n"}); at EOF an
      unterminated last line is a line too, with none.
    - L{lineReceived} returns the bytes to pass on (the line itself, a rewrite, or
      C{b""} to drop it), or a Deferred firing with them (a redirect to ask for first,
      say).  While it is pending, every later byte of that direction, and its EOF, is
      held, so the peer sees the lines in order; the other direction flows on.  A
      Deferred that has already fired (the real session grants redirects at once) is
      handled in the same loop, without recursion.
    - Bounds: a line longer than L{maxLineLength} bytes (terminator included) or more
      than L{maxHeldBytes} held behind a pending line ends the connection (see
      L{lineTooLong}, L{tooMuchHeld}).  A Deferred that fails calls L{lineFailed}.
    - Once detached, a pending Deferred is cancelled and whatever comes back is dropped.
    """

    #: The directions cut into lines; the others pass unchanged.
    directions: tuple[Direction, ...] = (Direction.SERVER_TO_CLIENT, Direction.CLIENT_TO_SERVER)
    maxLineLength = 4096
    maxHeldBytes = 64 * 1024
    #: Starts the reasons this filter gives when it ends a connection.
    logPrefix = "line filter"

    def __init__(self) -> None:
        self._lanes = {direction: _Lane() for direction in self.directions}

    # For subclasses.

    def lineReceived(self, direction: Direction, line: bytes) -> bytes | Deferred[bytes | None]:
        """One line of C{direction}, terminator included; return what to pass on (or a
        Deferred firing with it).  By default the line unchanged."""
        return line

    def lineFailed(self, direction: Direction, failure: Failure) -> bytes | None:
        """The Deferred of a line failed: return what to pass on instead.

        By default: nothing when the session closed or the filter was detached, else
        the failure is logged and the connection ended.
        """
        if not failure.check(SessionClosed, CancelledError):
            log.failure("{prefix}: rewriting a line failed", failure, prefix=self.logPrefix)
            self.abort(f"{self.logPrefix}: rewriting a {_WHO[direction]} line failed")
        return None

    def lineTooLong(self, direction: Direction) -> None:
        """A line longer than L{maxLineLength}: ends the connection by default."""
        self.abort(
            f"{self.logPrefix}: {_WHO[direction]} line longer than {self.maxLineLength} bytes"
        )

    def tooMuchHeld(self, direction: Direction) -> None:
        """More than L{maxHeldBytes} waiting behind a pending line: ends the connection."""
        self.abort(
            f"{self.logPrefix}: more than {self.maxHeldBytes} {_WHO[direction]} bytes "
            "behind a pending line"
        )

    def abort(self, reason: str) -> None:
        """End the whole connection (both legs) with C{reason}; nothing more is handled."""
        for lane in self._lanes.values():
            lane.done = True
            lane.buffer = b""
        if self.channel is not None:
            self.channel.close(reason)

    # IDataFilter

    def dataReceived(self, direction: Direction, data: bytes) -> None:
        lane = self._lanes.get(direction)
        if lane is None:
            self.write(direction, data)
            return
        if lane.done:
            return
        lane.buffer += data
        if lane.waiting is not None and len(lane.buffer) > self.maxHeldBytes:
            self.tooMuchHeld(direction)
            return
        self._pump(direction, lane)

    def eofReceived(self, direction: Direction) -> None:
        lane = self._lanes.get(direction)
        if lane is None:
            self.writeEOF(direction)
            return
        lane.eof = True
        self._pump(direction, lane)

    def detached(self) -> None:
        for lane in self._lanes.values():
            lane.done = True
            lane.buffer = b""
            waiting, lane.waiting = lane.waiting, None
            if waiting is not None:
                waiting.cancel()
        super().detached()

    # The loop.

    def _pump(self, direction: Direction, lane: _Lane) -> None:
        # A Deferred that fires at once re-enters here from its callback: this loop
        # carries on instead of recursing one level per line.
        if lane.pumping:
            return
        lane.pumping = True
        try:
            while lane.waiting is None and not lane.done:
                end = lane.buffer.find(b"\n")
                if end < 0:
                    # Even its terminator would not fit: no need to wait for the rest.
                    if len(lane.buffer) >= self.maxLineLength:
                        self.lineTooLong(direction)
                        return
                    if not (lane.eof and lane.buffer):
                        break
                cut = end + 1 if end >= 0 else len(lane.buffer)
                line, lane.buffer = lane.buffer[:cut], lane.buffer[cut:]
                if len(line) > self.maxLineLength:
                    self.lineTooLong(direction)
                    return
                self._handle(direction, lane, line)
            if lane.eof and lane.waiting is None and not lane.done:
                lane.done = True
                self.writeEOF(direction)
        finally:
            lane.pumping = False

    def _handle(self, direction: Direction, lane: _Lane, line: bytes) -> None:
        result = self.lineReceived(direction, line)
        if not isinstance(result, Deferred):
            self.write(direction, result)
            return
        lane.waiting = result

        def passOn(replacement: bytes | None) -> None:
            if lane.waiting is not result:
                return  # detached (and cancelled) meanwhile
            lane.waiting = None
            if replacement:
                self.write(direction, replacement)
            self._pump(direction, lane)

        def failed(failure: Failure) -> None:
            if lane.waiting is not result:
                return
            passOn(self.lineFailed(direction, failure))

        result.addCallbacks(passOn, failed)
