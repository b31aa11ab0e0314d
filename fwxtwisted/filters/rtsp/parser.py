"""MessageParser: bytes of one direction of an RTSP connection in, messages and frames out."""

from __future__ import annotations

import enum
import re
from typing import NoReturn

from fwxtwisted.filters.rtsp.errors import RTSPProtocolError
from fwxtwisted.filters.rtsp.message import (
    ENCODING,
    VERSION,
    Event,
    Headers,
    InterleavedFrame,
    Request,
    Response,
)

# RTSP has no 431 (Request Header Fields Too Large): an over-long line or too many header
# fields is answered 400, the RFC 2326 status for anything the parser cannot accept.
BAD_REQUEST = 400
TOO_LARGE = 413
BAD_VERSION = 505

_REQUEST_LINE = re.compile(
    rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+) ([^\x00-\x20\x7f]+) (RTSP/[0-9]\.[0-9])\Z"
)
_STATUS_LINE = re.compile(
    rb"(RTSP/[0-9]\.[0-9]) ([1-5][0-9][0-9])(?: ([^\x00-\x08\x0a-\x1f\x7f]*))?\Z"
)
_HEADER = re.compile(rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+):[ \t]*(.*?)[ \t]*\Z", re.DOTALL)
# TAB is allowed in values; any other control character (a bare CR above all: a server
# could take it as a line end) would let a line mean one thing here and another there.
_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_DIGITS = re.compile(rb"[0-9]+\Z")

_DOLLAR = 0x24
_CR = 0x0D
_LF = 0x0A


class Role(enum.Enum):
    """Whose bytes a parser reads; only the wording of its errors depends on it."""

    CLIENT = "client"
    SERVER = "server"


class _State(enum.Enum):
    BOUNDARY = enum.auto()  # between messages: a start line, a frame or a blank line next
    HEAD = enum.auto()  # after a start line, reading header lines
    BODY = enum.auto()  # after the blank line, waiting for Content-Length bytes


