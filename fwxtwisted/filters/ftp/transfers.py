"""Transfer: one data transfer's record, logged once as a structured event."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from fwxtwisted.filters.ftp.commands import Command
from fwxtwisted.filters.ftp.replies import Reply
from fwxtwisted.interfaces import IFirewallAction, ISession
from fwxtwisted.logs import Logger

if TYPE_CHECKING:
    from fwxtwisted.filters.ftp.datachannels import DataState

log = Logger(namespace="fwxtwisted.ftp.transfer")

DIRECTIONS = {
    "RETR": "download",
    "STOR": "upload",
    "STOU": "upload",
    "APPE": "upload",
    "LIST": "listing",
    "NLST": "listing",
    "MLSD": "listing",
}


@dataclass
class Transfer:
    """A transfer command and what became of its data connection.

    It is logged when both its final reply and the end of its data connection are
    known (or at once when no data connection was ever made).
    """

    sessionId: str
    command: str
    path: str
    client: str
    user: str | None
    server: str | None
    external: str | None
    started: float
    action: IFirewallAction | None = None
    established: bool = False
    dataClosed: bool = False
    bytes: int = 0
    result: str | None = None
    ended: float | None = None
    logged: bool = field(default=False)

    @property
    def direction(self) -> str:
        """download, upload or listing."""
        return DIRECTIONS.get(self.command, "other")

    def ready(self) -> bool:
        """True when everything to log is known."""
        return self.result is not None and (self.dataClosed or not self.established)

    def emit(self, now: float) -> None:
        """Log the transfer once, as one structured event."""
        if self.logged:
            return
        self.logged = True
        duration = max(0.0, (self.ended or now) - self.started)
        log.info(
            "{session}: ftp {direction} {path!r} {bytes} bytes in {duration:.3f} s: "
            "{result} (client {client}, user {user}, server {server}, from {external})",
            fwx_event="ftp.transfer",
            session=self.sessionId,
            client=self.client,
            user=self.user,
            server=self.server,
            external=self.external,
            path=self.path,
            command=self.command,
            direction=self.direction,
            bytes=self.bytes,
            duration=duration,
            result=self.result,
        )


class TransferLog:
    """The transfers of one session, each logged once its reply and the end of its data
    connection are known.  At most L{MAX_OPEN} wait; an older one is logged as is."""

    MAX_OPEN = 16

    def __init__(
        self, session: ISession, stateOf: Callable[[IFirewallAction | None], DataState]
    ) -> None:
        self._session = session
        self._stateOf = stateOf
        self._open: list[Transfer] = []

    @property
    def running(self) -> bool:
        """True while a transfer command awaits its final reply."""
        return any(t.result is None for t in self._open)

    def start(self, command: Command, user: str | None, action: IFirewallAction | None) -> None:
        """A transfer command was forwarded; C{action} is the data channel it will use."""
        server = self._session.serverAddress
        if len(self._open) >= self.MAX_OPEN:
            self._open.pop(0).emit(self._now())
        transfer = Transfer(
            sessionId=self._session.sessionId,
            command=command.verb,
            path=command.argument,
            client=str(self._session.clientAddress),
            user=user,
            server=str(server) if server else None,
            external=self._session.externalAddress,
            started=self._now(),
            action=action,
        )
        state = self._stateOf(action)
        transfer.established, transfer.dataClosed = state.established, state.closed
        self._open.append(transfer)

    def actionOf(self, command: Command) -> IFirewallAction | None:
        """The data channel of the transfer C{command} started, awaiting its reply."""
        transfer = self._awaitingReply(command)
        return transfer.action if transfer is not None else None

    def replied(self, command: Command, reply: Reply) -> None:
        """The final reply to a transfer command."""
        transfer = self._awaitingReply(command)
        if transfer is not None:
            transfer.result = f"{reply.code} {reply.text.splitlines()[-1].strip()}"
            transfer.ended = self._now()
            self._follow(transfer)

    def _awaitingReply(self, command: Command) -> Transfer | None:
        for transfer in self._open:
            if transfer.command == command.verb and transfer.result is None:
                return transfer
        return None

    def dataChanged(self, action: IFirewallAction | None) -> None:
        """Something happened to the connection of C{action}."""
        for transfer in list(self._open):
            if transfer.action is not None and transfer.action is action:
                self._follow(transfer)

    def sessionEnded(self) -> None:
        """Log what is left; a transfer whose data connection is still closing is
        logged once that is over, with its bytes (known only then)."""
        for transfer in self._open:
            if transfer.result is None:
                transfer.result = "aborted: session closed"
            state = self._stateOf(transfer.action)
            if transfer.action is not None and state.established and not state.closed:
                transfer.action.whenFinished().addBoth(self._afterData, transfer)
            else:
                transfer.emit(self._now())
        self._open.clear()

    def _afterData(self, _: object, transfer: Transfer) -> None:
        self._update(transfer)
        transfer.emit(self._now())

    def _follow(self, transfer: Transfer) -> None:
        self._update(transfer)
        if transfer.ready():
            transfer.emit(self._now())
            self._open.remove(transfer)

    def _update(self, transfer: Transfer) -> None:
        state = self._stateOf(transfer.action)
        transfer.established, transfer.dataClosed = state.established, state.closed
        transfer.bytes = state.bytes

    def _now(self) -> float:
        now: float = self._session.clock.seconds()
        return now
