"""FTP filter, transfers and timers: the per-transfer log event and the idle timeout."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from twisted.logger import globalLogPublisher

from fwxtwisted.filters.ftp.control import MAX_QUEUED_COMMANDS
from fwxtwisted.filters.ftp.filter import ftpFilter
from fwxtwisted.filters.ftp.options import parseFTPOptions
from fwxtwisted.interfaces import (
    ActionState,
    ByteCounts,
    FirewallEvent,
    FirewallNotification,
    IFirewallAction,
)
from fwxtwisted.testing import FakeSession

LogEvent = dict[str, Any]


@pytest.fixture
def transfers() -> Iterator[list[LogEvent]]:
    """Every ftp.transfer log event emitted during the test."""
    events: list[LogEvent] = []

    def observe(event: LogEvent) -> None:
        if event.get("fwx_event") == "ftp.transfer":
            events.append(event)

    globalLogPublisher.addObserver(observe)
    yield events
    globalLogPublisher.removeObserver(observe)


@pytest.fixture
def logged() -> Iterator[list[LogEvent]]:
    """Every log event emitted during the test."""
    events: list[LogEvent] = []
    globalLogPublisher.addObserver(events.append)
    yield events
    globalLogPublisher.removeObserver(events.append)


def started(**options: object) -> FakeSession:
    """A reverse-proxy session logged in as alice, with both transcripts cleared."""
    session = FakeSession(options=parseFTPOptions(options))
    session.attachFilter(ftpFilter)
    session.succeedUpstream()
    session.serverSends(b"220 hi\r\n")
    session.clientSends(b"USER alice\r\n")
    session.serverSends(b"331 password\r\n")
    session.clientSends(b"PASS secret\r\n")
    session.serverSends(b"230 ok\r\n")
    session.toClient = b""
    session.toServer = b""
    return session


def passive(session: FakeSession) -> IFirewallAction:
    """Open a passive data channel and return its action."""
    session.clientSends(b"PASV\r\n")
    session.serverSends(b"227 Entering Passive Mode (10,9,8,7,156,64).\r\n")
    [action] = session.redirectCalls[-1].grant(50010).actions
    return action


def event(
    session: FakeSession, kind: FirewallEvent, action: IFirewallAction, counts: ByteCounts | None
) -> None:
    session.fireEvent(
        FirewallNotification(kind, action, context=action.context, counts=counts or ByteCounts())
    )


def established(session: FakeSession, action: IFirewallAction) -> None:
    event(session, FirewallEvent.ESTABLISHED_CONNECTION, action, None)


def terminated(session: FakeSession, action: IFirewallAction, fromServer: int = 0) -> None:
    counts = ByteCounts(fromClient=0, fromServer=fromServer)
    event(session, FirewallEvent.CONNECTION_TERMINATING, action, counts)


def fields(logEvent: LogEvent) -> dict[str, object]:
    keys = ("client", "user", "server", "external", "path", "direction", "bytes", "result")
    return {key: logEvent[key] for key in keys}


# Transfer log.


def test_downloadLoggedOnceWithEveryField(transfers: list[LogEvent]) -> None:
    session = started()
    action = passive(session)
    session.clientSends(b"RETR /pub/file.txt\r\n")
    established(session, action)
    session.serverSends(b"150 Opening BINARY mode data connection\r\n")
    terminated(session, action, fromServer=1234)
    assert transfers == []
    session.serverSends(b"226 Transfer complete\r\n")
    [logged] = transfers
    assert fields(logged) == {
        "client": "192.0.2.10:50000",
        "user": "alice",
        "server": "203.0.113.50:2100",
        "external": "203.0.113.1",
        "path": "/pub/file.txt",
        "direction": "download",
        "bytes": 1234,
        "result": "226 Transfer complete",
    }
    assert logged["log_namespace"] == "fwxtwisted.ftp.transfer"


def test_finalReplyBeforeDataCloseWaitsForTheByteCount(transfers: list[LogEvent]) -> None:
    session = started()
    action = passive(session)
    session.clientSends(b"RETR big.iso\r\n")
    established(session, action)
    session.serverSends(b"150 Opening\r\n226 Transfer complete\r\n")
    assert transfers == []
    terminated(session, action, fromServer=4096)
    [logged] = transfers
    assert (logged["bytes"], logged["result"]) == (4096, "226 Transfer complete")


def test_uploadCountsBytesFromTheClient(transfers: list[LogEvent]) -> None:
    session = started()
    action = passive(session)
    session.clientSends(b"STOR up.bin\r\n")
    established(session, action)
    session.serverSends(b"150 Ok to send data.\r\n")
    event(
        session,
        FirewallEvent.CONNECTION_TERMINATING,
        action,
        ByteCounts(fromClient=777, fromServer=0),
    )
    session.serverSends(b"226 Transfer complete.\r\n")
    [logged] = transfers
    assert (logged["direction"], logged["path"], logged["bytes"]) == ("upload", "up.bin", 777)


def test_listingDirection(transfers: list[LogEvent]) -> None:
    session = started()
    action = passive(session)
    session.clientSends(b"LIST\r\n")
    established(session, action)
    terminated(session, action, fromServer=300)
    session.serverSends(b"150 Here comes the directory listing.\r\n226 Directory send OK.\r\n")
    [logged] = transfers
    assert (logged["direction"], logged["path"], logged["bytes"]) == ("listing", "", 300)
    assert logged["result"] == "226 Directory send OK."


def test_failedTransferWithoutDataLoggedAtOnce(transfers: list[LogEvent]) -> None:
    session = started()
    passive(session)
    session.clientSends(b"RETR missing\r\n")
    session.serverSends(b"550 Failed to open file.\r\n")
    [logged] = transfers
    assert (logged["path"], logged["bytes"], logged["result"]) == (
        "missing",
        0,
        "550 Failed to open file.",
    )


def test_activeTransferLogged(transfers: list[LogEvent]) -> None:
    session = started()
    session.clientSends(b"PORT 192,0,2,10,200,10\r\n")
    [action] = session.redirectCalls[-1].grant(60000).actions
    session.serverSends(b"200 PORT ok\r\n")
    session.clientSends(b"RETR a.txt\r\n")
    established(session, action)
    terminated(session, action, fromServer=10)
    session.serverSends(b"150 Opening\r\n226 Done\r\n")
    [logged] = transfers
    assert (logged["path"], logged["bytes"], logged["result"]) == ("a.txt", 10, "226 Done")


def test_twoTransfersLoggedSeparately(transfers: list[LogEvent]) -> None:
    session = started()
    for name, size in ((b"one", 1), (b"two", 2)):
        action = passive(session)
        session.clientSends(b"RETR " + name + b"\r\n")
        established(session, action)
        terminated(session, action, fromServer=size)
        session.serverSends(b"150 Opening\r\n226 Done\r\n")
    assert [(e["path"], e["bytes"]) for e in transfers] == [("one", 1), ("two", 2)]


def test_abortedTransferLoggedWithTheServersResult(transfers: list[LogEvent]) -> None:
    session = started()
    action = passive(session)
    session.clientSends(b"RETR big.iso\r\n")
    established(session, action)
    session.serverSends(b"150 Opening\r\n")
    session.clientSends(b"\xff\xf4\xff\xf2ABOR\r\n")
    assert session.toServer.endswith(b"RETR big.iso\r\nABOR\r\n")
    terminated(session, action, fromServer=65536)
    session.serverSends(b"426 Failure writing network stream.\r\n226 ABOR successful\r\n")
    assert session.toClient.endswith(
        b"150 Opening\r\n426 Failure writing network stream.\r\n226 ABOR successful\r\n"
    )
    [logged] = transfers
    assert (logged["bytes"], logged["result"]) == (65536, "426 Failure writing network stream.")


def test_nonTransferCommandsNotLogged(transfers: list[LogEvent]) -> None:
    session = started()
    session.clientSends(b"CWD /pub\r\nSIZE f\r\n")
    session.serverSends(b"250 ok\r\n213 100\r\n")
    assert transfers == []


def test_transferCutBySessionCloseLoggedAsAborted(transfers: list[LogEvent]) -> None:
    session = started()
    action = passive(session)
    session.clientSends(b"RETR big.iso\r\n")
    established(session, action)
    session.serverSends(b"150 Opening\r\n")
    session.close("client went away")
    [logged] = transfers
    assert logged["result"] == "aborted: session closed"
    assert logged["path"] == "big.iso"


def test_passwordNeverLogged(logged: list[LogEvent]) -> None:
    session = started()
    session.clientSends(b"PASS hunter2\r\nPASS hunter2\x01\r\nRETR \0\r\n")
    assert session.closed
    assert logged
    assert not any("hunter2" in repr(e) for e in logged)


# Idle timeout.


def test_idleTimeoutIs421AndCloses() -> None:
    session = started(idle_timeout=30)
    session.clock.advance(29.9)
    assert not session.closed
    session.clock.advance(0.2)
    assert session.toClient == b"421 idle for 30 s; closing control connection\r\n"
    assert session.closed
    assert session.closeReason == "idle timeout"


def test_idleTimeoutStartsWithTheSession() -> None:
    session = FakeSession(options=parseFTPOptions({"idle_timeout": 30}))
    session.attachFilter(ftpFilter)
    session.clock.advance(31)
    assert session.closed
    assert session.toClient == b"421 idle for 30 s; closing control connection\r\n"


def test_clientTrafficResetsIdleTimer() -> None:
    session = started(idle_timeout=30)
    session.clock.advance(20)
    session.clientSends(b"NOOP\r\n")
    session.clock.advance(20)
    assert not session.closed
    session.serverSends(b"200 NOOP ok\r\n")
    session.clock.advance(29)
    assert not session.closed
    session.clock.advance(2)
    assert session.closed


def test_noIdleTimeoutWhileDataConnectionEstablished() -> None:
    session = started(idle_timeout=30)
    action = passive(session)
    session.clientSends(b"RETR big.iso\r\n")
    established(session, action)
    session.serverSends(b"150 Opening\r\n")
    session.clock.advance(300)
    assert not session.closed
    assert session.toClient.endswith(b"150 Opening\r\n")
    terminated(session, action, fromServer=10)
    session.clock.advance(31)
    assert session.closed


def test_dataConnectionIdleForAnIdleTimeoutIsClosed() -> None:
    """A data connection that moves no byte either way is closed within two idle
    timeouts (the control connection stays); one that moves bytes is left alone."""
    session = started(idle_timeout=30)
    action = passive(session)
    session.clientSends(b"RETR big.iso\r\n")
    established(session, action)
    session.serverSends(b"150 Opening\r\n")
    moved = 0
    for _ in range(10):
        moved += 1000
        action.bytesMoved = moved  # type: ignore[attr-defined]
        session.clock.advance(30)
    assert action.state is not ActionState.CANCELLED
    # A whole idle timeout without a byte: closed; the control connection stays.
    session.clock.advance(30)
    assert action.state is ActionState.CANCELLED
    assert not session.closed


def test_dataConnectionWithoutByteCountsIsLeftToRun() -> None:
    session = started(idle_timeout=30)
    action = passive(session)
    established(session, action)
    session.clock.advance(300)
    assert action.state is not ActionState.CANCELLED


def test_idleSilenceIsCountedFromTheEndOfATransfer() -> None:
    session = started(idle_timeout=30)
    action = passive(session)
    session.clientSends(b"RETR big.iso\r\n")
    established(session, action)
    session.serverSends(b"150 Opening\r\n")
    session.clock.advance(59)  # the timer re-armed at 30 s, while the transfer ran
    terminated(session, action, fromServer=10)
    session.clock.advance(29)
    assert not session.closed
    session.clock.advance(2)
    assert session.closed


def test_idleTimeoutWhileACommandAwaitsItsReplyStill421() -> None:
    session = started(idle_timeout=30)
    session.clientSends(b"SYST\r\n")
    session.clock.advance(31)
    assert session.toClient == b"421 idle for 30 s; closing control connection\r\n"
    assert session.closed


def test_unusedDataChannelDoesNotHoldTheSession() -> None:
    session = started(idle_timeout=30)
    passive(session)
    session.clock.advance(31)
    assert session.closed


def test_noTimerLeftAfterClose() -> None:
    session = started(idle_timeout=30)
    session.close("done")
    assert session.clock.getDelayedCalls() == []


def test_noTimerLeftAfterAProtocolErrorClose() -> None:
    session = started(idle_timeout=30)
    session.clientSends(b"RETR \0\r\n")
    assert session.closed
    assert session.clock.getDelayedCalls() == []


# Flooding.


def test_commandFloodHeldWithoutClosing(logged: list[LogEvent]) -> None:
    options = parseFTPOptions({"explicit": True, "allow_destinations": ["192.0.2.0/24"]})
    session = FakeSession(options=options, defaultUpstream=None)
    session.attachFilter(ftpFilter)
    session.clientSends(b"USER anonymous@192.0.2.10\r\n" + b"NOOP\r\n" * 1000)
    assert not session.closed
    assert session.readingPaused
    assert not [e for e in logged if "closing" in e.get("log_format", "")]
    assert MAX_QUEUED_COMMANDS < 1000
