"""FTP filter, flow control: a client pipelining commands without reading its replies
holds at most MAX_QUEUED_COMMANDS unanswered commands and one read of bytes."""

from __future__ import annotations

from fwxtwisted.filters.ftp.control import MAX_QUEUED_COMMANDS
from fwxtwisted.filters.ftp.filter import ftpFilter
from fwxtwisted.filters.ftp.options import parseFTPOptions
from fwxtwisted.interfaces import Direction
from fwxtwisted.testing import FakeSession

CLIENT = Direction.CLIENT_TO_SERVER


def started() -> FakeSession:
    session = FakeSession(options=parseFTPOptions({}))
    session.attachFilter(ftpFilter)
    session.succeedUpstream()
    session.serverSends(b"220 hi\r\n")
    session.toClient = b""
    return session


def test_forwardedCommandsStopAtTheLimitUntilAnswered() -> None:
    session = started()
    session.clientSends(b"NOOP\r\n" * 1000)
    assert session.toServer == b"NOOP\r\n" * MAX_QUEUED_COMMANDS
    assert session.readingPaused == {CLIENT}
    session.serverSends(b"200 ok\r\n" * 10)
    session.clock.advance(0)
    assert session.toServer.count(b"NOOP") == MAX_QUEUED_COMMANDS + 10
    assert session.readingPaused == {CLIENT}
    answered = 10
    while answered < 1000:
        batch = min(64, 1000 - answered)
        session.serverSends(b"200 ok\r\n" * batch)
        session.clock.advance(0)
        answered += batch
    assert session.toServer == b"NOOP\r\n" * 1000
    assert session.toClient == b"200 ok\r\n" * 1000
    assert session.readingPaused == set()


def test_aLineSplitAcrossTheHeldBytesIsKept() -> None:
    session = started()
    session.clientSends(b"NOOP\r\n" * MAX_QUEUED_COMMANDS + b"SY")
    session.clientSends(b"ST\r\n")
    assert session.readingPaused == {CLIENT}
    session.serverSends(b"200 ok\r\n")
    session.clock.advance(0)
    assert session.toServer.endswith(b"NOOP\r\nSYST\r\n")


def test_localAnswersNeedNoPause() -> None:
    """LPSV is answered by the gateway at once: nothing stays unanswered (the client's
    own write buffer is the relay's business)."""
    session = started()
    session.clientSends(b"LPSV\r\n" * 1000)
    assert session.toClient.count(b"502 ") == 1000
    assert session.readingPaused == set()


def test_noPumpLeftAfterClose() -> None:
    session = started()
    session.clientSends(b"NOOP\r\n" * 200)
    session.serverSends(b"200 ok\r\n")
    session.close("done")
    assert session.clock.getDelayedCalls() == []
