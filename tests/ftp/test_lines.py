"""Tests for fwxtwisted.filters.ftp.lines: line splitting, limits and chunk independence."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fwxtwisted.filters.ftp.lines import Line, LineError, LineEvent, LineReader


def feedAll(reader: LineReader, chunks: list[bytes]) -> list[LineEvent]:
    events: list[LineEvent] = []
    for chunk in chunks:
        events.extend(reader.feed(chunk))
    return events


def splitAt(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({cut % (len(data) + 1) for cut in cuts})
    bounds = [0, *points, len(data)]
    return [data[start:end] for start, end in zip(bounds, bounds[1:], strict=False)]


def test_crlfLine() -> None:
    assert LineReader().feed(b"USER anonymous\r\n") == [Line(b"USER anonymous")]


def test_bareLf() -> None:
    assert LineReader().feed(b"NOOP\n") == [Line(b"NOOP")]


def test_severalLinesInOneChunk() -> None:
    assert LineReader().feed(b"A\r\nB\nC\r\n") == [Line(b"A"), Line(b"B"), Line(b"C")]


def test_partialLineIsHeld() -> None:
    reader = LineReader()
    assert reader.feed(b"NO") == []
    assert reader.pending == b"NO"
    assert reader.feed(b"OP\r") == []
    assert reader.feed(b"\n") == [Line(b"NOOP")]
    assert reader.pending == b""


def test_bareCrIsKeptInLine() -> None:
    assert LineReader().feed(b"A\rB\r\n") == [Line(b"A\rB")]


def test_onlyOneCrIsStripped() -> None:
    assert LineReader().feed(b"A\r\r\n") == [Line(b"A\r")]


def test_emptyLine() -> None:
    assert LineReader().feed(b"\r\n") == [Line(b"")]


def test_lineAtLimit() -> None:
    assert LineReader(4).feed(b"ABCD\r\n") == [Line(b"ABCD")]


def test_lineAtLimitWithBareLf() -> None:
    assert LineReader(4).feed(b"ABCD\n") == [Line(b"ABCD")]


def test_lineOverLimit() -> None:
    assert LineReader(4).feed(b"ABCDE\r\n") == [LineError("line longer than 4 bytes")]


def test_overLimitReportedBeforeLf() -> None:
    assert LineReader(4).feed(b"ABCDE") == [LineError("line longer than 4 bytes")]


def test_crAtLimitWaitsForNextByte() -> None:
    reader = LineReader(4)
    assert reader.feed(b"ABCD\r") == []
    assert reader.feed(b"X") == [LineError("line longer than 4 bytes")]


def test_defaultLimit() -> None:
    reader = LineReader()
    assert reader.feed(b"x" * 2048 + b"\r\n") == [Line(b"x" * 2048)]
    assert reader.feed(b"x" * 2049) == [LineError("line longer than 2048 bytes")]


def test_hugeChunkIsNotBuffered() -> None:
    reader = LineReader()
    assert reader.feed(b"x" * 1_000_000) == [LineError("line longer than 2048 bytes")]
    assert reader.pending == b""


def test_nulIsError() -> None:
    assert LineReader().feed(b"RETR a\0b\r\n") == [LineError("NUL byte in line")]


def test_nulReportedBeforeLf() -> None:
    assert LineReader().feed(b"RETR a\0") == [LineError("NUL byte in line")]


def test_linesBeforeErrorAreReported() -> None:
    assert LineReader().feed(b"A\r\n\0\r\nB\r\n") == [Line(b"A"), LineError("NUL byte in line")]


def test_deadAfterError() -> None:
    reader = LineReader()
    reader.feed(b"\0")
    assert reader.failed
    assert reader.feed(b"NOOP\r\n") == []


def test_nulBeforeLimitWins() -> None:
    assert LineReader(4).feed(b"AB\0DEFG") == [LineError("NUL byte in line")]


def test_limitBeforeNulWins() -> None:
    assert LineReader(4).feed(b"ABCDEF\0") == [LineError("line longer than 4 bytes")]


def test_invalidMaxLength() -> None:
    with pytest.raises(ValueError):
        LineReader(0)


streams = st.lists(
    st.sampled_from([b"a", b"b", b" ", b"\r", b"\n", b"\r\n", b"\0", b"\xff"]), max_size=60
).map(b"".join)


@settings(max_examples=300)
@given(data=streams, cuts=st.lists(st.integers(min_value=0), max_size=8), limit=st.integers(1, 6))
def test_anySplitGivesSameEvents(data: bytes, cuts: list[int], limit: int) -> None:
    whole = LineReader(limit).feed(data)
    assert feedAll(LineReader(limit), splitAt(data, cuts)) == whole


@settings(max_examples=300)
@given(data=streams, limit=st.integers(1, 6))
def test_byteByByteGivesSameEvents(data: bytes, limit: int) -> None:
    chunks = [data[index : index + 1] for index in range(len(data))]
    assert feedAll(LineReader(limit), chunks) == LineReader(limit).feed(data)


@settings(max_examples=200)
@given(chunks=st.lists(st.binary(max_size=40), max_size=10), limit=st.integers(1, 20))
def test_randomBytesGiveOnlyEvents(chunks: list[bytes], limit: int) -> None:
    reader = LineReader(limit)
    events = feedAll(reader, chunks)
    assert all(isinstance(event, Line | LineError) for event in events)
    assert all(isinstance(event, Line) for event in events[:-1])
    assert len(reader.pending) <= limit + 1
    for event in events:
        if isinstance(event, Line):
            assert len(event.raw) <= limit
            assert b"\n" not in event.raw and b"\0" not in event.raw
