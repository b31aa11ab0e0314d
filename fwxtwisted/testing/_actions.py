"""Fake permissions (IFirewallAction, IJoin) a test drives by hand, and the default addresses."""

from __future__ import annotations

from collections.abc import Mapping

from twisted.internet.defer import Deferred, succeed
from zope.interface import implementer

from fwxtwisted.address import Address
from fwxtwisted.interfaces import (
    ActionState,
    Connect,
    IFirewallAction,
    IJoin,
    LegSpec,
    Listen,
    RedirectFlags,
    Side,
    Transport,
)

# Documentation addresses (RFC 5737), so a fake never looks like a real host.
DEFAULT_CLIENT = Address("192.0.2.10", 50000)
DEFAULT_INTERNAL = Address("198.51.100.1", 2100)
DEFAULT_EXTERNAL_IP = "203.0.113.1"
DEFAULT_UPSTREAM = Address("203.0.113.50", 2100)


class _FakePermission:
    """The life of a fake permission, moved by the test.

    L{cancel} behaves as the real one (idempotent, no effect once finished); L{accept},
    L{expire} and L{finish} stand in for what the gateway's listener would do.

    @ivar cancelCalls: how many times L{cancel} was called, effective or not.
    @ivar finished: True once L{whenFinished} has fired (or would fire at once).
    """

    def __init__(self, flags: RedirectFlags, context: object) -> None:
        self.flags = flags
        self.context = context
        self.state = ActionState.LISTENING
        self.connectionCount = 0
        self.cancelCalls = 0
        self.finished = False
        self._finishWaiters: list[Deferred[ActionState]] = []

    def cancel(self) -> None:
        """Withdraw the permission: state CANCELLED and finished, unless already finished."""
        self.cancelCalls += 1
        if self.finished or self.state in (ActionState.CANCELLED, ActionState.EXPIRED):
            return
        self.state = ActionState.CANCELLED
        self.finish()

    def whenFinished(self) -> Deferred[ActionState]:
        """A Deferred firing with the final state once L{finish} (or cancel/expire) ran."""
        if self.finished:
            return succeed(self.state)
        waiter: Deferred[ActionState] = Deferred()
        self._finishWaiters.append(waiter)
        return waiter

    def accept(self) -> None:
        """Play the listener taking a connection: count it, and a single-use permission
        becomes USED."""
        if self.state is not ActionState.LISTENING:
            raise RuntimeError(f"{self!r} is not listening")
        self.connectionCount += 1
        if not self.flags & RedirectFlags.ALLOW_MULTIPLE:
            self.state = ActionState.USED

    def expire(self) -> None:
        """Play the redirect timeout: an unused permission becomes EXPIRED and finishes.

        Only the state changes; deliver the PERMISSION_EXPIRED notification with
        L{FakeSession.fireEvent} if the filter should see it.
        """
        if self.state is not ActionState.LISTENING:
            raise RuntimeError(f"{self!r} is not listening")
        self.state = ActionState.EXPIRED
        self.finish()

    def finish(self) -> None:
        """Play the last connection ending: fire L{whenFinished} with the current state."""
        if self.finished:
            return
        self.finished = True
        waiters, self._finishWaiters = self._finishWaiters, []
        for waiter in waiters:
            waiter.callback(self.state)


@implementer(IFirewallAction)
class FakeFirewallAction(_FakePermission):
    """An L{IFirewallAction} with no listener behind it; the test moves its state."""

    def __init__(
        self,
        internalAddress: Address,
        connectAddress: Address,
        transport: Transport = Transport.TCP,
        externalAddress: str | None = None,
        expectedPeer: str | None = None,
        flags: RedirectFlags = RedirectFlags.TIMEOUT,
        context: object = None,
    ) -> None:
        super().__init__(flags, context)
        self.transport = transport
        self.internalAddress = internalAddress
        self.connectAddress = connectAddress
        self.externalAddress = externalAddress
        self.expectedPeer = expectedPeer

    def __repr__(self) -> str:
        return (
            f"<FakeFirewallAction {self.internalAddress} -> {self.connectAddress}"
            f" {self.state.value}>"
        )


@implementer(IJoin)
class FakeJoin(_FakePermission):
    """An L{IJoin} with no legs behind it; the test moves its state.

    The redirect-shaped attributes are derived from the legs as the real join does.
    """

    transport = Transport.TCP

    def __init__(
        self,
        client: LegSpec,
        server: LegSpec,
        listeningAddresses: Mapping[Side, Address],
        flags: RedirectFlags = RedirectFlags.TIMEOUT,
        context: object = None,
    ) -> None:
        super().__init__(flags, context)
        self.client = client
        self.server = server
        self.listeningAddresses = dict(listeningAddresses)

    def __repr__(self) -> str:
        return f"<FakeJoin {self.client} <-> {self.server} {self.state.value}>"

    @property
    def internalAddress(self) -> Address | None:
        """The client-side listening address, else the server-side one."""
        return self.listeningAddresses.get(Side.CLIENT) or self.listeningAddresses.get(Side.SERVER)

    @property
    def connectAddress(self) -> Address | None:
        """The server-side leg's address when the gateway connects it."""
        return self.server.address if isinstance(self.server, Connect) else None

    @property
    def externalAddress(self) -> str | None:
        """Where the server-side leg leaves from, or is accepted on."""
        if isinstance(self.server, Connect):
            return self.server.sourceHost
        return self.server.host

    @property
    def expectedPeer(self) -> str | None:
        """The peer the client-side leg accepts, when it listens."""
        return self.client.expectedPeer if isinstance(self.client, Listen) else None
