"""RTSP messages (Request, Response, InterleavedFrame) and their ordered Headers."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import TypeAlias

#: Header names and values are text decoded as latin-1: every byte maps to one character,
#: so whatever a peer sent re-encodes to the same bytes.
ENCODING = "latin-1"

VERSION = "RTSP/1.0"

#: Reason phrases (RFC 2326 §7.1.1) for the statuses the gateway itself answers.
STATUS_PHRASES: dict[int, str] = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    413: "Request Entity Too Large",
    453: "Not Enough Bandwidth",
    454: "Session Not Found",
    455: "Method Not Valid in This State",
    459: "Aggregate operation not allowed",
    461: "Unsupported transport",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Time-out",
    505: "RTSP Version not supported",
}

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
# Every control character but TAB: a CR or LF in a value would end the line early at the
# peer and let a header be smuggled past the filter.
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_URI = re.compile(r"[^\x00-\x20\x7f]+\Z")
_VERSION = re.compile(r"RTSP/[0-9]\.[0-9]\Z")


def isToken(text: str) -> bool:
    """Whether C{text} is an RFC 2616 token: a valid method or header name."""
    return _TOKEN.match(text) is not None


def _checkValue(value: str) -> None:
    if _CONTROL.search(value) is not None:
        raise ValueError(f"control character in header value {value[:40]!r}")
    try:
        value.encode(ENCODING)
    except UnicodeEncodeError:
        raise ValueError(f"header value {value[:40]!r} is not latin-1") from None


class Headers:
    """Header fields in the order received, names in their original case.

    Look-ups ignore the case of names.  Names must be tokens and values must not hold
    control characters other than TAB (L{ValueError} otherwise), so that serializing
    can never produce a line break the filter did not mean.
    """

    __slots__ = ("_fields",)

    def __init__(self, fields: Iterable[tuple[str, str]] = ()) -> None:
        self._fields: list[tuple[str, str]] = []
        for name, value in fields:
            self.add(name, value)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(list(self._fields))

    def __len__(self) -> int:
        return len(self._fields)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Headers):
            return NotImplemented
        return self._fields == other._fields

    def __repr__(self) -> str:
        return f"Headers({self._fields!r})"

    def get(self, name: str, default: str | None = None) -> str | None:
        """The value of the first field called C{name}, or C{default}."""
        lowered = name.lower()
        for fieldName, value in self._fields:
            if fieldName.lower() == lowered:
                return value
        return default

    def getAll(self, name: str) -> list[str]:
        """The values of every field called C{name}, in order."""
        lowered = name.lower()
        return [value for fieldName, value in self._fields if fieldName.lower() == lowered]

    def add(self, name: str, value: str) -> None:
        """Append a field, even if one of that name exists."""
        if not isToken(name):
            raise ValueError(f"{name[:40]!r} is not a header name")
        _checkValue(value)
        self._fields.append((name, value))

    def set(self, name: str, value: str) -> None:
        """Give C{name} the single value C{value}.

        The first field of that name keeps its place (and the case of its name); any
        other is removed.  A new field is appended.
        """
        if not isToken(name):
            raise ValueError(f"{name[:40]!r} is not a header name")
        _checkValue(value)
        lowered = name.lower()
        kept: list[tuple[str, str]] = []
        replaced = False
        for fieldName, old in self._fields:
            if fieldName.lower() != lowered:
                kept.append((fieldName, old))
            elif not replaced:
                kept.append((fieldName, value))
                replaced = True
        if not replaced:
            kept.append((name, value))
        self._fields = kept

    def remove(self, name: str) -> None:
        """Remove every field called C{name}; nothing happens if there is none."""
        lowered = name.lower()
        self._fields = [field for field in self._fields if field[0].lower() != lowered]

    def serialize(self) -> bytes:
        """The fields as C{Name: value} lines, each ended by CRLF."""
        return b"".join(f"{name}: {value}\r\n".encode(ENCODING) for name, value in self._fields)


class _Message:
    """What requests and responses share: headers and a body kept in step with them."""

    __slots__ = ("version", "headers", "_body")

    def __init__(self, version: str, headers: Headers | None, body: bytes) -> None:
        self.version = version
        self.headers = Headers() if headers is None else headers
        self._body = b""
        self.body = body

    @property
    def body(self) -> bytes:
        """The message body; setting it sets Content-Length to match.

        An empty body removes nothing: a C{Content-Length: 0} the peer sent stays, and
        none is added where there was none.
        """
        return self._body

    @body.setter
    def body(self, body: bytes) -> None:
        self._body = bytes(body)
        if body or "Content-Length" in self.headers:
            self.headers.set("Content-Length", str(len(body)))

    def _startLine(self) -> str:
        raise NotImplementedError()

    def serialize(self) -> bytes:
        """The message as sent on the wire: start line, headers, blank line, body.

        @raise ValueError: a start-line field holds a space or a control character.
        """
        return (
            self._startLine().encode(ENCODING)
            + b"\r\n"
            + self.headers.serialize()
            + b"\r\n"
            + self._body
        )


class Request(_Message):
    """An RTSP request: C{method}, request C{uri} (or C{*}), C{version}, headers, body."""

    __slots__ = ("method", "uri")

    def __init__(
        self,
        method: str,
        uri: str,
        version: str = VERSION,
        headers: Headers | None = None,
        body: bytes = b"",
    ) -> None:
        self.method = method
        self.uri = uri
        super().__init__(version, headers, body)

    def _startLine(self) -> str:
        if not isToken(self.method):
            raise ValueError(f"{self.method[:40]!r} is not a method")
        if _URI.match(self.uri) is None:
            raise ValueError(f"{self.uri[:40]!r} is not a request URI")
        if _VERSION.match(self.version) is None:
            raise ValueError(f"{self.version[:40]!r} is not an RTSP version")
        return f"{self.method} {self.uri} {self.version}"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Request):
            return NotImplemented
        return (self.method, self.uri, self.version, self.headers, self.body) == (
            other.method,
            other.uri,
            other.version,
            other.headers,
            other.body,
        )

    def __repr__(self) -> str:
        return (
            f"Request({self.method!r}, {self.uri!r}, {self.version!r}, "
            f"{self.headers!r}, {self.body!r})"
        )


class Response(_Message):
    """An RTSP response: C{version}, C{status} code, C{reason} phrase, headers, body."""

    __slots__ = ("status", "reason")

    def __init__(
        self,
        version: str = VERSION,
        status: int = 200,
        reason: str | None = None,
        headers: Headers | None = None,
        body: bytes = b"",
    ) -> None:
        self.status = status
        self.reason = STATUS_PHRASES.get(status, "") if reason is None else reason
        super().__init__(version, headers, body)

    def _startLine(self) -> str:
        if _VERSION.match(self.version) is None:
            raise ValueError(f"{self.version[:40]!r} is not an RTSP version")
        if not 100 <= self.status <= 999:
            raise ValueError(f"{self.status!r} is not a status code")
        _checkValue(self.reason)
        return f"{self.version} {self.status} {self.reason}"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Response):
            return NotImplemented
        return (self.version, self.status, self.reason, self.headers, self.body) == (
            other.version,
            other.status,
            other.reason,
            other.headers,
            other.body,
        )

    def __repr__(self) -> str:
        return (
            f"Response({self.version!r}, {self.status!r}, {self.reason!r}, "
            f"{self.headers!r}, {self.body!r})"
        )


class InterleavedFrame:
    """One RTP or RTCP packet carried on the RTSP connection (RFC 2326 §10.12)."""

    __slots__ = ("channel", "payload")

    def __init__(self, channel: int, payload: bytes) -> None:
        if not 0 <= channel <= 255:
            raise ValueError(f"channel {channel!r} is not a byte")
        if len(payload) > 0xFFFF:
            raise ValueError(f"payload of {len(payload)} bytes is over 65535")
        self.channel = channel
        self.payload = bytes(payload)

    def serialize(self) -> bytes:
        """C{$}, the channel byte, the length in two big-endian bytes, the payload."""
        return bytes((0x24, self.channel)) + len(self.payload).to_bytes(2, "big") + self.payload

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, InterleavedFrame):
            return NotImplemented
        return (self.channel, self.payload) == (other.channel, other.payload)

    def __repr__(self) -> str:
        return f"InterleavedFrame({self.channel!r}, {self.payload!r})"


#: What a L{MessageParser} emits.
Event: TypeAlias = Request | Response | InterleavedFrame
