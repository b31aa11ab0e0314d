"""DatagramPorts: N consecutive UDP sockets a filter (or a UDP redirect) sends and receives on."""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import DatagramProtocol
from zope.interface import implementer

from fwxtwisted.address import Address, isIPLiteral, normalizeHost
from fwxtwisted.errors import PortRangeExhausted
from fwxtwisted.interfaces import ActionState, IDatagramPorts, SocketCounts
from fwxtwisted.logs import Logger
from fwxtwisted.net.portclosing import PortCloser
from fwxtwisted.net.quietport import listenUDPQuietly
from fwxtwisted.permissions.gateway import Gateway

log = Logger()

#: What an owner is called with: (index of the socket, datagram, source).
OnDatagram = Callable[[int, bytes, Address], None]


def sendDatagram(port: IListeningPort, datagram: bytes, to: tuple[str, int]) -> None:
    """C{port.write(datagram, to)}, without its checks of C{to} on every datagram when
    C{to} is an IP literal (the checks cost more than the send's Python part): the
    socket's C{sendto} directly; on any error, C{port.write} again, which checks the
    address and handles the error as Twisted does (nothing was sent the first time)."""
    sock = getattr(port, "socket", None)
    if sock is not None and isIPLiteral(to[0]):
        try:
            sock.sendto(datagram, to)
            return
        except OSError:
            pass
    port.write(datagram, to)  # type: ignore[attr-defined]


def openDatagramPorts(
    gateway: Gateway,
    host: str,
    count: int,
    expectedIP: str,
    even: bool,
    portRange: tuple[int, int] | None,
    label: str,
) -> DatagramPorts:
    """Bind C{count} sockets on consecutive ports of C{host} from the port allocator.

    @raise PortRangeExhausted: no free run is left (with an even base if C{even}).
    """
    ports = DatagramPorts(gateway.reactor, normalizeHost(host), count, expectedIP, label)
    try:
        gateway.ports.bindRun(ports.host, count, ports.bind, portRange, even)
    except PortRangeExhausted as e:
        log.warn("{label}: datagram ports refused: {error}", label=label, error=str(e))
        raise
    log.debug(
        "{label}: datagram ports {address} x{count} open for {peer}",
        label=label,
        address=str(ports.address),
        count=count,
        peer=ports.expectedIP,
    )
    return ports


class _Socket(DatagramProtocol):
    """One of the sockets; hands what it reads to its L{DatagramPorts}."""

    noisy = False

    def __init__(self, owner: DatagramPorts, index: int) -> None:
        self._owner = owner
        self._index = index

    def datagramReceived(self, datagram: bytes, addr: tuple[str, int]) -> None:
        self._owner._received(self._index, datagram, addr)


class _Slot:
    """One socket's state: its port, the accepted source, a taken-over owner, counters."""

    __slots__ = (
        "port",
        "expected",
        "expectedKey",
        "owner",
        "onLost",
        "packetsIn",
        "bytesIn",
        "packetsOut",
        "bytesOut",
        "dropped",
    )

    def __init__(self) -> None:
        self.port: IListeningPort | None = None
        self.expected: Address | None = None
        #: C{expected} as the (host, port) tuple a read gives: a datagram from exactly
        #: that is accepted without building an Address.
        self.expectedKey: tuple[str, int] | None = None
        #: A UDP redirect that adopted this socket: it gets the datagrams, and is told
        #: (C{onLost}) when the ports are cancelled under it.
        self.owner: OnDatagram | None = None
        self.onLost: Callable[[], None] | None = None
        self.packetsIn = self.bytesIn = self.packetsOut = self.bytesOut = self.dropped = 0

    def counts(self) -> SocketCounts:
        return SocketCounts(
            self.packetsIn, self.bytesIn, self.packetsOut, self.bytesOut, self.dropped
        )


