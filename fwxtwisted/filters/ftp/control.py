"""FTPSessionFilter: reads one FTP control connection and dispatches it to the filter's
parts (data channels, TLS, explicit login, transfer log, timeouts)."""

from __future__ import annotations

from collections import deque
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall
from twisted.python.failure import Failure
from zope.interface import implementer

from fwxtwisted.filters.ftp.channel import ControlChannel, ReplyHandler, ReplySlot
from fwxtwisted.filters.ftp.commands import Command
from fwxtwisted.filters.ftp.conversation import (
    ClientCommand,
    ClientEvent,
    Conversation,
    ServerEvent,
    ServerProtocolError,
    ServerReply,
)
from fwxtwisted.filters.ftp.datachannels import DataChannels
from fwxtwisted.filters.ftp.explicit import ExplicitLogin
from fwxtwisted.filters.ftp.lane import Lane
from fwxtwisted.filters.ftp.lifetime import SessionLifetime
from fwxtwisted.filters.ftp.options import FTPOptions
from fwxtwisted.filters.ftp.replies import Reply, formatReply
from fwxtwisted.filters.ftp.security import (
    REFUSED_UNDER_TLS,
    REUSE_REFUSAL,
    SECURITY_VERBS,
    FTPSecurity,
)
from fwxtwisted.filters.ftp.transfers import DIRECTIONS, TransferLog
from fwxtwisted.interfaces import (
    Direction,
    FirewallEvent,
    FirewallNotification,
    IDataChannel,
    IDataFilter,
    ISession,
    ISessionFilter,
    Side,
)
from fwxtwisted.logs import Logger

log = Logger()

#: Commands a client may have unanswered (waiting behind a slow step, or for their
#: reply): past it the gateway stops reading from the client until replies go out, and
#: what it read already waits unparsed (at most one read, 64 KiB).
MAX_QUEUED_COMMANDS = 64

#: The reply to a transfer whose data connection a peer left mid-TLS-handshake.
_UNFINISHED_TRANSFER = "Connection closed before its TLS handshake ended; transfer aborted."


