"""ControlChannel: the FTP control connection as the filter's parts use it (replies to
the client in command order, commands to the server and the routing of their replies,
the server's greeting, closing after the replies)."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from fwxtwisted.errors import SessionClosed
from fwxtwisted.filters.ftp.commands import Command
from fwxtwisted.filters.ftp.conversation import Conversation
from fwxtwisted.filters.ftp.options import FTPOptions
from fwxtwisted.filters.ftp.replies import Reply, formatReply
from fwxtwisted.interfaces import Direction, IDataChannel, ISession, LegTLS, Side
from fwxtwisted.logs import Logger

log = Logger()

ReplyHandler = Callable[[Reply], None]


class ReplySlot:
    """The place of one command's final reply in the client's reply stream."""

    __slots__ = ("done", "final", "early")

    def __init__(self) -> None:
        self.done = False
        self.final = b""
        self.early: list[bytes] = []


class ReplyQueue:
    """Replies come from the server (relayed or rewritten) and from the gateway itself
    (refusals, local answers), sometimes after an asynchronous step; the client must
    still see them in the order of its commands."""

    def __init__(self, write: Callable[[bytes], None]) -> None:
        self._write = write
        self._slots: deque[ReplySlot] = deque()

    def reserve(self) -> ReplySlot:
        """A slot for the next command's reply, behind every earlier one."""
        slot = ReplySlot()
        self._slots.append(slot)
        return slot

    def preliminary(self, slot: ReplySlot, data: bytes) -> None:
        """A 1yz reply for C{slot}: out now if C{slot} is first, else when it is."""
        if self._slots and self._slots[0] is slot:
            self._write(data)
        else:
            slot.early.append(data)

    def complete(self, slot: ReplySlot, data: bytes) -> None:
        """The final reply for C{slot}; it goes out once every earlier slot has."""
        if slot.done:
            return
        slot.done = True
        slot.final = data
        self._flush()

    def local(self, data: bytes) -> None:
        """A reply the gateway gives itself, in order after every pending one."""
        self.complete(self.reserve(), data)

    def abandon(self) -> None:
        """The session is ending: write every reply already known, in command order,
        and give up on those still awaited (they will never come)."""
        while self._slots:
            slot = self._slots.popleft()
            for data in slot.early:
                self._write(data)
            slot.early.clear()
            if slot.done:
                self._write(slot.final)

    @property
    def pending(self) -> int:
        """How many replies are still awaited."""
        return len(self._slots)

    def _flush(self) -> None:
        while self._slots and self._slots[0].done:
            slot = self._slots.popleft()
            self._write(slot.final)
            if self._slots:
                head = self._slots[0]
                for data in head.early:
                    self._write(data)
                head.early.clear()


@dataclass
class Awaiting:
    """A command sent to the server, the client's slot for its answer, and who wants
    the final reply (None: relay it as it is)."""

    command: Command
    slot: ReplySlot | None
    handler: ReplyHandler | None


