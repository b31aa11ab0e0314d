"""The calls a FakeSession records (redirects, joins, upstream connects), answerable by tests."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from fwxtwisted.address import Address
from fwxtwisted.interfaces import (
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
from fwxtwisted.testing._actions import FakeFirewallAction, FakeJoin


class RecordingSession(Protocol):
    """What a recorded call needs of the fake session that made it."""

    actions: list[IFirewallAction]
    clientAddress: Address
    internalAddress: Address
    externalAddress: str | None


@dataclass
class RedirectCall:
    """One call to L{FakeSession.redirectConnections}: its arguments and its Deferred.

    The test answers it with L{grant}, L{succeed} or L{fail}.
    """

    connectAddresses: Sequence[Address]
    internalAddress: Address | None
    proxyExternalAddress: str | None
    transport: Transport
    flags: RedirectFlags
    protocolId: uuid.UUID | None
    sessionFilter: ISessionFilter | None
    context: object
    expectedPeer: str | None
    portRange: tuple[int, int] | None
    tls: Mapping[Side, LegTLS] | None
    dataFilterFactory: Callable[[], Sequence[IDataFilter]] | None
    #: UDP: the sockets the permissions send from, and the peers known in advance.
    outboundPorts: IDatagramPorts | None
    peerAddresses: tuple[Address, ...] | None
    udpIdleTimeout: float | None
    #: What redirectConnections returned to the filter.
    deferred: Deferred[Redirection] = field(repr=False)
    session: RecordingSession = field(repr=False, compare=False)
    #: The Redirection the call succeeded with, once it did.
    redirection: Redirection | None = None

    @property
    def pending(self) -> bool:
        """True until the Deferred has fired."""
        return not self.deferred.called

    def succeed(self, redirection: Redirection) -> None:
        """Fire the Deferred with C{redirection}; the session then owns its actions and
        cancels them when it closes.

        @raise ValueError: not one action per connect address.
        """
        if len(redirection.actions) != len(self.connectAddresses):
            raise ValueError(
                f"{len(redirection.actions)} actions for "
                f"{len(self.connectAddresses)} connect addresses"
            )
        self.redirection = redirection
        self.session.actions.extend(redirection.actions)
        self.deferred.callback(redirection)

    def fail(self, reason: BaseException | Failure) -> None:
        """Fail the Deferred, e.g. with C{PortRangeExhausted("...")}."""
        self.deferred.errback(reason)

    def grant(self, internalPort: int | None = None) -> Redirection:
        """Succeed as the gateway would: one L{FakeFirewallAction} per connect address,
        listening on consecutive ports from C{internalPort}.

        The listening host is the one asked for, else the session's internal IP; the
        outbound IP and the expected peer default as L{ISession.redirectConnections}
        documents.

        @param internalPort: the first port; by default the port the filter asked for.
        @return: the Redirection the filter was given.
        @raise ValueError: no port given and the filter asked for none.
        """
        requested = self.internalAddress
        if internalPort is None:
            if requested is None or requested.port == 0:
                raise ValueError("the filter asked for no port: pass internalPort")
            internalPort = requested.port
        host = requested.host if requested is not None and requested.host else None
        base = Address(host or self.session.internalAddress.host, internalPort)
        actions = [
            FakeFirewallAction(
                internalAddress=base.withPort(internalPort + index),
                connectAddress=connectAddress,
                transport=self.transport,
                externalAddress=self.proxyExternalAddress or self.session.externalAddress,
                expectedPeer=self.expectedPeer or self.session.clientAddress.host,
                flags=self.flags,
                context=self.context,
            )
            for index, connectAddress in enumerate(self.connectAddresses)
        ]
        redirection = Redirection(internalAddress=base, actions=actions)
        self.succeed(redirection)
        return redirection


@dataclass
class UpstreamConnect:
    """One call to L{FakeSession.connectUpstream}."""

    #: Where the filter asked to connect (the default upstream filled in).
    address: Address
    deferred: Deferred[Address] = field(repr=False)


@dataclass
class JoinCall:
    """One call to L{FakeSession.joinConnections}; the test answers it with L{grant},
    L{succeed} or L{fail}."""

    client: LegSpec
    server: LegSpec
    flags: RedirectFlags
    sessionFilter: ISessionFilter | None
    context: object
    deferred: Deferred[IJoin] = field(repr=False)
    session: RecordingSession = field(repr=False, compare=False)
    #: TLS asked for on each side.
    tls: Mapping[Side, LegTLS] = field(default_factory=dict)
    #: The join the call succeeded with, once it did.
    join: IJoin | None = None

    @property
    def pending(self) -> bool:
        """True until the Deferred has fired."""
        return not self.deferred.called

    def succeed(self, join: IJoin) -> None:
        """Fire the Deferred with C{join}, which the session then cancels at close."""
        self.join = join
        self.session.actions.append(join)
        self.deferred.callback(join)

    def fail(self, reason: BaseException | Failure) -> None:
        """Fail the Deferred, e.g. with C{PortRangeExhausted("...")}."""
        self.deferred.errback(reason)

    def grant(self, clientPort: int | None = None, serverPort: int | None = None) -> FakeJoin:
        """Succeed with a L{FakeJoin} whose listening legs are bound on the given ports.

        @param clientPort: the client-side port if that leg listens; by default the port
            its L{Listen} asked for.
        @param serverPort: the same for the server side.
        @raise ValueError: a listening leg has no port, given or asked for.
        """
        bound: dict[Side, Address] = {}
        for side, spec, port in (
            (Side.CLIENT, self.client, clientPort),
            (Side.SERVER, self.server, serverPort),
        ):
            if not isinstance(spec, Listen):
                continue
            port = port or spec.port
            if not port:
                raise ValueError(f"the {side.value} leg asked for no port: pass one")
            bound[side] = Address(spec.host, port)
        join = FakeJoin(self.client, self.server, bound, self.flags, self.context)
        self.succeed(join)
        return join
