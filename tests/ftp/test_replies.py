"""Tests for fwxtwisted.filters.ftp.replies: Reply, ReplyReader and formatReply."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fwxtwisted.filters.ftp.lines import Line, LineReader
from fwxtwisted.filters.ftp.replies import Reply, ReplyError, ReplyReader, formatReply


def readAll(reader: ReplyReader, lines: list[bytes]) -> list[Reply]:
    replies = []
    for line in lines:
        reply = reader.lineReceived(line)
        if reply is not None:
            replies.append(reply)
    return replies


def test_singleLine() -> None:
    assert ReplyReader().lineReceived(b"220 Ready") == Reply(220, (b"220 Ready",))


def test_codeAlone() -> None:
    reply = ReplyReader().lineReceived(b"200")
    assert reply == Reply(200, (b"200",))
    assert reply.text == ""


def test_multiLine() -> None:
    lines = [b"211-Features:", b" EPSV", b" MDTM", b"211 End"]
    assert readAll(ReplyReader(), lines) == [Reply(211, tuple(lines))]


def test_multiLineWaitsForLastLine() -> None:
    reader = ReplyReader()
    assert reader.lineReceived(b"230-Welcome") is None
    assert reader.inReply
    assert reader.lineReceived(b"230 Done") is not None
    assert not reader.inReply


def test_otherCodesInsideMultiLine() -> None:
    lines = [b"220-Hello", b"421 not the end", b"", b"220-still not", b"220 end"]
    assert readAll(ReplyReader(), lines) == [Reply(220, tuple(lines))]


def test_multiLineEndsWithCodeAlone() -> None:
    assert readAll(ReplyReader(), [b"220-Hi", b"220"]) == [Reply(220, (b"220-Hi", b"220"))]


def test_firstLineDoesNotEndItsOwnReply() -> None:
    reader = ReplyReader()
    assert reader.lineReceived(b"220-") is None
    assert reader.lineReceived(b"220 x") == Reply(220, (b"220-", b"220 x"))


def test_sameCodeWithOtherSuffixDoesNotEnd() -> None:
    assert readAll(ReplyReader(), [b"220-a", b"2201", b"220x"]) == []


@pytest.mark.parametrize("line", [b"", b"22", b"hello", b"220x", b"22 0", b"020 zero", b"720 x"])
def test_notAReply(line: bytes) -> None:
    with pytest.raises(ReplyError):
        ReplyReader().lineReceived(line)


def test_protectedReplyAccepted() -> None:
    reply = ReplyReader().lineReceived(b"631 c2VjcmV0")
    assert reply is not None and reply.isProtected


def test_deadAfterError() -> None:
    reader = ReplyReader()
    with pytest.raises(ReplyError):
        reader.lineReceived(b"junk")
    with pytest.raises(ReplyError):
        reader.lineReceived(b"200 OK")


def test_tooManyLines() -> None:
    reader = ReplyReader(maxLines=3)
    readAll(reader, [b"211-a", b"b"])
    assert reader.lineReceived(b"211 c") is not None
    readAll(reader, [b"211-a", b"b", b"c"])
    with pytest.raises(ReplyError, match="over 3 lines"):
        reader.lineReceived(b"211 d")


def test_tooManyBytes() -> None:
    reader = ReplyReader(maxBytes=10)
    reader.lineReceived(b"211-abcd")
    with pytest.raises(ReplyError, match="over 10 bytes"):
        reader.lineReceived(b"abc")


def test_defaultLimits() -> None:
    reader = ReplyReader()
    assert (reader.maxLines, reader.maxBytes) == (1000, 256 * 1024)


def test_textSingleLine() -> None:
    assert Reply(227, (b"227 Entering Passive Mode (1,2,3,4,5,6)",)).text == (
        "Entering Passive Mode (1,2,3,4,5,6)"
    )


def test_textMultiLine() -> None:
    reply = Reply(211, (b"211-Features:", b" EPSV", b"211 End"))
    assert reply.text == "Features:\n EPSV\nEnd"


def test_textStripsRepeatedCodeOnMiddleLines() -> None:
    reply = Reply(230, (b"230-one", b"230-two", b"230 three"))
    assert reply.text == "one\ntwo\nthree"


def test_textIsLatin1() -> None:
    assert Reply(200, (b"200 \xe9",)).text == "\xe9"


@pytest.mark.parametrize(
    ("code", "flags"),
    [
        (150, "preliminary"),
        (226, "positive"),
        (331, "intermediate"),
        (421, "transient negative"),
        (550, "permanent negative"),
        (632, "protected"),
    ],
)
def test_categories(code: int, flags: str) -> None:
    reply = Reply(code, (b"%d x" % code,))
    assert reply.isPreliminary == (flags == "preliminary")
    assert reply.isPositive == (flags == "positive")
    assert reply.isIntermediate == (flags == "intermediate")
    assert reply.isTransientNegative == (flags == "transient negative")
    assert reply.isPermanentNegative == (flags == "permanent negative")
    assert reply.isNegative == flags.endswith("negative")
    assert reply.isProtected == (flags == "protected")


def test_toBytes() -> None:
    reply = Reply(211, (b"211-a", b"211 b"))
    assert reply.toBytes() == b"211-a\r\n211 b\r\n"


@pytest.mark.parametrize(
    ("code", "lines"), [(99, (b"99 x",)), (700, (b"700",)), (200, ()), (200, (b"200 a\nb",))]
)
def test_invalidReply(code: int, lines: tuple[bytes, ...]) -> None:
    with pytest.raises(ValueError):
        Reply(code, lines)


def test_formatSingleLine() -> None:
    assert formatReply(200, "OK") == b"200 OK\r\n"


def test_formatOneItemList() -> None:
    assert formatReply(200, ["OK"]) == b"200 OK\r\n"


def test_formatMultiLine() -> None:
    assert formatReply(211, ["Features:", " EPSV", "End"]) == (
        b"211-Features:\r\n EPSV\r\n211 End\r\n"
    )


def test_formatPadsDigitLines() -> None:
    wire = formatReply(220, ["Hi", "220 not the end", "bye"])
    assert wire == b"220-Hi\r\n 220 not the end\r\n220 bye\r\n"


@pytest.mark.parametrize(
    ("code", "text"), [(200, []), (200, "a\r\nb"), (200, ["a", "b\0"]), (42, "x"), (200, "\u20ac")]
)
def test_formatRejects(code: int, text: str | list[str]) -> None:
    with pytest.raises(ValueError):
        formatReply(code, text)


texts = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=20)


@settings(max_examples=300)
@given(code=st.integers(100, 599), text=st.lists(texts, min_size=1, max_size=5))
def test_formatThenReadRoundTrip(code: int, text: list[str]) -> None:
    lines = LineReader().feed(formatReply(code, text))
    replies = readAll(ReplyReader(), [line.raw for line in lines if isinstance(line, Line)])
    assert len(replies) == 1
    assert replies[0].code == code
    assert replies[0].toBytes() == formatReply(code, text)


def readStream(chunks: list[bytes]) -> list[object]:
    """Replies and the first error, from a stream cut into chunks."""
    lineReader, replyReader = LineReader(16), ReplyReader(maxLines=4, maxBytes=40)
    outcome: list[object] = []
    for chunk in chunks:
        for event in lineReader.feed(chunk):
            if not isinstance(event, Line):
                return [*outcome, event]
            try:
                reply = replyReader.lineReceived(event.raw)
            except ReplyError as error:
                return [*outcome, str(error)]
            if reply is not None:
                outcome.append(reply)
    return outcome


replyStreams = st.lists(
    st.sampled_from([b"220", b"220-", b"230", b" ", b"x", b"\r\n", b"\n", b"1", b"-"]),
    max_size=40,
).map(b"".join)


@settings(max_examples=300)
@given(data=replyStreams, cuts=st.lists(st.integers(min_value=0), max_size=8))
def test_anySplitGivesSameReplies(data: bytes, cuts: list[int]) -> None:
    points = sorted({cut % (len(data) + 1) for cut in cuts})
    bounds = [0, *points, len(data)]
    chunks = [data[start:end] for start, end in zip(bounds, bounds[1:], strict=False)]
    assert readStream(chunks) == readStream([data])


replyLines = st.lists(
    st.tuples(
        st.sampled_from([b"", b"220", b"220-", b"220 ", b"331 ", b"1"]), st.binary(max_size=8)
    ),
    max_size=20,
)


@settings(max_examples=300)
@given(lines=replyLines)
def test_randomLinesRaiseOnlyReplyError(lines: list[tuple[bytes, bytes]]) -> None:
    reader = ReplyReader(maxLines=5, maxBytes=30)
    try:
        readAll(reader, [start + rest for start, rest in lines])
    except ReplyError:
        pass


def test_bareCrKeptInReply() -> None:
    assert ReplyReader().lineReceived(b"220 banner\r") == Reply(220, (b"220 banner\r",))


def test_lfInLineIsReplyError() -> None:
    with pytest.raises(ReplyError):
        ReplyReader().lineReceived(b"220 a\nb")
