"""FakeDatagramPorts: the UDP sockets a FakeSession opens for a filter, played by the test."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from twisted.internet.defer import Deferred, succeed
from zope.interface import implementer

from fwxtwisted.address import Address
from fwxtwisted.errors import SessionClosed
from fwxtwisted.interfaces import ActionState, IDatagramPorts, SocketCounts

OnDatagram = Callable[[int, bytes, Address], None]


@dataclass(frozen=True)
class SentDatagram:
    """One datagram a filter sent through L{FakeDatagramPorts.send}."""

    index: int
    datagram: bytes
    to: Address


@implementer(IDatagramPorts)
class FakeDatagramPorts:
    """N "sockets" on consecutive ports: what the filter sends is recorded in L{sent},
    and the test delivers datagrams with L{receive}, which applies the real ports'
    peer check (the C{expect}ed peer, else any port of C{expectedIP})."""

    def __init__(self, address: Address, count: int, expectedIP: str) -> None:
        self.address = address
        self.count = count
        self.expectedIP = expectedIP
        self.state = ActionState.LISTENING
        self.onDatagram: OnDatagram | None = None
        #: Every datagram the filter sent, oldest first.
        self.sent: list[SentDatagram] = []
        #: Sockets adopted by a redirect (C{outboundPorts}): the filter no longer sees them.
        self.adopted: set[int] = set()
        self._expected: dict[int, Address] = {}
        self._counts = [SocketCounts() for _ in range(count)]

    @property
    def dropped(self) -> int:
        return sum(counts.dropped for counts in self._counts)

    def addressOf(self, index: int) -> Address:
        self._check(index)
        return Address(self.address.host, self.address.port + index)

    def expect(self, index: int, peer: Address | None) -> None:
        self._check(index)
        if peer is None:
            self._expected.pop(index, None)
        else:
            self._expected[index] = peer

    def send(self, index: int, datagram: bytes, to: Address) -> None:
        self._check(index)
        if self.state is ActionState.CANCELLED:
            return
        self.sent.append(SentDatagram(index, datagram, to))
        old = self._counts[index]
        self._counts[index] = SocketCounts(
            old.packetsIn,
            old.bytesIn,
            old.packetsOut + 1,
            old.bytesOut + len(datagram),
            old.dropped,
        )

    def countsOf(self, index: int) -> SocketCounts:
        self._check(index)
        return self._counts[index]

    def cancel(self) -> None:
        self.state = ActionState.CANCELLED

    def whenFinished(self) -> Deferred[ActionState]:
        return succeed(self.state)

    def receive(self, index: int, datagram: bytes, source: Address) -> bool:
        """A datagram arrives on socket C{index} from C{source}.

        @return: whether it was accepted (given to C{onDatagram}); a datagram from the
            wrong source, on an adopted or closed socket, or with no owner is dropped
            and counted, as by the real ports.
        """
        self._check(index)
        expected = self._expected.get(index)
        accepted = (
            self.state is ActionState.LISTENING
            and index not in self.adopted
            and self.onDatagram is not None
            and (source == expected if expected is not None else source.host == self.expectedIP)
        )
        old = self._counts[index]
        if not accepted:
            self._counts[index] = replace(old, dropped=old.dropped + 1)
            return False
        self._counts[index] = SocketCounts(
            old.packetsIn + 1,
            old.bytesIn + len(datagram),
            old.packetsOut,
            old.bytesOut,
            old.dropped,
        )
        assert self.onDatagram is not None
        self.onDatagram(index, datagram, source)
        return True

    def _check(self, index: int) -> None:
        if not 0 <= index < self.count:
            raise IndexError(f"socket {index} of {self.count}")


class OpensDatagramPorts:
    """The part of L{FakeSession} that opens datagram ports (L{ISession.openDatagramPorts})."""

    closed: bool
    sessionId: str
    externalAddress: str | None
    clientAddress: Address
    serverAddress: Address | None
    defaultUpstream: Address | None
    nextPort: int

    #: Every L{FakeDatagramPorts} opened, oldest first.
    datagramPorts: list[FakeDatagramPorts]

    def openDatagramPorts(
        self,
        count: int,
        host: str | None = None,
        *,
        evenBase: bool = False,
        expectedPeer: str | None = None,
        portRange: tuple[int, int] | None = None,
    ) -> IDatagramPorts:
        """Open C{count} fake sockets on ports counted up from C{nextPort} (the first even
        when C{evenBase}); refused as the real session refuses."""
        if self.closed:
            raise SessionClosed(f"session {self.sessionId} is closed")
        bindHost = host if host is not None else self.externalAddress
        if bindHost is None:
            raise ValueError("no external address is known yet")
        if expectedPeer is None:
            server = self.serverAddress or self.defaultUpstream
            if host is None or host == self.externalAddress:
                if server is None:
                    raise ValueError("the server's IP is not known before the upstream")
                expectedPeer = server.host
            else:
                expectedPeer = self.clientAddress.host
        first = self.nextPort + (self.nextPort % 2 if evenBase else 0)
        if portRange is not None and not portRange[0] <= first <= portRange[1] - count + 1:
            first = portRange[0] + (portRange[0] % 2 if evenBase else 0)
        self.nextPort = first + count
        ports = FakeDatagramPorts(Address(bindHost, first), count, expectedPeer)
        self.datagramPorts.append(ports)
        return ports
