"""Reply, ReplyReader and formatReply: FTP server replies, single- and multi-line."""

from __future__ import annotations

import re
from dataclasses import dataclass

#: The encoding of reply text, the same as for command arguments: byte-transparent.
ENCODING = "latin-1"

# Three digits, the first 1-5, or 6 for the protected replies of RFC 2228, which a
# filter should see (and refuse) rather than have the reader reject.
_START = re.compile(rb"([1-6][0-9]{2})([ -]|\Z)")
_FORBIDDEN = re.compile(r"[\r\n\x00]")


class ReplyError(ValueError):
    """The server's lines are not FTP replies, or a reply is over a size limit."""


@dataclass(frozen=True)
class Reply:
    """One complete reply: its code and the raw lines, terminators removed, as received."""

    code: int
    lines: tuple[bytes, ...]

    def __post_init__(self) -> None:
        if not 100 <= self.code <= 699:
            raise ValueError(f"reply code {self.code} is not three digits 1yz-6yz")
        if not self.lines:
            raise ValueError("a reply has at least one line")
        # A bare CR is kept: servers sending a CRLF-ended banner file produce one.
        if any(b"\n" in line for line in self.lines):
            raise ValueError("reply lines must not hold LF")

    @property
    def text(self) -> str:
        """The message text: the lines joined with LF, without their code prefixes.

        The code is removed from the first and last lines, and from the middle lines
        that repeat it followed by a hyphen (as some servers prefix every line).
        """
        prefix = b"%d-" % self.code
        texts = []
        last = len(self.lines) - 1
        for index, line in enumerate(self.lines):
            if index in (0, last) or line.startswith(prefix):
                line = line[4:]
            texts.append(line.decode(ENCODING))
        return "\n".join(texts)

    @property
    def isPreliminary(self) -> bool:
        """1yz: the command started; another reply will complete it."""
        return self.code < 200

    @property
    def isPositive(self) -> bool:
        """2yz: the command completed successfully."""
        return 200 <= self.code < 300

    @property
    def isIntermediate(self) -> bool:
        """3yz: accepted, but the server waits for another command (PASS after USER)."""
        return 300 <= self.code < 400

    @property
    def isTransientNegative(self) -> bool:
        """4yz: failed, may succeed if tried again."""
        return 400 <= self.code < 500

    @property
    def isPermanentNegative(self) -> bool:
        """5yz: failed for good."""
        return 500 <= self.code < 600

    @property
    def isNegative(self) -> bool:
        """4yz or 5yz: the command failed."""
        return 400 <= self.code < 600

    @property
    def isProtected(self) -> bool:
        """6yz: an RFC 2228 protected reply, whose real reply is encrypted inside."""
        return self.code >= 600

    def toBytes(self) -> bytes:
        """The wire form: every line CRLF-terminated."""
        return b"".join(line + b"\r\n" for line in self.lines)


class ReplyReader:
    """Assemble lines (from a L{LineReader}) into L{Reply} objects (RFC 959, 4.2).

    A reply starts with three digits (the first 1-6) and a space, a hyphen or the end
    of the line.  A hyphen opens a multi-line reply, which ends at the first line
    starting with the same code followed by a space or the end of the line; the lines
    between may be anything.  After a L{ReplyError} the reader is dead and raises it
    again.
    """

    def __init__(self, maxLines: int = 1000, maxBytes: int = 256 * 1024) -> None:
        """
        @param maxLines: the most lines one multi-line reply may have.
        @param maxBytes: the most bytes (terminators excluded) of one multi-line reply.
        """
        self.maxLines = maxLines
        self.maxBytes = maxBytes
        self._code: bytes | None = None
        self._lines: list[bytes] = []
        self._size = 0
        self._error: ReplyError | None = None

    @property
    def inReply(self) -> bool:
        """True between the first and last lines of a multi-line reply."""
        return self._code is not None

    def discard(self) -> int:
        """Drop the lines of an unfinished multi-line reply; return their bytes (with
        their terminators, as read)."""
        dropped = sum(len(line) + 2 for line in self._lines)
        self._code, self._lines, self._size = None, [], 0
        return dropped

    def lineReceived(self, line: bytes) -> Reply | None:
        """Consume one line; return the reply it completes, if any.

        @raise ReplyError: the line cannot start a reply, or the reply is too big.
        """
        if self._error is not None:
            raise self._error
        try:
            return self._lineReceived(line)
        except ReplyError as error:
            self._error = error
            self._lines = []
            raise

    def _lineReceived(self, line: bytes) -> Reply | None:
        if b"\n" in line:
            raise ReplyError("LF inside a line: not a line from LineReader")
        if self._code is None:
            match = _START.match(line)
            if match is None:
                raise ReplyError(f"not a reply: {line[:40]!r}")
            if match.group(2) != b"-":
                return Reply(int(match.group(1)), (line,))
            self._code = match.group(1)
            self._lines = []
            self._size = 0
        self._lines.append(line)
        self._size += len(line)
        if len(self._lines) > self.maxLines:
            raise ReplyError(f"multi-line {self._code.decode()} reply over {self.maxLines} lines")
        if self._size > self.maxBytes:
            raise ReplyError(f"multi-line {self._code.decode()} reply over {self.maxBytes} bytes")
        if len(self._lines) > 1 and line[:3] == self._code and line[3:4] in (b"", b" "):
            reply = Reply(int(self._code), tuple(self._lines))
            self._code = None
            self._lines = []
            return reply
        return None


def formatReply(code: int, text: str | list[str]) -> bytes:
    """The wire form of a reply: one line for a string or a one-item list, else multi-line.

    Middle lines that start with a digit get a leading space, so that none can be read
    as the end of the reply (RFC 959, 4.2).

    @raise ValueError: a bad code, no lines, a CR, LF or NUL in the text, or text that
        is not latin-1.
    """
    if not 100 <= code <= 699:
        raise ValueError(f"reply code {code} is not three digits 1yz-6yz")
    lines = [text] if isinstance(text, str) else list(text)
    if not lines:
        raise ValueError("a reply has at least one line")
    if any(_FORBIDDEN.search(line) for line in lines):
        raise ValueError("reply text must not hold CR, LF or NUL")
    if len(lines) == 1:
        wire = [f"{code} {lines[0]}"]
    else:
        middle = [" " + line if "0" <= line[:1] <= "9" else line for line in lines[1:-1]]
        wire = [f"{code}-{lines[0]}", *middle, f"{code} {lines[-1]}"]
    return "".join(line + "\r\n" for line in wire).encode(ENCODING)
