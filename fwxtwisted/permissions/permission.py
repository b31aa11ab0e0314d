"""ListeningPermission: what TCP and UDP redirect permissions share (a peer-checked
listener, its expiry timer, notifications, and knowing when all is over)."""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IListeningPort

from fwxtwisted.address import Address, normalizeHost
from fwxtwisted.interfaces import (
    ActionState,
    ByteCounts,
    FirewallEvent,
    FirewallNotification,
    RedirectFlags,
)
from fwxtwisted.logs import Logger
from fwxtwisted.net.portclosing import PortCloser
from fwxtwisted.permissions.gateway import Gateway

log = Logger()

Notify = Callable[[FirewallNotification], None]


class ListeningPermission:
    """The common half of a redirect permission; subclasses say how to listen
    (L{_listen}) and what still runs after the listener is gone (L{_live})."""

    def __init__(
        self,
        gateway: Gateway,
        connectAddress: Address,
        externalAddress: str | None,
        expectedPeer: str,
        flags: RedirectFlags,
        context: object,
        notify: Notify,
        label: str = "",
    ) -> None:
        self._gateway = gateway
        self.connectAddress = connectAddress
        self.externalAddress = externalAddress
        self.expectedPeer = normalizeHost(expectedPeer)
        self.flags = flags
        self.context = context
        self._notify = notify
        self._label = label
        self.internalAddress: Address | None = None
        self.state = ActionState.LISTENING
        self.connectionCount = 0
        self.refusedCount = 0
        self._port: IListeningPort | None = None
        self._timer: IDelayedCall | None = None
        self._waiters: list[Deferred[ActionState]] = []
        self._closer = PortCloser(self._checkDone)
        self._done = False

    # Set-up, by the session.

    def bind(self, host: str, port: int) -> IListeningPort:
        """Listen on C{host}:C{port}; raises C{CannotListenError} when it is taken."""
        listening = self._listen(host, port)
        self._port = listening
        self.internalAddress = Address(host, listening.getHost().port)  # type: ignore[attr-defined]
        return listening

    def start(self, timeout: float) -> None:
        """Arm the expiry timer when the permission was granted with TIMEOUT."""
        if RedirectFlags.TIMEOUT in self.flags and self.state is ActionState.LISTENING:
            self._timer = self._gateway.clock.callLater(timeout, self._expire)

    # IFirewallAction

    def whenFinished(self) -> Deferred[ActionState]:
        if self._done:
            return succeed(self.state)
        waiter: Deferred[ActionState] = Deferred()
        self._waiters.append(waiter)
        return waiter

    # For subclasses.

    def _listen(self, host: str, port: int) -> IListeningPort:
        raise NotImplementedError

    def _live(self) -> bool:
        """True while a connection (or mapping) of this permission is not over."""
        raise NotImplementedError

    def _expire(self) -> None:
        self._timer = None
        if self.state is not ActionState.LISTENING or self._live():
            return
        self.state = ActionState.EXPIRED
        self._stopListening()
        log.info(
            "{label}: permission on {internal} expired unused",
            label=self._label,
            internal=str(self.internalAddress),
        )
        self._emit(FirewallEvent.PERMISSION_EXPIRED, reason="timeout")
        self._checkDone()

    #: What a refused peer sent, for the log ("data connection", "datagram").
    refusedWhat = "connection"

    def _refuse(self, peer: Address, reason: str) -> None:
        self.refusedCount += 1
        why = f"only {self.expectedPeer} may connect" if reason == "wrong peer" else reason
        log.warn(
            "{label}: refused {what} from {peer} to {internal}: {why}",
            label=self._label,
            what=self.refusedWhat,
            peer=str(peer),
            internal=str(self.internalAddress),
            why=why,
        )
        self._emit(FirewallEvent.REFUSED_CONNECTION, peer, reason=reason)

    def _emit(
        self,
        event: FirewallEvent,
        clientAddress: Address | None = None,
        counts: ByteCounts | None = None,
        reason: str | None = None,
        fastPath: bool = False,
    ) -> None:
        self._notify(
            FirewallNotification(
                event=event,
                action=self,  # type: ignore[arg-type]
                context=self.context,
                clientAddress=clientAddress,
                serverAddress=self.connectAddress,
                counts=counts or ByteCounts(),
                reason=reason,
                fastPath=fastPath,
            )
        )

    def _cancelTimer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _stopListening(self) -> None:
        self._cancelTimer()
        if self._port is not None:
            port, self._port = self._port, None
            self._closer.close(port)

    def _checkDone(self) -> None:
        if self._done or self._port is not None or self._closer.busy or self._live():
            return
        if self.state is ActionState.LISTENING:
            return
        self._done = True
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.callback(self.state)
