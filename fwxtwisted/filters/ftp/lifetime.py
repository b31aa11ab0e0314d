"""SessionLifetime: when an FTP session ends by itself (idle, login timeout, shutdown)."""

from __future__ import annotations

from twisted.internet.interfaces import IDelayedCall

from fwxtwisted.filters.ftp.channel import ControlChannel
from fwxtwisted.filters.ftp.datachannels import DataChannels
from fwxtwisted.filters.ftp.transfers import TransferLog
from fwxtwisted.logs import Logger

log = Logger()


class SessionLifetime:
    """When a session ends by itself: a client silent for the idle timeout (a transfer
    running keeps it, but a data connection idle that long is closed), not logged in
    within the login timeout, or the gateway shutting down (at once when idle, else
    once the transfer's reply and data connection are done).  The idle timer itself
    is the filter's, reset on every read (see L{idleExpired})."""

    def __init__(self, channel: ControlChannel, data: DataChannels, transfers: TransferLog) -> None:
        self._channel = channel
        self._session = channel.session
        self._options = channel.options
        self._data = data
        self._transfers = transfers
        self._loginTimer: IDelayedCall | None = None
        self._draining = False
        #: Bytes the data connections had moved at the last idle expiry.
        self._dataMoved: int | None = None

    def start(self) -> None:
        """The session starts: the login timeout runs."""
        self._loginTimer = self._session.clock.callLater(
            self._options.loginTimeout, self._loginExpired
        )

    def stop(self) -> None:
        """The session is over: no timer is left."""
        if self._loginTimer is not None and self._loginTimer.active():
            self._loginTimer.cancel()
        self._loginTimer = None

    def idleExpired(self) -> bool:
        """The control connection was silent for the idle timeout: close it, unless
        a transfer runs (then only a data connection idle as long is closed).

        @return: True when the session stays (its idle timeout starts again).
        """
        if self._data.transferring:
            self._closeIdleDataConnections()
            return True
        self._channel.reply(
            421, f"idle for {self._options.idleTimeout:g} s; closing control connection"
        )
        self._channel.closeAfterReplies("idle timeout")
        return False

    def loggedIn(self) -> None:
        """The server accepted a login: the login timeout is over."""
        if self._loginTimer is not None and self._loginTimer.active():
            self._loginTimer.cancel()
        self._loginTimer = None

    def dataEstablished(self) -> None:
        """A new data connection: its idle time starts now."""
        self._dataMoved = None

    def shutdown(self, final: bool) -> None:
        """The gateway stops: close now when C{final} or idle, else once not busy."""
        if self._channel.closing:
            return
        if final or not self._busy():
            self._channel.reply(421, "the gateway is shutting down; try again later")
            self._channel.closeAfterReplies("gateway shutting down")
        else:
            self._draining = True

    def maybeFinishDraining(self) -> None:
        """A transfer may have ended: a draining session closes once none runs."""
        if self._draining and not self._channel.closing and not self._busy():
            self.shutdown(final=True)

    def _busy(self) -> bool:
        """True while a transfer runs: its command or its data connection is not done."""
        return self._data.transferring or self._transfers.running

    def _loginExpired(self) -> None:
        self._loginTimer = None
        self._channel.reply(421, f"not logged in after {self._options.loginTimeout:g} s; closing")
        self._channel.closeAfterReplies("login timeout")

    def _closeIdleDataConnections(self) -> None:
        """A data connection that moved no byte either way for a whole idle timeout is
        closed (a peer that never sends its FIN must not hold it, and with it this
        session, for ever); the control connection stays."""
        established = [
            action
            for action in getattr(self._session, "actions", ())
            if self._data.state(action).established and not self._data.state(action).closed
        ]
        moved = [getattr(action, "bytesMoved", None) for action in established]
        if None in moved:
            return  # actions that cannot tell: the transfer is left to run
        total = sum(m for m in moved if m is not None)
        if total != self._dataMoved:
            self._dataMoved = total
            return
        self._dataMoved = None
        for action in established:
            log.warn(
                "{session}: data connection idle for {idle:g} s; closing it",
                session=self._session.sessionId,
                idle=self._options.idleTimeout,
            )
            action.cancel()