@implementer(ISessionFilter, IDataFilter)
class FTPSessionFilter:
    """The FTP filter for one session: a data filter on the control connection. It
    reads both directions, holds the client back past L{MAX_QUEUED_COMMANDS}, and
    hands each command and reply to the part that deals with it; the parts talk to
    the peers through the L{ControlChannel}, never through this."""

    def __init__(self, session: ISession, options: FTPOptions) -> None:
        self.session = session
        self.options = options
        self.conversation = Conversation(
            maxCommandLength=options.maxLineLength, maxReplyLineLength=options.maxLineLength
        )
        self.channel = ControlChannel(session, options, self.conversation, self.discardClear)
        self.replies = self.channel.replies
        self.security = FTPSecurity(self.channel)
        self.data = DataChannels(self.channel, self.security)
        self.transfers = TransferLog(session, self.data.state)
        self.lifetime = SessionLifetime(self.channel, self.data, self.transfers)
        self.explicitLogin = ExplicitLogin(self.channel, self.security)
        self.user: str | None = None
        #: The server is connected and greeted (explicit mode: logged in to it).
        self.upstreamReady = not options.explicit
        #: The server's leg is connected and greeted (and secured by policy): a
        #: client's EOF has somewhere to go.
        self._upstreamUp = False
        self._quitting = False
        #: Client commands, one at a time.
        self._lane = Lane(self._commandFailed)
        #: The part of the server's current read not fed to the conversation yet.
        self._serverUnread = b""
        #: Client commands parsed but not handled yet, with their size in bytes.
        self._waiting: deque[tuple[ClientEvent, int]] = deque()
        #: Counts the client's switches to TLS: a command read before one is dropped.
        self._clientEpoch = 0
        #: Client bytes read but not parsed yet (commands past the limit in flight),
        #: from offset L{_backlogAt}.
        self._backlog = b""
        self._backlogAt = 0
        self._pumping = False
        self._pump: IDelayedCall | None = None
        self._readingPaused = False
        self._idle: IDelayedCall | None = None

    # ISessionFilter

    def sessionStarted(self) -> None:
        self.session.attachDataFilter(self)
        # The session reads its client-facing address from the socket when first asked;
        # a queued data command may be handled after the client has gone, so it is
        # asked now, while the client is connected.
        self.session.internalAddress  # noqa: B018
        self._touch()
        self.lifetime.start()
        self.security.clientTLS = self.session.isTLS(Side.CLIENT)
        if self.options.explicit:
            self.channel.toClient(
                formatReply(220, "fwxtwisted FTP gateway ready; log in as USER name@host[:port]")
            )
            return
        # Commands wait for the server leg (data commands need its address) and, when
        # policy wants TLS toward the server, for that TLS: nothing goes in clear.
        upstream = self.session.defaultUpstream
        self.security.upstreamName = upstream.host if upstream is not None else None
        ready = self.channel.reachUpstream(self.security.secureUpstreamIfWanted)
        self._lane.waitFor(ready.addCallback(self._upstreamReached))

    def firewallEvent(self, notification: FirewallNotification) -> None:
        if notification.event is FirewallEvent.LEG_CLOSED and notification.action is None:
            self._primaryLegClosed(notification)
            return
        if notification.event is FirewallEvent.GATEWAY_SHUTDOWN:
            self.lifetime.shutdown(final=notification.reason != "draining")
            return
        if notification.event is FirewallEvent.ESTABLISHED_CONNECTION:
            self.lifetime.dataEstablished()
        self.data.event(notification)
        self.transfers.dataChanged(notification.action)
        if (
            notification.event is FirewallEvent.CONNECTION_TERMINATING
            and not self.session.closed
            and not self.channel.closing
        ):
            # The silence an idle timeout counts starts when a transfer ends, not at
            # the timer's last re-arm while it ran.
            self._touch()
        self.lifetime.maybeFinishDraining()

    def detach(self) -> None:
        self.lifetime.stop()
        for timer in (self._idle, self._pump):
            if timer is not None and timer.active():
                timer.cancel()
        self._idle = self._pump = None
        self._backlog = b""
        self.transfers.sessionEnded()

    # IDataFilter

    def attached(self, channel: IDataChannel) -> None:
        self.channel.stage = channel

    def dataReceived(self, direction: Direction, data: bytes) -> None:
        self._touch()
        if direction is Direction.CLIENT_TO_SERVER:
            if self._backlogAt < len(self._backlog):
                self._backlog = self._backlog[self._backlogAt :] + data
            else:
                self._backlog = data
            self._backlogAt = 0
            self._pumpCommands()
            return
        # A line at a time: a line can switch the server's side to TLS (a 234), and
        # what follows it in this read came in clear: discardClear drops it.
        self._serverUnread = data
        while unread := self._serverUnread:
            end = unread.find(b"\n") + 1 or len(unread)
            line, self._serverUnread = unread[:end], unread[end:]
            for serverEvent in self.conversation.receiveServerData(line):
                self._serverEvent(serverEvent)

    def discardClear(self, side: Side, switch: str) -> None:
        """C{side} switches to TLS now: drop every byte it sent in clear that was not
        handled yet (the rest of the read, an unfinished line, commands waiting), so
        that none is taken as sent under TLS (STARTTLS injection, CVE-2011-0411)."""
        if side is Side.CLIENT:
            dropped = len(self._backlog) - self._backlogAt
            self._backlog, self._backlogAt = b"", 0
            dropped += self.conversation.discardClientData()
            dropped += sum(size for _, size in self._waiting)
            self._waiting.clear()
            self._clientEpoch += 1
        else:
            dropped = len(self._serverUnread)
            self._serverUnread = b""
            dropped += self.conversation.discardServerData()
        if dropped:
            log.warn(
                "{session}: discarded {count} bytes the {side} sent in clear after {switch}",
                session=self.session.sessionId,
                count=dropped,
                side=side.value,
                switch=switch,
            )

    def eofReceived(self, direction: Direction) -> None:
        if direction is Direction.CLIENT_TO_SERVER:
            if not self._upstreamUp:
                # No server to pass the EOF to (explicit mode before a login, reverse
                # mode before the server greeted): a client that leaves (a port scan,
                # a health check) ends its session now, not at the login timeout.
                if not self.channel.closing:
                    self.channel.closeAfterReplies("client closed the connection")
                return
            self._lane.run(lambda: self.channel.writeEOF(Direction.CLIENT_TO_SERVER))
        else:
            self.channel.writeEOF(Direction.SERVER_TO_CLIENT)

    def detached(self) -> None:
        self.channel.stage = None

    # Client commands, one at a time.

    @property
    def commandsInFlight(self) -> int:
        """Client commands not answered yet: waiting to be handled, or for a reply."""
        return self._lane.queued + self.replies.pending

    def _pumpCommands(self) -> None:
        """Parse and handle the client's backlog, line by line, while fewer than
        L{MAX_QUEUED_COMMANDS} commands are unanswered; the client is not read while
        the limit is reached (a client pipelining without reading its replies holds
        64 commands and one read of bytes, nothing more)."""
        if self._pumping:
            return
        self._pumping = True
        try:
            # self._backlog is read afresh each time round: a command handled here
            # (AUTH TLS) may discard what is left of it (discardClear).
            while (
                self._backlogAt < len(self._backlog)
                and self.commandsInFlight < MAX_QUEUED_COMMANDS
                and not self.channel.closing
                and not self.session.closed
            ):
                backlog = self._backlog
                end = backlog.find(b"\n", self._backlogAt)
                end = len(backlog) if end < 0 else end + 1
                piece = backlog[self._backlogAt : end]
                self._backlogAt = end
                size = len(piece) + len(self.conversation.clientPending)
                for clientEvent in self.conversation.receiveClientData(piece):
                    self._queue(clientEvent, size)
            if self._backlogAt >= len(self._backlog):
                self._backlog, self._backlogAt = b"", 0
        finally:
            self._pumping = False
        self._flowControl()

    def _flowControl(self) -> None:
        """Pause reading from the client at the limit, resume below it."""
        full = self._backlogAt < len(self._backlog) or (
            self.commandsInFlight >= MAX_QUEUED_COMMANDS
        )
        stage = self.channel.stage
        if full == self._readingPaused or stage is None:
            return
        self._readingPaused = full
        # While the client is held back, each reply written may let it go on.
        self.channel.onAnswered = self._answered if full else None
        if full:
            stage.pauseReading(Direction.CLIENT_TO_SERVER)
        else:
            stage.resumeReading(Direction.CLIENT_TO_SERVER)

    def _answered(self) -> None:
        """A reply went to the client: commands held back may go on (on the next
        turn: this runs inside the reply queue's flush)."""
        if self._backlogAt < len(self._backlog):
            if (self._pump is None or not self._pump.active()) and not self.channel.closing:
                self._pump = self.session.clock.callLater(0, self._pumpCommands)
        elif self._readingPaused and not self._pumping:
            self._flowControl()

    def _queue(self, clientEvent: ClientEvent, size: int = 0) -> None:
        epoch = self._clientEpoch
        self._waiting.append((clientEvent, size))

        def handle() -> Deferred[Any] | None:
            if epoch != self._clientEpoch:
                return None  # read in clear before a switch to TLS: dropped
            self._waiting.popleft()
            if self.session.closed or self.channel.closing:
                return None
            return self._clientEvent(clientEvent)

        self._lane.run(handle)

    def _commandFailed(self, failure: Failure) -> None:
        log.failure("{session}: command handling failed", failure, session=self.session.sessionId)
        self.session.close("internal error in the FTP filter")

    def _clientEvent(self, clientEvent: ClientEvent) -> Deferred[Any] | None:
        channel = self.channel
        if not isinstance(clientEvent, ClientCommand):
            log.warn(
                "{session}: bad command from client: {reason}",
                session=self.session.sessionId,
                reason=clientEvent.reason,
            )
            channel.reply(clientEvent.replyCode, clientEvent.reason)
            if clientEvent.fatal:
                channel.closeAfterReplies(f"client protocol error: {clientEvent.reason}")
            return None
        command = clientEvent.command
        verb = command.verb
        if verb in SECURITY_VERBS or (
            verb in REFUSED_UNDER_TLS and (self.security.clientTLS or self.security.upstreamTLS)
        ):
            securing = self.security.clientCommand(command)
            if securing is not None:
                # The server refusing AUTH TLS that policy requires: 421, nothing sent.
                securing.addErrback(channel.upstreamUnreachable)
            return securing
        if verb in ("USER", "PASS") and self.security.refusesLogin():
            channel.reply(530, "TLS required: use AUTH TLS before logging in")
            return None
        if not self.upstreamReady:
            return self._beforeUpstream(command)
        if verb in ("PASV", "EPSV", "PORT", "EPRT"):
            if self.security.refusesClearData():
                channel.reply(521, "data connections must be protected: send PROT P first")
                return None
            return self._dataCommand(command)
        if verb in ("LPRT", "LPSV"):
            channel.reply(502, f"{verb} not implemented; use EPSV or EPRT")
        elif verb == "USER" and "@" in command.argument and self.options.explicit:
            channel.reply(530, "already connected to a server; reconnect to change servers")
        else:
            if verb == "USER":
                self.user = command.argument
            if verb in DIRECTIONS:
                self.transfers.start(command, self.user, self.data.current)
            self._quitting = self._quitting or verb == "QUIT"
            slot = self.replies.reserve()
            channel.sendToServer(command, slot, self._featHandler(slot) if verb == "FEAT" else None)
        return None

    def _upstreamReached(self, _: object) -> None:
        self._upstreamUp = True

    def _beforeUpstream(self, command: Command) -> Deferred[Any] | None:
        """Explicit mode, no server yet: the login's result (the name logged in as)
        makes the server ready."""
        login = self.explicitLogin.command(command)
        if login is None:
            return None

        def loggedIn(name: str | None) -> None:
            if name is not None:
                self.upstreamReady = self._upstreamUp = True
                self.user = name

        return login.addCallback(loggedIn)

    def _dataCommand(self, command: Command) -> Deferred[Any]:
        """PASV, EPSV, PORT, EPRT, once the server's side of data protection is set."""

        def handle(_: object) -> None:
            if command.verb in ("PASV", "EPSV"):
                self.data.passive(command)
            else:
                self.data.active(command)

        protecting = self.security.protectUpstream()
        protecting.addCallbacks(handle, self.channel.upstreamUnreachable)
        return protecting

    def _featHandler(self, slot: ReplySlot) -> ReplyHandler:
        return lambda reply: self.replies.complete(slot, self.security.features(reply).toBytes())

    # Server replies.

    def _serverEvent(self, serverEvent: ServerEvent) -> None:
        if isinstance(serverEvent, ServerProtocolError):
            log.warn(
                "{session}: bad reply from server: {reason}",
                session=self.session.sessionId,
                reason=serverEvent.reason,
            )
            self.channel.reply(421, "the server sent an invalid reply; closing")
            self.channel.closeAfterReplies(f"server protocol error: {serverEvent.reason}")
            return
        assert isinstance(serverEvent, ServerReply)
        reply, command = serverEvent.reply, serverEvent.command
        if command is None:
            self.channel.unsolicited(reply)
            return
        waiting = self.channel.awaiting(command, reply)
        if waiting is None:
            return
        if command.verb in ("USER", "PASS") and reply.code == 230:
            self.lifetime.loggedIn()
        if command.verb not in DIRECTIONS:
            self.channel.deliver(waiting, reply)
            return
        self.channel.deliver(waiting, self._transferReply(command, reply))
        # The transfer it answers is over: a draining session may be done (nothing
        # else ends a transfer but its data connection's end, a firewall event).
        self.lifetime.maybeFinishDraining()

    def _transferReply(self, command: Command, reply: Reply) -> Reply:
        """The final reply to a transfer command, as the client is to see it."""
        failure = self.data.state(self.transfers.actionOf(command)).failure
        if self.security.takeReuseRefusal():
            reply = Reply(522, (f"522 {REUSE_REFUSAL}".encode(),))
        elif failure is not None and reply.isPositive:
            # The server saw a clean close (an upload of 0 bytes, say): not so.
            log.warn(
                "{session}: data connection: {failure}",
                session=self.session.sessionId,
                failure=failure,
            )
            reply = Reply(426, (f"426 {_UNFINISHED_TRANSFER}".encode(),))
        self.transfers.replied(command, reply)
        return reply

    def _primaryLegClosed(self, notification: FirewallNotification) -> None:
        if notification.side is not Side.SERVER or self.channel.closing:
            return
        if self._quitting or self.channel.serverSaidGoodbye:
            return
        self.channel.serverLost(notification.reason or "closed")

    # Plumbing.

    def _touch(self) -> None:
        """The control connection is not idle: its idle timeout counts from now."""
        if self._idle is not None and self._idle.active():
            self._idle.reset(self.options.idleTimeout)
        else:
            self._idle = self.session.clock.callLater(self.options.idleTimeout, self._idleExpired)

    def _idleExpired(self) -> None:
        self._idle = None
        if self.lifetime.idleExpired():
            self._touch()