@implementer(IDatagramPorts)
class DatagramPorts:
    """C{count} UDP sockets on consecutive ports of one IP (see L{IDatagramPorts}).

    Made unbound; L{bind} (through the port allocator) binds each socket.  A datagram
    is accepted on socket i only from its expected peer (L{expect}; before that, from
    C{expectedIP}) and only once someone owns it (an adopting redirect, else
    L{onDatagram}); anything else is dropped and counted.
    """

    def __init__(
        self, reactor: object, host: str, count: int, expectedIP: str, label: str = ""
    ) -> None:
        self._reactor = reactor
        self.host = host
        self.count = count
        self.expectedIP = normalizeHost(expectedIP)
        self.label = label
        self.onDatagram: OnDatagram | None = None
        self.state = ActionState.LISTENING
        self._slots = [_Slot() for _ in range(count)]
        self._closer = PortCloser(self._checkDone)
        self._waiters: list[Deferred[ActionState]] = []
        self._done = False
        self._base = 0

    def __repr__(self) -> str:
        return f"<DatagramPorts {self.label} {self.address} x{self.count}>"

    # Set-up, by the session.

    def bind(self, index: int, port: int) -> IListeningPort:
        """Bind socket C{index} on C{port}; raises C{CannotListenError} when taken."""
        listening: IListeningPort = listenUDPQuietly(
            self._reactor, port, _Socket(self, index), self.host
        )
        self._slots[index].port = listening
        if index == 0:
            self._base = listening.getHost().port  # type: ignore[attr-defined]
        return listening

    # IDatagramPorts

    @property
    def address(self) -> Address:
        """The first socket's address (the others follow it, port by port)."""
        return Address(self.host, self._base)

    @property
    def dropped(self) -> int:
        """Datagrams dropped on every socket: a foreign source, or nobody to take them."""
        return sum(slot.dropped for slot in self._slots)

    def addressOf(self, index: int) -> Address:
        """The address of socket C{index}."""
        return Address(self.host, self._base + index)

    def countsOf(self, index: int) -> SocketCounts:
        """What socket C{index} received, sent and dropped so far (kept after closing)."""
        return self._slots[index].counts()

    def expect(self, index: int, peer: Address | None) -> None:
        """Accept datagrams on socket C{index} from C{peer} (IP and port) only; None goes
        back to accepting any port of C{expectedIP}."""
        slot = self._slots[index]
        slot.expected = Address(normalizeHost(peer.host), peer.port) if peer is not None else None
        slot.expectedKey = (slot.expected.host, slot.expected.port) if slot.expected else None

    def send(self, index: int, datagram: bytes, to: Address) -> None:
        """Send C{datagram} from socket C{index} to C{to}; nothing once it is closed."""
        slot = self._slots[index]
        if slot.port is None:
            return
        slot.packetsOut += 1
        slot.bytesOut += len(datagram)
        sendDatagram(slot.port, datagram, (to.host, to.port))

    def cancel(self) -> None:
        """Close every socket (an adopting redirect is cancelled with it). Idempotent."""
        if self.state is ActionState.LISTENING:
            self.state = ActionState.CANCELLED
        for index, slot in enumerate(self._slots):
            if slot.onLost is not None:
                onLost, slot.onLost = slot.onLost, None
                onLost()  # the redirect cancels itself, releasing the socket
            if slot.owner is None:
                # An adopting redirect still busy (its flow leaving the kernel) closes
                # its socket itself with release(): the port must not be free before.
                self._close(index)
        self.onDatagram = None
        self._checkDone()

    def whenFinished(self) -> Deferred[ActionState]:
        """Fires with the final state once every socket is closed (its port is free)."""
        if self._done:
            return succeed(self.state)
        waiter: Deferred[ActionState] = Deferred()
        self._waiters.append(waiter)
        return waiter

    # For a UDP redirect adopting one socket.

    def adopt(
        self, index: int, owner: OnDatagram, peer: Address, onLost: Callable[[], None]
    ) -> None:
        """Give socket C{index} to a redirect: it gets every datagram from C{peer} (its
        connect address) and C{onLost()} if these ports are cancelled first.

        @raise ValueError: the ports are closed, or that socket is adopted already.
        """
        slot = self._slots[index]
        if self.state is not ActionState.LISTENING or slot.port is None:
            raise ValueError(f"{self!r} is closed")
        if slot.owner is not None:
            raise ValueError(f"socket {index} of {self!r} is adopted already")
        slot.owner = owner
        slot.onLost = onLost
        self.expect(index, peer)

    def release(self, index: int) -> Deferred[None]:
        """The adopting redirect is done with socket C{index}: close it.

        @return: a Deferred firing once the socket is closed (its port free again): the
            redirect is finished only then.
        """
        slot = self._slots[index]
        slot.owner = slot.onLost = None
        closing: Deferred[None] = succeed(None)
        if slot.port is not None:
            port, slot.port = slot.port, None
            closing = self._closer.close(port)
        if self.state is ActionState.LISTENING and all(s.port is None for s in self._slots):
            self.state = ActionState.USED
        return closing

    def adopted(self, index: int) -> bool:
        """True while a redirect owns socket C{index}."""
        return self._slots[index].owner is not None

    # Internals.

    def _received(self, index: int, datagram: bytes, addr: tuple[str, int]) -> None:
        slot = self._slots[index]
        owner = slot.owner if slot.owner is not None else self.onDatagram
        expected = slot.expected
        if addr == slot.expectedKey and owner is not None and expected is not None:
            # The expected peer, as the read gave it: the common case, per datagram.
            slot.packetsIn += 1
            slot.bytesIn += len(datagram)
            owner(index, datagram, expected)
            return
        source = Address(normalizeHost(addr[0]), addr[1])
        if (
            owner is None
            or (expected is not None and source != expected)
            or (expected is None and source.host != self.expectedIP)
        ):
            slot.dropped += 1
            log.debug(
                "{label}: dropped datagram from {source} to {port} ({dropped} dropped there)",
                label=self.label,
                source=str(source),
                port=str(self.addressOf(index)),
                dropped=slot.dropped,
            )
            return
        slot.packetsIn += 1
        slot.bytesIn += len(datagram)
        owner(index, datagram, source)

    def _close(self, index: int) -> None:
        slot = self._slots[index]
        if slot.port is not None:
            port, slot.port = slot.port, None
            self._closer.close(port)

    def _checkDone(self) -> None:
        if self._done or self._closer.busy or any(s.port is not None for s in self._slots):
            return
        self._done = True
        log.debug(
            "{label}: datagram ports {ports} closed: {counts}",
            label=self.label,
            ports=f"{self.host} x{self.count}",
            counts="; ".join(str(slot.counts()) for slot in self._slots),
        )
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.callback(self.state)
