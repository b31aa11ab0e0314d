"""Conversation: both directions of an FTP control channel, replies paired with commands."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from fwxtwisted.filters.ftp.commands import Command, CommandError, parseCommand
from fwxtwisted.filters.ftp.lines import Line, LineReader
from fwxtwisted.filters.ftp.replies import Reply, ReplyError, ReplyReader


@dataclass(frozen=True)
class ClientCommand:
    """The client sent a well-formed command."""

    command: Command


@dataclass(frozen=True)
class ClientProtocolError:
    """The client sent something that is not a command.

    The filter answers C{replyCode} itself.  When C{fatal}, the line framing is lost
    (a line too long, a NUL): nothing more will come from the client and the filter
    should close the session once the reply is written.
    """

    reason: str
    replyCode: int = 500
    fatal: bool = False


@dataclass(frozen=True)
class ServerReply:
    """The server sent a complete reply.

    C{command} is the forwarded command it answers: None for the greeting, and for any
    reply that arrives when no command is pending (such as an unsolicited 421).
    """

    reply: Reply
    command: Command | None


@dataclass(frozen=True)
class ServerProtocolError:
    """The server broke the reply syntax or a size limit; nothing more will be read from it."""

    reason: str


ClientEvent = ClientCommand | ClientProtocolError
ServerEvent = ServerReply | ServerProtocolError


class Conversation:
    """An FTP control channel, in the style of h11: fed bytes, returns events, does no I/O.

    Replies are paired with the commands the filter forwarded (L{commandSent}), in
    order.  The greeting holds the head of that queue until its final reply, so a
    command pipelined before the greeting (or its C{120} delay) is answered by the reply
    after it.  A 1yz reply is preliminary and leaves its command at the head; any other
    completes it.  This is what lets a filter trust a 227 only as the answer to a PASV
    it forwarded.

    Bytes and text use latin-1 (see L{fwxtwisted.filters.ftp.commands.ENCODING}).
    """

    def __init__(
        self,
        maxCommandLength: int = 2048,
        maxReplyLineLength: int = 2048,
        maxReplyLines: int = 1000,
        maxReplyBytes: int = 256 * 1024,
    ) -> None:
        """
        @param maxCommandLength: the longest client line, terminator excluded.
        @param maxReplyLineLength: the longest server line, terminator excluded.
        @param maxReplyLines: the most lines in one multi-line reply.
        @param maxReplyBytes: the most bytes in one multi-line reply.
        """
        self._clientLines = LineReader(maxCommandLength)
        self._serverLines = LineReader(maxReplyLineLength)
        self._replies = ReplyReader(maxReplyLines, maxReplyBytes)
        self._serverFailed = False
        self._awaitingGreeting = True
        self._pending: deque[Command] = deque()

    @property
    def awaitingGreeting(self) -> bool:
        """True until the server's greeting has had its final (non-1yz) reply."""
        return self._awaitingGreeting

    @property
    def pendingCommand(self) -> Command | None:
        """The command the next reply answers; None while awaiting the greeting or idle."""
        if self._awaitingGreeting or not self._pending:
            return None
        return self._pending[0]

    @property
    def pendingCommands(self) -> tuple[Command, ...]:
        """Every forwarded command still waiting for its final reply, oldest first."""
        return tuple(self._pending)

    def commandSent(self, command: Command) -> None:
        """The filter forwarded C{command} to the server: queue it for a reply."""
        self._pending.append(command)

    def receiveClientData(self, data: bytes) -> list[ClientEvent]:
        """Consume bytes from the client; return one event per line, in order.

        Nothing is queued: the filter calls L{commandSent} for each command it forwards.
        """
        events: list[ClientEvent] = []
        for event in self._clientLines.feed(data):
            if not isinstance(event, Line):
                events.append(ClientProtocolError(event.reason, 500, fatal=True))
                continue
            try:
                events.append(ClientCommand(parseCommand(event.raw)))
            except CommandError as error:
                events.append(ClientProtocolError(str(error), error.replyCode))
        return events

    def receiveServerData(self, data: bytes) -> list[ServerEvent]:
        """Consume bytes from the server; return one event per complete reply, in order."""
        if self._serverFailed:
            return []
        events: list[ServerEvent] = []
        for event in self._serverLines.feed(data):
            if not isinstance(event, Line):
                return self._serverFailure(events, event.reason)
            try:
                reply = self._replies.lineReceived(event.raw)
            except ReplyError as error:
                return self._serverFailure(events, str(error))
            if reply is not None:
                events.append(ServerReply(reply, self._answer(reply)))
        return events

    @property
    def clientPending(self) -> bytes:
        """The start of the client's unfinished line."""
        return self._clientLines.pending

    def discardClientData(self) -> int:
        """Forget the client's unfinished line (its bytes came in clear before a switch
        to TLS); return how many bytes were dropped."""
        return self._clientLines.discard()

    def discardServerData(self) -> int:
        """Forget the server's unfinished line and reply (bytes read in clear before a
        switch to TLS); return how many bytes were dropped."""
        return self._serverLines.discard() + self._replies.discard()

    def _answer(self, reply: Reply) -> Command | None:
        """The command C{reply} answers (None for the greeting), dequeued if final."""
        if self._awaitingGreeting:
            self._awaitingGreeting = reply.isPreliminary
            return None
        if not self._pending:
            return None
        if reply.isPreliminary:
            return self._pending[0]
        return self._pending.popleft()

    def _serverFailure(self, events: list[ServerEvent], reason: str) -> list[ServerEvent]:
        self._serverFailed = True
        events.append(ServerProtocolError(reason))
        return events
