"""LineDataFilter, sans-I/O: lines in order, bytes and EOF held behind a pending line,
bounds, synchronous answers, detach."""

from __future__ import annotations

import pytest
from twisted.internet.defer import Deferred, fail, succeed
from zope.interface import implementer

from fwxtwisted.errors import PortRangeExhausted, SessionClosed
from fwxtwisted.interfaces import Direction, IDataChannel
from fwxtwisted.relay.linefilter import LineDataFilter

C2S = Direction.CLIENT_TO_SERVER
S2C = Direction.SERVER_TO_CLIENT


@implementer(IDataChannel)
class Channel:
    """Records what the filter passes on."""

    def __init__(self) -> None:
        self.out: dict[Direction, bytes] = {C2S: b"", S2C: b""}
        self.eof: list[Direction] = []
        self.closed: list[str] = []

    def write(self, direction: Direction, data: bytes) -> None:
        assert direction not in self.eof, "written after EOF"
        self.out[direction] += data

    def writeEOF(self, direction: Direction) -> None:
        assert direction not in self.eof, "second EOF"
        self.eof.append(direction)

    def close(self, reason: str) -> None:
        self.closed.append(reason)


class Upper(LineDataFilter):
    """Server lines upper-cased; a line starting with "ASK" waits for the test."""

    directions = (S2C,)
    maxLineLength = 16
    maxHeldBytes = 32

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[Deferred[bytes | None]] = []
        self.lines: list[bytes] = []
        self.answer: bytes | None = None

    def lineReceived(self, direction: Direction, line: bytes) -> bytes | Deferred[bytes | None]:
        self.lines.append(line)
        if line.startswith(b"ASK"):
            if self.answer is not None:
                return succeed(self.answer)
            asked: Deferred[bytes | None] = Deferred()
            self.asked.append(asked)
            return asked
        return line.upper()


def attached(lineFilter: LineDataFilter | None = None) -> tuple[LineDataFilter, Channel]:
    lineFilter = lineFilter if lineFilter is not None else Upper()
    channel = Channel()
    lineFilter.attached(channel)
    return lineFilter, channel


def test_lines_with_their_terminators_and_the_last_at_eof() -> None:
    lineFilter, channel = attached()
    lineFilter.dataReceived(S2C, b"one\r\ntw")
    assert channel.out[S2C] == b"ONE\r\n"
    lineFilter.dataReceived(S2C, b"o\nthree")
    lineFilter.eofReceived(S2C)
    assert channel.out[S2C] == b"ONE\r\nTWO\nTHREE"
    assert channel.eof == [S2C]
    assert lineFilter.lines == [b"one\r\n", b"two\n", b"three"]  # type: ignore[attr-defined]


def test_other_directions_pass_unchanged() -> None:
    lineFilter, channel = attached()
    lineFilter.dataReceived(C2S, b"no line ending")
    lineFilter.eofReceived(C2S)
    assert channel.out[C2S] == b"no line ending"
    assert channel.eof == [C2S]


@pytest.mark.parametrize("size", [1, 2, 3, 5])
def test_any_split_gives_the_same_lines(size: int) -> None:
    script = b"a\r\nbb\ncc\r\n\r\nd"
    lineFilter, channel = attached()
    for start in range(0, len(script), size):
        lineFilter.dataReceived(S2C, script[start : start + size])
    lineFilter.eofReceived(S2C)
    assert channel.out[S2C] == script.upper()


def test_held_behind_a_pending_line_with_the_eof() -> None:
    upper, channel = attached(Upper())
    assert isinstance(upper, Upper)
    upper.dataReceived(S2C, b"x\nASK 1\nafter\nlast")
    upper.eofReceived(S2C)
    upper.dataReceived(C2S, b"client flows")
    assert channel.out == {S2C: b"X\n", C2S: b"client flows"}
    assert channel.eof == []
    upper.asked[0].callback(b"ANSWER\n")
    assert channel.out[S2C] == b"X\nANSWER\nAFTER\nLAST"
    assert channel.eof == [S2C]


def test_dropped_line_and_none() -> None:
    upper, channel = attached(Upper())
    assert isinstance(upper, Upper)
    upper.dataReceived(S2C, b"ASK\nnext\n")
    upper.asked[0].callback(None)
    assert channel.out[S2C] == b"NEXT\n"


def test_synchronous_answers_do_not_recurse() -> None:
    """Thousands of lines answered by already-fired Deferreds (as the real session
    grants redirects) are handled in one loop."""
    upper, channel = attached(Upper())
    assert isinstance(upper, Upper)
    upper.answer = b"ok\n"
    upper.maxHeldBytes = 10**6
    upper.dataReceived(S2C, b"ASK\n" * 5000 + b"end\n")
    assert channel.out[S2C] == b"ok\n" * 5000 + b"END\n"


def test_a_line_too_long_ends_the_connection_before_its_end_arrives() -> None:
    lineFilter, channel = attached()
    lineFilter.dataReceived(S2C, b"x" * 15 + b"\n")
    assert channel.out[S2C] == b"X" * 15 + b"\n"
    lineFilter.dataReceived(S2C, b"y" * 16)
    assert channel.closed == ["line filter: server line longer than 16 bytes"]
    lineFilter.dataReceived(S2C, b"\n")
    assert channel.out[S2C] == b"X" * 15 + b"\n"


def test_too_much_held_ends_the_connection() -> None:
    lineFilter, channel = attached()
    lineFilter.dataReceived(S2C, b"ASK\n")
    lineFilter.dataReceived(S2C, b"1234567\n" * 4)
    assert channel.closed == []
    lineFilter.dataReceived(S2C, b"x")
    assert channel.closed == ["line filter: more than 32 server bytes behind a pending line"]


def test_a_failed_line_ends_the_connection_unless_the_session_closed() -> None:
    class Failing(LineDataFilter):
        def lineReceived(self, direction: Direction, line: bytes) -> bytes | Deferred[bytes | None]:
            if line.startswith(b"closed"):
                return fail(SessionClosed("gone"))
            return fail(PortRangeExhausted("no ports"))

    lineFilter, channel = attached(Failing())
    lineFilter.dataReceived(S2C, b"closed\n")
    assert channel.closed == []
    lineFilter.dataReceived(C2S, b"boom\n")
    assert channel.closed == ["line filter: rewriting a client line failed"]


def test_detach_cancels_the_pending_line_and_drops_what_follows() -> None:
    upper, channel = attached(Upper())
    assert isinstance(upper, Upper)
    upper.dataReceived(S2C, b"ASK\nafter\n")
    pending = upper.asked[0]
    upper.detached()
    assert pending.called  # cancelled
    upper.dataReceived(S2C, b"more\n")
    assert channel.out[S2C] == b""
    assert upper.channel is None
