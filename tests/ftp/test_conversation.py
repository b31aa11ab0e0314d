"""Tests for fwxtwisted.filters.ftp.conversation: events and reply-command pairing."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from fwxtwisted.filters.ftp.commands import Command
from fwxtwisted.filters.ftp.conversation import (
    ClientCommand,
    ClientEvent,
    ClientProtocolError,
    Conversation,
    ServerEvent,
    ServerProtocolError,
    ServerReply,
)
from fwxtwisted.filters.ftp.replies import Reply

PASV = Command("PASV")
RETR = Command("RETR", "file")
ABOR = Command("ABOR")


def reply(line: bytes) -> Reply:
    return Reply(int(line[:3]), (line,))


def greeted() -> Conversation:
    conversation = Conversation()
    conversation.receiveServerData(b"220 Ready\r\n")
    return conversation


def answers(conversation: Conversation, data: bytes) -> list[Command | None]:
    events = conversation.receiveServerData(data)
    assert all(isinstance(event, ServerReply) for event in events)
    return [event.command for event in events if isinstance(event, ServerReply)]


def test_clientCommand() -> None:
    events = Conversation().receiveClientData(b"USER ftp\r\n")
    assert events == [ClientCommand(Command("USER", "ftp"))]


def test_clientCommandsAcrossChunks() -> None:
    conversation = Conversation()
    assert conversation.receiveClientData(b"NO") == []
    assert conversation.receiveClientData(b"OP\r\nPA") == [ClientCommand(Command("NOOP"))]
    assert conversation.receiveClientData(b"SV\r\n") == [ClientCommand(PASV)]


def test_clientBadVerbIs500() -> None:
    events = Conversation().receiveClientData(b"HELLO there\r\n")
    assert events == [ClientProtocolError("'HELLO' is not a command verb", 500)]


def test_clientBadArgumentIs501() -> None:
    [event] = Conversation().receiveClientData(b"RETR a\x1bb\r\n")
    assert isinstance(event, ClientProtocolError) and event.replyCode == 501


def test_clientErrorIsNotFatalForBadCommand() -> None:
    conversation = Conversation()
    [event] = conversation.receiveClientData(b"\r\n")
    assert isinstance(event, ClientProtocolError) and not event.fatal
    assert conversation.receiveClientData(b"NOOP\r\n") == [ClientCommand(Command("NOOP"))]


def test_clientLineTooLongIsFatal() -> None:
    conversation = Conversation(maxCommandLength=10)
    events = conversation.receiveClientData(b"NOOP\r\nRETR 0123456789")
    assert events == [
        ClientCommand(Command("NOOP")),
        ClientProtocolError("line longer than 10 bytes", 500, fatal=True),
    ]
    assert conversation.receiveClientData(b"\r\nNOOP\r\n") == []


def test_clientNulIsFatal() -> None:
    [event] = Conversation().receiveClientData(b"RETR \0\r\n")
    assert event == ClientProtocolError("NUL byte in line", 500, fatal=True)


def test_clientAbortWithTelnet() -> None:
    events = Conversation().receiveClientData(b"\xff\xf4\xff\xf2ABOR\r\n")
    assert events == [ClientCommand(ABOR)]


def test_receivingCommandQueuesNothing() -> None:
    conversation = greeted()
    conversation.receiveClientData(b"PASV\r\n")
    assert conversation.pendingCommand is None


def test_greetingHasNoCommand() -> None:
    conversation = Conversation()
    assert conversation.awaitingGreeting
    events = conversation.receiveServerData(b"220 Ready\r\n")
    assert events == [ServerReply(reply(b"220 Ready"), None)]
    assert not conversation.awaitingGreeting


def test_delayedGreeting() -> None:
    conversation = Conversation()
    assert answers(conversation, b"120 Wait\r\n") == [None]
    assert conversation.awaitingGreeting
    assert answers(conversation, b"220 Ready\r\n") == [None]
    assert not conversation.awaitingGreeting


def test_commandPipelinedBeforeGreeting() -> None:
    conversation = Conversation()
    conversation.commandSent(Command("USER", "ftp"))
    assert conversation.pendingCommand is None
    assert answers(conversation, b"220 Ready\r\n331 Password\r\n") == [None, Command("USER", "ftp")]


def test_multiLineGreeting() -> None:
    events = Conversation().receiveServerData(b"220-Welcome\r\n220 Ready\r\n")
    assert events == [ServerReply(Reply(220, (b"220-Welcome", b"220 Ready")), None)]


def test_replyAnswersPendingCommand() -> None:
    conversation = greeted()
    conversation.commandSent(PASV)
    assert conversation.pendingCommand == PASV
    events = conversation.receiveServerData(b"227 Entering Passive Mode (1,2,3,4,5,6)\r\n")
    assert events == [ServerReply(reply(b"227 Entering Passive Mode (1,2,3,4,5,6)"), PASV)]
    assert conversation.pendingCommand is None


def test_preliminaryKeepsCommandPending() -> None:
    conversation = greeted()
    conversation.commandSent(RETR)
    assert answers(conversation, b"150 Opening\r\n") == [RETR]
    assert conversation.pendingCommand == RETR
    assert answers(conversation, b"226 Done\r\n") == [RETR]
    assert conversation.pendingCommand is None


def test_twoPreliminaryReplies() -> None:
    conversation = greeted()
    conversation.commandSent(RETR)
    assert answers(conversation, b"125 a\r\n150 b\r\n226 c\r\n") == [RETR, RETR, RETR]


def test_intermediateCompletesCommand() -> None:
    conversation = greeted()
    conversation.commandSent(Command("USER", "ftp"))
    answers(conversation, b"331 Password\r\n")
    assert conversation.pendingCommand is None


def test_repliesPairInOrder() -> None:
    conversation = greeted()
    for command in (Command("TYPE", "I"), PASV, RETR):
        conversation.commandSent(command)
    assert list(conversation.pendingCommands) == [Command("TYPE", "I"), PASV, RETR]
    assert answers(conversation, b"200 ok\r\n227 (1,2,3,4,5,6)\r\n150 go\r\n") == [
        Command("TYPE", "I"),
        PASV,
        RETR,
    ]
    assert list(conversation.pendingCommands) == [RETR]


def test_abortDuringTransfer() -> None:
    conversation = greeted()
    conversation.commandSent(RETR)
    answers(conversation, b"150 Opening\r\n")
    conversation.commandSent(ABOR)
    assert answers(conversation, b"426 Aborted\r\n226 ABOR ok\r\n") == [RETR, ABOR]


def test_unsolicited421() -> None:
    events = greeted().receiveServerData(b"421 Timeout\r\n")
    assert events == [ServerReply(reply(b"421 Timeout"), None)]


def test_421AnswersPendingCommand() -> None:
    conversation = greeted()
    conversation.commandSent(PASV)
    assert answers(conversation, b"421 Shutting down\r\n") == [PASV]


def test_227WithNothingPendingHasNoCommand() -> None:
    assert answers(greeted(), b"227 Entering Passive Mode (6,6,6,6,0,21)\r\n") == [None]


def test_serverGarbageIsError() -> None:
    conversation = greeted()
    events = conversation.receiveServerData(b"200 ok\r\nHTTP/1.1 200 OK\r\n")
    assert events[0] == ServerReply(reply(b"200 ok"), None)
    assert isinstance(events[1], ServerProtocolError)
    assert conversation.receiveServerData(b"200 ok\r\n") == []


def test_serverLineTooLong() -> None:
    conversation = Conversation(maxReplyLineLength=8)
    assert conversation.receiveServerData(b"220 123456789") == [
        ServerProtocolError("line longer than 8 bytes")
    ]


def test_serverReplyTooManyLines() -> None:
    conversation = Conversation(maxReplyLines=2)
    [event] = conversation.receiveServerData(b"220-a\r\nb\r\n220 c\r\n")
    assert isinstance(event, ServerProtocolError) and "over 2 lines" in event.reason


def test_serverReplyTooManyBytes() -> None:
    conversation = Conversation(maxReplyBytes=8)
    [event] = conversation.receiveServerData(b"220-abcdefgh\r\n")
    assert isinstance(event, ServerProtocolError) and "over 8 bytes" in event.reason


def test_directionsAreIndependent() -> None:
    conversation = Conversation()
    conversation.receiveServerData(b"\0")
    assert conversation.receiveClientData(b"NOOP\r\n") == [ClientCommand(Command("NOOP"))]


def splitAt(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({cut % (len(data) + 1) for cut in cuts})
    bounds = [0, *points, len(data)]
    return [data[start:end] for start, end in zip(bounds, bounds[1:], strict=False)]


def serverEvents(chunks: list[bytes], sent: list[Command]) -> list[ServerEvent]:
    conversation = Conversation(maxReplyLineLength=24, maxReplyLines=4, maxReplyBytes=60)
    for command in sent:
        conversation.commandSent(command)
    return [event for chunk in chunks for event in conversation.receiveServerData(chunk)]


def clientEvents(chunks: list[bytes]) -> list[ClientEvent]:
    conversation = Conversation(maxCommandLength=24)
    return [event for chunk in chunks for event in conversation.receiveClientData(chunk)]


serverStreams = st.lists(
    st.sampled_from(
        [b"220 hi\r\n", b"120 wait\r\n", b"150 go\r\n", b"227 (1,2,3,4,5,6)\r\n", b"421 bye\n"]
        + [b"211-", b"211 end\r\n", b"x", b"\r\n", b"\0"]
    ),
    max_size=20,
).map(b"".join)
clientStreams = st.lists(
    st.sampled_from([b"PASV\r\n", b"RETR f\r\n", b"\xff\xf4\xf2ABOR\n", b"x", b" ", b"\r"])
    | st.sampled_from([b"\n", b"\x01", b"\0"]),
    max_size=20,
).map(b"".join)
sentCommands = st.lists(st.sampled_from([PASV, RETR, ABOR]), max_size=5)


@settings(max_examples=300)
@given(data=serverStreams, cuts=st.lists(st.integers(min_value=0), max_size=8), sent=sentCommands)
def test_serverAnySplitGivesSameEvents(data: bytes, cuts: list[int], sent: list[Command]) -> None:
    assert serverEvents(splitAt(data, cuts), sent) == serverEvents([data], sent)


@settings(max_examples=300)
@given(data=clientStreams, cuts=st.lists(st.integers(min_value=0), max_size=8))
def test_clientAnySplitGivesSameEvents(data: bytes, cuts: list[int]) -> None:
    assert clientEvents(splitAt(data, cuts)) == clientEvents([data])


@settings(max_examples=300)
@given(chunks=st.lists(st.binary(max_size=30), max_size=8))
def test_clientRandomBytesGiveOnlyEvents(chunks: list[bytes]) -> None:
    events = clientEvents(chunks)
    assert all(isinstance(event, ClientCommand | ClientProtocolError) for event in events)
    assert all(not event.fatal for event in events[:-1] if isinstance(event, ClientProtocolError))


@settings(max_examples=300)
@given(
    chunks=st.lists(
        st.tuples(
            st.sampled_from([b"", b"220", b"220-", b"150 ", b"\r\n"]), st.binary(max_size=12)
        ).map(b"".join),
        max_size=10,
    ),
    sent=sentCommands,
)
def test_serverRandomBytesGiveOnlyEvents(chunks: list[bytes], sent: list[Command]) -> None:
    events = serverEvents(chunks, sent)
    assert all(isinstance(event, ServerReply) for event in events[:-1])
    assert all(isinstance(event, ServerReply | ServerProtocolError) for event in events[-1:])