class MessageParser:
    """Split one direction of an RTSP connection into L{Request}, L{Response} and
    L{InterleavedFrame} events.

    Both start-line kinds are parsed whatever the C{role}: a server sends requests too
    (ANNOUNCE, SET_PARAMETER, GET_PARAMETER) and the client answers them.  A body is as
    long as its Content-Length (none is a body of 0 bytes).  Lines may end in CRLF or LF
    alone; blank lines between messages are skipped.  Two things are normalized, so that
    what is forwarded cannot be read two ways: a folded header line is joined to its
    field with one space, and Content-Length is given as one field holding the plain
    number (leading zeros dropped, repeated equal fields merged).

    How the bytes are split between calls to L{feed} never changes the events.  Between
    calls the parser holds at most one partial line, body or frame, so its buffer stays
    under C{max(maxLineLength + 1, maxBodyLength, maxFrameLength + 3)} bytes, plus the
    parsed header fields of the current message (C{maxHeaders} of at most
    C{maxLineLength} each).
    """

    def __init__(
        self,
        role: Role,
        maxLineLength: int = 8192,
        maxHeaders: int = 64,
        maxBodyLength: int = 65536,
        maxFrameLength: int = 65535,
    ) -> None:
        self.role = role
        self.maxLineLength = maxLineLength
        self.maxHeaders = maxHeaders
        self.maxBodyLength = maxBodyLength
        self.maxFrameLength = maxFrameLength
        self._buffer = bytearray()
        self._state = _State.BOUNDARY
        self._startLine: tuple[bytes, ...] = ()
        self._fields: list[tuple[bytes, bytes]] = []
        self._bodyLength = 0
        self._error: RTSPProtocolError | None = None

    @property
    def idle(self) -> bool:
        """Whether the parser is between messages with nothing but blank-line bytes held."""
        return self._state is _State.BOUNDARY and not self._buffer.strip(b"\r\n")

    def feed(self, data: bytes) -> list[Event]:
        """Parse C{data}, which follows the bytes of the previous calls.

        @return: the messages and frames completed by C{data}, in order.
        @raise RTSPProtocolError: the stream is not RTSP or exceeds a limit.  Its
            C{events} holds what C{data} completed before the error.  The parser is
            then stopped: every later call raises the same error again.
        """
        if self._error is not None:
            raise RTSPProtocolError(self._error.status, self._error.reason)
        self._buffer += data
        events: list[Event] = []
        try:
            consumed = self._parse(events)
        except RTSPProtocolError as error:
            self._error = error
            self._buffer = bytearray()
            raise RTSPProtocolError(error.status, error.reason, events) from None
        del self._buffer[:consumed]
        return events

    def eof(self) -> None:
        """Tell the parser the stream has ended.

        @raise RTSPProtocolError: the stream ended inside a message or frame.
        """
        if self._error is None and not self.idle:
            self._fail(BAD_REQUEST, "connection closed inside a message")

    def _fail(self, status: int, reason: str) -> NoReturn:
        error = RTSPProtocolError(status, f"{reason} (from the {self.role.value})")
        self._error = error
        raise error

    def _parse(self, events: list[Event]) -> int:
        """Take every complete element out of the buffer; return how many bytes it used."""
        buffer = self._buffer
        position = 0
        while True:
            if self._state is _State.BODY:
                end = position + self._bodyLength
                if len(buffer) < end:
                    return position
                events.append(self._message(bytes(buffer[position:end])))
                position = end
                self._state = _State.BOUNDARY
                continue
            if self._state is _State.BOUNDARY and position < len(buffer):
                first = buffer[position]
                if first == _DOLLAR:
                    if len(buffer) - position < 4:
                        return position
                    length = int.from_bytes(buffer[position + 2 : position + 4], "big")
                    if length > self.maxFrameLength:
                        self._fail(BAD_REQUEST, f"interleaved frame of {length} bytes")
                    end = position + 4 + length
                    if len(buffer) < end:
                        return position
                    events.append(
                        InterleavedFrame(buffer[position + 1], bytes(buffer[position + 4 : end]))
                    )
                    position = end
                    continue
            lineEnd = buffer.find(b"\n", position)
            if lineEnd < 0:
                # One byte over the limit may be the CR of a CRLF still to come.
                if len(buffer) - position > self.maxLineLength + 1:
                    self._fail(BAD_REQUEST, "line too long")
                return position
            line = bytes(buffer[position:lineEnd])
            position = lineEnd + 1
            if line.endswith(b"\r"):
                line = line[:-1]
            if len(line) > self.maxLineLength:
                self._fail(BAD_REQUEST, "line too long")
            if self._state is _State.BOUNDARY:
                if line:
                    self._readStartLine(line)
            elif line:
                self._readHeaderLine(line)
            else:
                self._endHead(events)

    def _readStartLine(self, line: bytes) -> None:
        if line.startswith(b"RTSP/"):
            match = _STATUS_LINE.match(line)
            what = "status line"
        else:
            match = _REQUEST_LINE.match(line)
            what = "request line"
        if match is None:
            self._fail(BAD_REQUEST, f"malformed {what} {line[:60]!r}")
        if match.group(1 if what == "status line" else 3).decode(ENCODING) != VERSION:
            self._fail(BAD_VERSION, f"not {VERSION}: {line[:60]!r}")
        self._startLine = match.groups(b"")
        self._fields = []
        self._state = _State.HEAD

    def _readHeaderLine(self, line: bytes) -> None:
        if line[0] in b" \t":
            # A folded continuation (RFC 2616 §2.2 LWS): joined to the field above with one
            # space, so the peer downstream gets a single line it cannot read differently.
            if not self._fields:
                self._fail(BAD_REQUEST, "continuation line before any header")
            name, value = self._fields[-1]
            value = value + b" " + line.strip(b" \t")
            if len(name) + 2 + len(value) > self.maxLineLength:
                self._fail(BAD_REQUEST, "folded header too long")
            if _CONTROL.search(value) is not None:
                self._fail(BAD_REQUEST, f"control character in header {name[:40]!r}")
            self._fields[-1] = (name, value)
            return
        match = _HEADER.match(line)
        if match is None:
            self._fail(BAD_REQUEST, f"malformed header line {line[:60]!r}")
        name, value = match.groups()
        if _CONTROL.search(value) is not None:
            self._fail(BAD_REQUEST, f"control character in header {name[:40]!r}")
        if len(self._fields) >= self.maxHeaders:
            self._fail(BAD_REQUEST, f"more than {self.maxHeaders} header fields")
        self._fields.append((name, value))

    def _endHead(self, events: list[Event]) -> None:
        lengths = {value for name, value in self._fields if name.lower() == b"content-length"}
        length = 0
        if lengths:
            if len(lengths) > 1:
                self._fail(BAD_REQUEST, "conflicting Content-Length headers")
            (text,) = lengths
            if _DIGITS.match(text) is None:
                self._fail(BAD_REQUEST, f"bad Content-Length {text[:40]!r}")
            # Checked as text first: int() refuses strings of over 4300 digits.
            text = text.lstrip(b"0") or b"0"
            if len(text) > 18 or int(text) > self.maxBodyLength:
                self._fail(TOO_LARGE, f"body of {text[:40].decode(ENCODING)} bytes")
            length = int(text)
        if length:
            self._bodyLength = length
            self._state = _State.BODY
        else:
            events.append(self._message(b""))
            self._state = _State.BOUNDARY

    def _message(self, body: bytes) -> Request | Response:
        headers = Headers(
            (name.decode(ENCODING), value.decode(ENCODING)) for name, value in self._fields
        )
        fields = [part.decode(ENCODING) for part in self._startLine]
        self._fields = []
        if fields[0].startswith("RTSP/"):
            version, status, reason = fields
            return Response(version, int(status), reason, headers, body)
        method, uri, version = fields
        return Request(method, uri, version, headers, body)
