"""GrantsPermissions: the redirects and joins a FakeSession records and grants."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence

from twisted.internet.defer import Deferred, fail

from fwxtwisted.address import Address
from fwxtwisted.callchecks import datagramOptionsProblem
from fwxtwisted.errors import SessionClosed, TooManyPendingRedirects
from fwxtwisted.interfaces import (
    ActionState,
    IDataFilter,
    IDatagramPorts,
    IFirewallAction,
    IJoin,
    ISessionFilter,
    LegSpec,
    LegTLS,
    Listen,
    RedirectFlags,
    Redirection,
    Side,
    Transport,
)
from fwxtwisted.testing._calls import JoinCall, RedirectCall
from fwxtwisted.testing._future import AllowCall


class GrantsPermissions:
    """The part of L{FakeSession} that records redirects and joins, refuses them as
    the real session does, and grants them at once with C{autoGrant}."""

    closed: bool
    sessionId: str
    clientAddress: Address
    internalAddress: Address
    externalAddress: str | None
    autoGrant: bool
    nextPort: int
    maxPendingRedirects: int
    actions: list[IFirewallAction]
    redirectCalls: list[RedirectCall]
    joinCalls: list[JoinCall]
    allowCalls: list[AllowCall]

    def redirectConnections(
        self,
        connectAddresses: Sequence[Address],
        internalAddress: Address | None = None,
        proxyExternalAddress: str | None = None,
        transport: Transport = Transport.TCP,
        flags: RedirectFlags = RedirectFlags.TIMEOUT,
        protocolId: uuid.UUID | None = None,
        sessionFilter: ISessionFilter | None = None,
        context: object = None,
        expectedPeer: str | None = None,
        portRange: tuple[int, int] | None = None,
        tls: Mapping[Side, LegTLS] | None = None,
        dataFilterFactory: Callable[[], Sequence[IDataFilter]] | None = None,
        *,
        outboundPorts: IDatagramPorts | None = None,
        peerAddresses: Sequence[Address] | None = None,
        udpIdleTimeout: float | None = None,
    ) -> Deferred[Redirection]:
        """Record a L{RedirectCall}; the test answers it (at once with L{autoGrant}).

        After close the call is still recorded but its Deferred has already failed
        with C{SessionClosed}.  Refused as the real session refuses, with a failed
        Deferred and no call recorded: no connect address or UDP with TLS or a data
        filter (C{ValueError}), more unused permissions than L{maxPendingRedirects}
        (C{TooManyPendingRedirects}).
        """
        deferred: Deferred[Redirection] = Deferred()
        if not self.closed:
            refused = self._refusal(
                connectAddresses,
                transport,
                flags,
                tls,
                dataFilterFactory,
                outboundPorts,
                peerAddresses,
            )
            if refused is not None:
                return fail(refused)
        call = RedirectCall(
            connectAddresses=tuple(connectAddresses),
            internalAddress=internalAddress,
            proxyExternalAddress=proxyExternalAddress,
            transport=transport,
            flags=flags,
            protocolId=protocolId,
            sessionFilter=sessionFilter,
            context=context,
            expectedPeer=expectedPeer,
            portRange=portRange,
            tls=tls,
            dataFilterFactory=dataFilterFactory,
            outboundPorts=outboundPorts,
            peerAddresses=tuple(peerAddresses) if peerAddresses is not None else None,
            udpIdleTimeout=udpIdleTimeout,
            deferred=deferred,
            session=self,
        )
        self.redirectCalls.append(call)
        if self.closed:
            deferred.errback(SessionClosed(f"session {self.sessionId} is closed"))
        elif self.autoGrant:
            asked = internalAddress.port if internalAddress is not None else 0
            call.grant(asked or self._takePorts(len(connectAddresses)))
        return deferred

    def joinConnections(
        self,
        client: LegSpec,
        server: LegSpec,
        flags: RedirectFlags = RedirectFlags.TIMEOUT,
        sessionFilter: ISessionFilter | None = None,
        context: object = None,
        tls: Mapping[Side, LegTLS] | None = None,
    ) -> Deferred[IJoin]:
        """Record a L{JoinCall}; the test answers it (at once with L{autoGrant}).  After
        close the call is still recorded but its Deferred has already failed with
        C{SessionClosed}; beyond L{maxPendingRedirects} it fails with
        C{TooManyPendingRedirects} and is not recorded."""
        if not self.closed:
            crowded = self._tooManyPending(1)
            if crowded is not None:
                return fail(crowded)
        deferred: Deferred[IJoin] = Deferred()
        call = JoinCall(
            client, server, flags, sessionFilter, context, deferred, self, dict(tls or {})
        )
        self.joinCalls.append(call)
        if self.closed:
            deferred.errback(SessionClosed(f"session {self.sessionId} is closed"))
        elif self.autoGrant:
            ports = [
                (spec.port or self._takePorts(1)) if isinstance(spec, Listen) else None
                for spec in (client, server)
            ]
            call.grant(ports[0], ports[1])
        return deferred

    def _refusal(
        self,
        connectAddresses: Sequence[Address],
        transport: Transport,
        flags: RedirectFlags,
        tls: Mapping[Side, LegTLS] | None,
        dataFilterFactory: object,
        outboundPorts: IDatagramPorts | None = None,
        peerAddresses: Sequence[Address] | None = None,
    ) -> Exception | None:
        if not connectAddresses:
            return ValueError("redirectConnections needs at least one connect address")
        if transport is Transport.UDP and (tls or dataFilterFactory):
            return ValueError("TLS and data filters apply to TCP redirections only")
        outboundCount = outboundPorts.count if outboundPorts is not None else None
        problem = datagramOptionsProblem(
            len(connectAddresses), transport, flags, outboundCount, peerAddresses
        )
        if problem is not None:
            return ValueError(problem)
        return self._tooManyPending(len(connectAddresses))

    def _tooManyPending(self, more: int) -> TooManyPendingRedirects | None:
        pending = sum(1 for a in self.actions if a.state is ActionState.LISTENING)
        pending += sum(len(c.connectAddresses) for c in self.redirectCalls if c.pending)
        pending += sum(1 for j in self.joinCalls if j.pending)
        pending += sum(1 for a in self.allowCalls if a.pending)
        if pending + more <= self.maxPendingRedirects:
            return None
        return TooManyPendingRedirects(
            f"{pending} unused permissions already (at most {self.maxPendingRedirects} per session)"
        )

    def _takePorts(self, count: int) -> int:
        first = self.nextPort
        self.nextPort += count
        return first

    def _grantingFilter(self, action: IFirewallAction | None) -> ISessionFilter | None:
        if action is None:
            return None
        for call in self.redirectCalls:
            granted = call.redirection.actions if call.redirection is not None else ()
            if any(candidate is action for candidate in granted):
                return call.sessionFilter
        for join in self.joinCalls:
            if join.join is action:
                return join.sessionFilter
        for allowed in self.allowCalls:
            if allowed.action is action:
                return allowed.sessionFilter
        return None

    def _failPending(self, error: Exception) -> None:
        """Fail every call the test has not answered yet (the session closed)."""
        calls: list[RedirectCall | JoinCall | AllowCall] = [
            *self.redirectCalls,
            *self.joinCalls,
            *self.allowCalls,
        ]
        for call in calls:
            if call.pending:
                call.deferred.errback(error)