class ControlChannel:
    """One session's control connection, shared by the filter's parts: the data
    channels, the TLS handling and the explicit login talk to the client and the
    server through it, and never through the filter itself.

    @ivar replies: the client's replies in command order.
    @ivar closing: the session is ending (L{closeAfterReplies}, or the server left).
    @ivar onAnswered: called after each write to the client while set (the filter's
        flow control sets it while it holds the client back).
    """

    def __init__(
        self,
        session: ISession,
        options: FTPOptions,
        conversation: Conversation,
        discardClear: Callable[[Side, str], None],
    ) -> None:
        self.session = session
        self.options = options
        self.conversation = conversation
        self.replies = ReplyQueue(self.toClient)
        self.closing = False
        self.onAnswered: Callable[[], None] | None = None
        #: The next stage of the control connection's data-filter chain.
        self.stage: IDataChannel | None = None
        self._discardClear = discardClear
        self._awaiting: dict[int, Awaiting] = {}
        self._greetingDone = False
        self._greetingWaiter: Deferred[Reply] | None = None
        #: Fires with the server's final greeting, relayed to the client (reverse mode).
        self.greeted: Deferred[Reply] = Deferred()
        #: The server's last unsolicited reply was a 421: its close is no surprise.
        self.serverSaidGoodbye = False

    # To the client.

    def reply(self, code: int, text: str) -> None:
        """Answer the current command from the gateway itself."""
        self.replies.local(formatReply(code, text))

    def toClient(self, data: bytes) -> None:
        """Write C{data} to the client now (replies go through L{replies})."""
        if self.stage is not None:
            self.stage.write(Direction.SERVER_TO_CLIENT, data)
        if self.onAnswered is not None:
            self.onAnswered()

    def closeAfterReplies(self, reason: str) -> None:
        """Write the replies already known, this one's included, then end the session."""
        self.closing = True
        log.info("{session}: closing: {reason}", session=self.session.sessionId, reason=reason)
        # Replies still awaited never come now: write what is known, the gateway's last
        # word included, rather than lose it behind them.
        self.replies.abandon()
        self.session.close(reason)

    def serverLost(self, reason: str) -> None:
        """The server closed the control connection unasked: a 421 with C{reason}
        after the replies already known; the session closes with the connection."""
        log.warn(
            "{session}: the server closed the control connection: {reason}",
            session=self.session.sessionId,
            reason=reason,
        )
        self.closing = True
        self.replies.local(formatReply(421, f"connection to the server lost: {reason}"))
        self.replies.abandon()

    def writeEOF(self, direction: Direction) -> None:
        """Half-close toward the peer C{direction} goes to."""
        if self.stage is not None:
            self.stage.writeEOF(direction)

    def upstreamUnreachable(self, failure: Failure, slot: ReplySlot | None = None) -> None:
        """The server cannot be reached (or secured): 421 with the reason, and close."""
        if failure.check(SessionClosed):
            return
        reason = failure.getErrorMessage()
        data = formatReply(421, f"service not available: {reason}")
        if slot is None:
            self.replies.local(data)
        else:
            self.replies.complete(slot, data)
        self.closeAfterReplies(reason)

    # To the server.

    def sendToServer(
        self, command: Command, slot: ReplySlot | None, handler: ReplyHandler | None
    ) -> None:
        """Forward C{command}; its final reply goes to C{handler} (or to C{slot} as is).
        Without a slot the command is the gateway's own and the client sees nothing."""
        self._awaiting[id(command)] = Awaiting(command, slot, handler)
        self.conversation.commandSent(command)
        if self.stage is not None:
            self.stage.write(Direction.CLIENT_TO_SERVER, command.toBytes())

    def reachUpstream(self, secure: Callable[[], Deferred[Any]]) -> Deferred[None]:
        """Reverse mode: connect to the server, relay its greeting and, when that is
        positive, C{secure} the connection.  Fires once all that is done; never when
        it fails (the client gets a 421 and the session closes)."""
        ready: Deferred[None] = Deferred()

        def greeted(greeting: Reply) -> Deferred[Any] | None:
            return secure() if greeting.isPositive else None

        connecting: Deferred[Any] = self.session.connectUpstream()
        connecting.addCallback(lambda _: self.greeted)
        connecting.addCallback(greeted)
        connecting.addCallbacks(lambda _: ready.callback(None), self.upstreamUnreachable)
        return ready

    def switchToTLS(self, side: Side, legTLS: LegTLS, switch: str) -> None:
        """Start TLS on C{side}'s leg now; what that side sent in clear and was not
        handled yet is dropped (STARTTLS injection)."""
        self.session.startTLS(side, legTLS)
        self._discardClear(side, switch)

    # The server's replies.

    def awaiting(self, command: Command, reply: Reply) -> Awaiting | None:
        """Who awaits C{reply} to C{command}: a final reply ends the wait and is the
        caller's to L{deliver}; a preliminary one goes to the client's slot here (and
        None is returned).  None as well for a command not sent through this channel,
        whose reply goes to the client as it is."""
        waiting = self._awaiting.get(id(command))
        if waiting is None:
            self.toClient(reply.toBytes())
            return None
        if reply.isPreliminary:
            if waiting.handler is None and waiting.slot is not None:
                self.replies.preliminary(waiting.slot, reply.toBytes())
            return None
        del self._awaiting[id(command)]
        return waiting

    def deliver(self, waiting: Awaiting, reply: Reply) -> None:
        """The final C{reply} to C{waiting}'s command, to its handler or its slot."""
        if waiting.handler is not None:
            waiting.handler(reply)
        elif waiting.slot is not None:
            self.replies.complete(waiting.slot, reply.toBytes())

    def awaitGreeting(self) -> Deferred[Reply]:
        """The server's final greeting, kept from the client (explicit mode, where
        the gateway greeted the client itself)."""
        waiter: Deferred[Reply] = Deferred()
        self._greetingWaiter = waiter
        return waiter

    def unsolicited(self, reply: Reply) -> None:
        """A reply that answers no command: the greeting, or a goodbye."""
        if not self._greetingDone:
            self._greetingDone = not reply.isPreliminary
            if self._greetingWaiter is not None:
                if self._greetingDone:
                    waiter, self._greetingWaiter = self._greetingWaiter, None
                    waiter.callback(reply)
                return
            if self._greetingDone and not self.greeted.called:
                self.toClient(reply.toBytes())
                self.greeted.callback(reply)
                return
        self.serverSaidGoodbye = reply.code == 421
        self.toClient(reply.toBytes())
