"""LineReader: splits an FTP control-channel byte stream into bounded, NUL-free lines."""

from __future__ import annotations

from dataclasses import dataclass

_CR = 0x0D
_LF = b"\n"
_NUL = b"\0"


@dataclass(frozen=True)
class Line:
    """One complete line, without its LF or CRLF terminator."""

    raw: bytes


@dataclass(frozen=True)
class LineError:
    """The stream broke the line rules; the reader that reported it is dead."""

    reason: str


LineEvent = Line | LineError


class LineReader:
    """Split a byte stream into lines ending in LF, with an optional CR before it stripped.

    Real clients and servers send CRLF; a bare LF is tolerated.  A bare CR is not a
    terminator: it stays in the line, for the command or reply parser to judge.

    The reader never holds more than C{maxLength + 1} bytes of an unfinished line: a line
    is reported too long as soon as the bytes seen prove it, before its LF arrives.  Every
    error is reported at the earliest byte that proves it, so the events depend only on
    the stream, never on how it was split into chunks.
    """

    def __init__(self, maxLength: int = 2048) -> None:
        """
        @param maxLength: the longest line accepted, in bytes, terminator excluded.
        """
        if maxLength < 1:
            raise ValueError(f"maxLength must be positive, not {maxLength}")
        self.maxLength = maxLength
        self._buffer = b""
        self._failed = False

    @property
    def failed(self) -> bool:
        """True once a L{LineError} was reported: the reader returns nothing more."""
        return self._failed

    @property
    def pending(self) -> bytes:
        """The start of an unfinished line (what would be lost if the stream ended now)."""
        return self._buffer

    def discard(self) -> int:
        """Drop the unfinished line; return its length in bytes."""
        dropped, self._buffer = len(self._buffer), b""
        return dropped

    def feed(self, data: bytes) -> list[LineEvent]:
        """Consume C{data}; return the lines it completes, then at most one L{LineError}."""
        if self._failed:
            return []
        buffer = self._buffer + data
        events: list[LineEvent] = []
        start = 0
        while (end := buffer.find(_LF, start)) >= 0:
            segment = buffer[start:end]
            reason = self._problem(segment)
            if reason is not None:
                return self._fail(events, reason)
            if segment and segment[-1] == _CR:
                segment = segment[:-1]
            events.append(Line(segment))
            start = end + 1
        tail = buffer[start:]
        reason = self._problem(tail)
        if reason is not None:
            return self._fail(events, reason)
        self._buffer = tail
        return events

    def _fail(self, events: list[LineEvent], reason: str) -> list[LineEvent]:
        self._failed = True
        self._buffer = b""
        events.append(LineError(reason))
        return events

    def _problem(self, segment: bytes) -> str | None:
        """Why the line starting with C{segment} (its LF excluded) is bad, or None.

        Works the same on a finished line and on the unfinished tail of the buffer,
        which is what makes the events independent of chunk boundaries.
        """
        limit = self.maxLength
        # Only the first limit + 2 bytes can matter: by then the length is decided.
        head = segment[: limit + 2]
        overAt: int | None = None
        if len(head) > limit:
            if head[limit] != _CR:
                overAt = limit
            elif len(head) > limit + 1:
                # A CR right at the limit may be the terminator's; the next byte decides.
                overAt = limit + 1
        nulAt = head.find(_NUL)
        if nulAt >= 0 and (overAt is None or nulAt <= overAt):
            return "NUL byte in line"
        if overAt is not None:
            return f"line longer than {limit} bytes"
        return None
