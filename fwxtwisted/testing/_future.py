"""AllowsFutureConnects: the allowFutureConnect calls a FakeSession records and grants."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from twisted.internet.defer import Deferred, fail
from twisted.python.failure import Failure

from fwxtwisted.address import Address
from fwxtwisted.callchecks import futureFlow
from fwxtwisted.errors import SessionClosed, TooManyPendingRedirects
from fwxtwisted.interfaces import (
    IDataFilter,
    IFirewallAction,
    ISessionFilter,
    LegTLS,
    RedirectFlags,
    Side,
    Transport,
)
from fwxtwisted.testing._actions import FakeFirewallAction
from fwxtwisted.testing._calls import RecordingSession


@dataclass
class AllowCall:
    """One call to L{FakeSession.allowFutureConnect}: its arguments (C{source} and
    C{destination} normalized, as the real session does) and its Deferred.

    The test answers it with L{grant}, L{succeed} or L{fail} (e.g. with the
    C{FWXError} of a gateway without a transparent listener).
    """

    source: Address
    destination: Address
    flags: RedirectFlags
    proxyExternalAddress: str | None
    transport: Transport
    protocolId: uuid.UUID | None
    sessionFilter: ISessionFilter | None
    context: object
    tls: Mapping[Side, LegTLS] | None
    dataFilterFactory: Callable[[], Sequence[IDataFilter]] | None
    #: What allowFutureConnect returned to the filter.
    deferred: Deferred[IFirewallAction] = field(repr=False)
    session: RecordingSession = field(repr=False, compare=False)
    #: The action the call succeeded with, once it did.
    action: IFirewallAction | None = None

    @property
    def pending(self) -> bool:
        """True until the Deferred has fired."""
        return not self.deferred.called

    def succeed(self, action: IFirewallAction) -> None:
        """Fire the Deferred with C{action}, which the session then cancels at close."""
        self.action = action
        self.session.actions.append(action)
        self.deferred.callback(action)

    def fail(self, reason: BaseException | Failure) -> None:
        """Fail the Deferred, e.g. with C{FWXError("...")} or C{NftError("...")}."""
        self.deferred.errback(reason)

    def grant(self) -> FakeFirewallAction:
        """Succeed as the gateway would once the kernel has the flow: a
        L{FakeFirewallAction} whose C{internalAddress} and C{connectAddress} are the
        destination and whose C{expectedPeer} is the source IP.

        @return: the action the filter was given.
        """
        action = FakeFirewallAction(
            internalAddress=self.destination,
            connectAddress=self.destination,
            transport=self.transport,
            externalAddress=self.proxyExternalAddress or self.session.externalAddress,
            expectedPeer=self.source.host,
            flags=self.flags,
            context=self.context,
        )
        self.succeed(action)
        return action


class AllowsFutureConnects:
    """The part of L{FakeSession} that records L{ISession.allowFutureConnect} calls,
    refuses them as the real session does, and grants them at once with C{autoGrant}."""

    closed: bool
    sessionId: str
    clientAddress: Address
    internalAddress: Address
    externalAddress: str | None
    autoGrant: bool
    actions: list[IFirewallAction]
    #: Every L{AllowCall}, oldest first (one refused for its arguments is not recorded).
    allowCalls: list[AllowCall]

    def _tooManyPending(self, more: int) -> TooManyPendingRedirects | None:
        raise NotImplementedError

    def allowFutureConnect(
        self,
        source: Address,
        destination: Address,
        flags: RedirectFlags = RedirectFlags.TIMEOUT,
        proxyExternalAddress: str | None = None,
        transport: Transport = Transport.TCP,
        protocolId: uuid.UUID | None = None,
        sessionFilter: ISessionFilter | None = None,
        context: object = None,
        tls: Mapping[Side, LegTLS] | None = None,
        dataFilterFactory: Callable[[], Sequence[IDataFilter]] | None = None,
    ) -> Deferred[IFirewallAction]:
        """Record an L{AllowCall}; the test answers it (at once with C{autoGrant}).

        After close the call is still recorded but its Deferred has already failed
        with C{SessionClosed}.  Refused as the real session refuses, with a failed
        Deferred and no call recorded: UDP, addresses that are not IP literals, mixed
        families or no destination port (C{ValueError}), more unused permissions than
        C{maxPendingRedirects} (C{TooManyPendingRedirects}).
        """
        if not self.closed:
            flow = futureFlow(source, destination, transport)
            if isinstance(flow, str):
                return fail(ValueError(flow))
            source, destination = flow
            crowded = self._tooManyPending(1)
            if crowded is not None:
                return fail(crowded)
        deferred: Deferred[IFirewallAction] = Deferred()
        call = AllowCall(
            source,
            destination,
            flags,
            proxyExternalAddress,
            transport,
            protocolId,
            sessionFilter,
            context,
            tls,
            dataFilterFactory,
            deferred=deferred,
            session=self,
        )
        self.allowCalls.append(call)
        if self.closed:
            deferred.errback(SessionClosed(f"session {self.sessionId} is closed"))
        elif self.autoGrant:
            call.grant()
        return deferred
