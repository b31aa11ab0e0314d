"""Helpers for the core tests: bounded waits, loopback peers, a recording filter, cleanup."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest
import pytest_twisted
from twisted.internet import reactor, task
from twisted.internet.defer import Deferred, DeferredQueue, gatherResults, maybeDeferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IHalfCloseableProtocol, IListeningPort
from twisted.internet.protocol import DatagramProtocol, Factory, Protocol
from twisted.python.failure import Failure
from zope.interface import implementer

from fwxtwisted.address import Address
from fwxtwisted.app.config import ListenerConfig
from fwxtwisted.app.primary import BoundListener
from fwxtwisted.app.service import FirewallService
from fwxtwisted.interfaces import (
    FirewallEvent,
    FirewallNotification,
    IDataFilter,
    IFilter,
    ISessionFilter,
)
from fwxtwisted.permissions.gateway import Gateway
from fwxtwisted.permissions.session import Session
from fwxtwisted.settings import GatewaySettings

T = TypeVar("T")

#: The bound, in seconds, on any single wait of a test.
WAIT = 5.0

LOCAL = "127.0.0.1"

_DONE = Failure(ConnectionDone())


def within(d: Deferred[T], seconds: float = WAIT) -> Deferred[T]:
    """C{d}, failing with C{TimeoutError} (and cancelled) after C{seconds} of real time."""
    return d.addTimeout(seconds, reactor)


def turns(count: int = 2) -> Deferred[None]:
    """Let the reactor run C{count} iterations (enough for a queued close to happen)."""
    d: Deferred[None] = task.deferLater(reactor, 0, lambda: None)
    for _ in range(count - 1):
        d.addCallback(lambda _: task.deferLater(reactor, 0, lambda: None))
    return d


# Stream peers.


@implementer(IHalfCloseableProtocol)
class Peer(Protocol):
    """A loopback TCP peer recording what it hears.

    @ivar eof: fires with everything received once the other side stops sending.
    @ivar lost: fires with the exception that ended the connection.
    @ivar closeOnEOF: close our side too when the other side half-closes.
    """

    def __init__(self, closeOnEOF: bool = True) -> None:
        self.closeOnEOF = closeOnEOF
        self.received = bytearray()
        self.made: Deferred[Peer] = Deferred()
        self.eof: Deferred[bytes] = Deferred()
        self.lost: Deferred[BaseException] = Deferred()
        self._waiters: list[tuple[int, Deferred[bytes]]] = []

    def connectionMade(self) -> None:
        self.made.callback(self)

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        for waiter in list(self._waiters):
            if len(self.received) >= waiter[0]:
                self._waiters.remove(waiter)
                waiter[1].callback(bytes(self.received))

    def readConnectionLost(self) -> None:
        self._eof()
        if self.closeOnEOF and self.transport is not None:
            self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason: Failure = _DONE) -> None:
        self._eof()
        waiters, self._waiters = self._waiters, []
        for _, waiter in waiters:
            waiter.errback(ConnectionError(f"closed after {len(self.received)} bytes"))
        self.lost.callback(reason.value)

    def _eof(self) -> None:
        if not self.eof.called:
            self.eof.callback(bytes(self.received))

    def waitFor(self, size: int) -> Deferred[bytes]:
        """Fires with everything received once at least C{size} bytes arrived."""
        if len(self.received) >= size:
            return Deferred.fromCoroutine(_value(bytes(self.received)))
        waiter: Deferred[bytes] = Deferred()
        self._waiters.append((size, waiter))
        return waiter

    def send(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    def shutdownWrite(self) -> None:
        """Half-close: no more bytes from this side."""
        self.transport.loseWriteConnection()  # type: ignore[union-attr]

    @property
    def peerAddress(self) -> Address:
        """Where the other end of this connection is, as this side sees it."""
        assert self.transport is not None
        return Address.fromTwisted(self.transport.getPeer())


async def _value(value: T) -> T:
    return value


class PeerFactory(Factory):
    """Makes a L{Peer} (or subclass) per accepted connection; queues each once connected."""

    noisy = False

    def __init__(self, makePeer: Callable[[], Peer] = Peer) -> None:
        self._makePeer = makePeer
        self.accepted: DeferredQueue[Any] = DeferredQueue()
        self.peers: list[Any] = []

    def buildProtocol(self, addr: Any) -> Protocol:
        peer: Any = self._makePeer()
        self.peers.append(peer)
        peer.made.addCallback(self._announce)
        return peer

    def _announce(self, peer: Any) -> Any:
        self.accepted.put(peer)
        return peer


# Datagram peers.


class UDPPeer(DatagramProtocol):
    """A UDP socket queueing (datagram, source) pairs; optionally answers each datagram."""

    def __init__(self, reply: Callable[[bytes], bytes] | None = None) -> None:
        self.reply = reply
        self.received: DeferredQueue[tuple[bytes, Address]] = DeferredQueue()
        self.count = 0

    def datagramReceived(self, datagram: bytes, addr: tuple[str, int]) -> None:
        self.count += 1
        source = Address(addr[0], addr[1])
        self.received.put((datagram, source))
        if self.reply is not None and self.transport is not None:
            self.transport.write(self.reply(datagram), addr)

    def send(self, datagram: bytes, to: Address) -> None:
        assert self.transport is not None
        self.transport.write(datagram, (to.host, to.port))


# The recording filter.


@implementer(ISessionFilter)
class RecordingSessionFilter:
    """Records every notification; connects upstream at start when its filter says so."""

    def __init__(self, session: Session, owner: RecordingFilter) -> None:
        self.session = session
        self.owner = owner
        self.notifications: list[FirewallNotification] = []
        self.started: Deferred[RecordingSessionFilter] = Deferred()
        self.detached: Deferred[None] = Deferred()
        self.upstream: Deferred[Address] | None = None
        self._waiters: list[tuple[FirewallEvent, int, Deferred[FirewallNotification]]] = []

    def sessionStarted(self) -> None:
        for priority, dataFilter in self.owner.dataFilters(self):
            self.session.attachDataFilter(dataFilter, priority)
        if self.owner.connectUpstream:
            self.upstream = self.session.connectUpstream()
            self.upstream.addErrback(self._upstreamFailed)
        self.started.callback(self)

    def _upstreamFailed(self, failure: Failure) -> Failure:
        self.session.close(failure.getErrorMessage())
        return failure

    def firewallEvent(self, notification: FirewallNotification) -> None:
        self.notifications.append(notification)
        for waiter in list(self._waiters):
            event, count, d = waiter
            seen = self.events(event)
            if len(seen) >= count:
                self._waiters.remove(waiter)
                d.callback(seen[count - 1])

    def detach(self) -> None:
        self.detached.callback(None)

    def events(self, event: FirewallEvent) -> list[FirewallNotification]:
        """The notifications of one kind so far, in order."""
        return [n for n in self.notifications if n.event is event]

    def waitFor(self, event: FirewallEvent, count: int = 1) -> Deferred[FirewallNotification]:
        """Fires with the C{count}-th notification of C{event}, now or when it comes."""
        seen = self.events(event)
        if len(seen) >= count:
            return Deferred.fromCoroutine(_value(seen[count - 1]))
        d: Deferred[FirewallNotification] = Deferred()
        self._waiters.append((event, count, d))
        return d


@implementer(IFilter)
class RecordingFilter:
    """A test filter: each session gets a L{RecordingSessionFilter}.

    @param connectUpstream: connect the primary to the listener's upstream at start.
    @param dataFilters: called with each session filter, returns (priority, IDataFilter)
        pairs attached before the upstream is connected.
    """

    name = "recording"
    description = "Records what happens to its sessions."
    protocols = ()

    def __init__(
        self,
        connectUpstream: bool = False,
        dataFilters: Callable[[RecordingSessionFilter], Sequence[tuple[int, IDataFilter]]]
        | None = None,
    ) -> None:
        self.connectUpstream = connectUpstream
        self._dataFilters = dataFilters
        self.attached: DeferredQueue[RecordingSessionFilter] = DeferredQueue()

    def dataFilters(self, sessionFilter: RecordingSessionFilter) -> Sequence[tuple[int, Any]]:
        if self._dataFilters is None:
            return ()
        return self._dataFilters(sessionFilter)

    def parseOptions(self, options: Any, upstream: Any) -> object:
        return None

    def commandLineOptions(self) -> None:
        return None

    def attachToSession(self, session: Session) -> RecordingSessionFilter:
        sessionFilter = RecordingSessionFilter(session, self)
        self.attached.put(sessionFilter)
        return sessionFilter


@dataclass
class RunningGateway:
    """A started FirewallService with one listener on 127.0.0.1."""

    service: FirewallService
    gateway: Gateway
    address: Address


# Resources of one test, all released at its end.


class Network:
    """Every listener, connection, service and socket a test opens, closed at its end.

    At the end it also checks that no listening port (the gateway's own included) is
    left reading on the reactor.
    """

    def __init__(self) -> None:
        self._baseline = set(reactor.getReaders())
        self._ports: list[IListeningPort] = []
        self._peers: list[Protocol] = []
        self._services: list[FirewallService] = []
        self._sockets: list[socket.socket] = []

    # Listening.

    def listenTCP(self, factory: Factory, host: str = LOCAL, port: int = 0) -> IListeningPort:
        listening = reactor.listenTCP(port, factory, interface=host)
        self._ports.append(listening)
        return listening

    def listenUDP(self, protocol: DatagramProtocol, host: str = LOCAL, port: int = 0) -> Address:
        listening = reactor.listenUDP(port, protocol, interface=host)
        self._ports.append(listening)
        return Address(host, listening.getHost().port)

    def server(
        self, host: str = LOCAL, makePeer: Callable[[], Peer] = Peer
    ) -> tuple[PeerFactory, Address]:
        """A TCP server making a L{Peer} (or C{makePeer()}) per connection."""
        factory = PeerFactory(makePeer)
        listening = self.listenTCP(factory, host)
        return factory, Address(host, listening.getHost().port)

    def stop(self, listening: IListeningPort) -> Deferred[Any]:
        """Close one of this test's listeners now; fires once the socket is closed."""
        self._ports.remove(listening)
        return maybeDeferred(listening.stopListening)

    # Connecting.

    def connect(
        self, address: Address, bindHost: str | None = None, peer: Protocol | None = None
    ) -> Deferred[Any]:
        """Connect a L{Peer} (or C{peer}) to C{address}, from C{bindHost} if given."""
        protocol = peer if peer is not None else Peer()
        self._peers.append(protocol)
        bind = (bindHost, 0) if bindHost is not None else None
        endpoint = TCP4ClientEndpoint(reactor, address.host, address.port, WAIT, bind)
        return within(connectProtocol(endpoint, protocol))

    def udp(self, host: str = LOCAL, reply: Callable[[bytes], bytes] | None = None) -> UDPPeer:
        """A UDP socket bound on C{host}, any port."""
        peer = UDPPeer(reply)
        self.listenUDP(peer, host)
        return peer

    # Raw sockets (to occupy ports).

    def occupy(self, host: str, port: int) -> socket.socket:
        """A listening socket holding C{host}:C{port}; raises OSError when taken."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.bind((host, port))
            sock.listen(1)
        except OSError:
            sock.close()
            raise
        self._sockets.append(sock)
        return sock

    def occupyRun(self, count: int, host: str = LOCAL, low: int = 30000) -> int:
        """Occupy C{count} consecutive free ports at or above C{low}; returns the first."""
        for start in range(low, low + 2000, count):
            held: list[socket.socket] = []
            try:
                for port in range(start, start + count):
                    held.append(self.occupy(host, port))
            except OSError:
                for sock in held:
                    self._sockets.remove(sock)
                    sock.close()
                continue
            return start
        raise RuntimeError(f"no {count} consecutive free ports from {low}")

    def release(self, *ports: int) -> None:
        """Close the sockets L{occupy} holds on C{ports}."""
        for sock in list(self._sockets):
            if sock.getsockname()[1] in ports:
                self._sockets.remove(sock)
                sock.close()

    def unresponsive(self, host: str = LOCAL) -> Address:
        """A listener whose accept queue is full: connects to it hang (SYNs are dropped)
        until the connecting side gives up."""
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sockets.append(listener)
        listener.bind((host, 0))
        listener.listen(0)
        address = Address(host, listener.getsockname()[1])
        filler = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sockets.append(filler)
        filler.settimeout(WAIT)
        filler.connect((address.host, address.port))
        return address

    def freePort(self, host: str = LOCAL) -> int:
        """A port nothing listens on right now (it may be taken later: loopback only)."""
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port: int = sock.getsockname()[1]
        return port

    # The gateway.

    def startGateway(
        self,
        filterPlugin: Any,
        settings: GatewaySettings | None = None,
        clock: Any = None,
        upstream: Address | None = None,
        options: object = None,
        maxSessions: int | None = None,
    ) -> RunningGateway:
        """A FirewallService with one listener for C{filterPlugin} on 127.0.0.1."""
        gateway = Gateway(reactor, settings or GatewaySettings(), clock=clock)
        listen = f"tcp:0:interface={LOCAL}"
        config = ListenerConfig("test", filterPlugin.name, listen, upstream, maxSessions)
        service = FirewallService(gateway, [BoundListener(config, filterPlugin, options)])
        service.startService()
        self._services.append(service)
        port = service.ports[0].getHost().port
        return RunningGateway(service, gateway, Address(LOCAL, port))

    async def openSession(
        self, running: RunningGateway, filterPlugin: RecordingFilter, bindHost: str | None = None
    ) -> tuple[Peer, RecordingSessionFilter]:
        """Connect a client to the gateway; returns it and its started session filter."""
        client: Peer = await self.connect(running.address, bindHost)
        sessionFilter = await within(filterPlugin.attached.get())
        await within(sessionFilter.started)
        return client, sessionFilter

    # The end.

    async def close(self) -> None:
        waits: list[Deferred[Any]] = [
            maybeDeferred(service.stopService) for service in self._services
        ]
        for peer in self._peers:
            if peer.transport is not None and peer.connected:
                peer.transport.abortConnection()  # type: ignore[attr-defined]
        waits += [maybeDeferred(port.stopListening) for port in self._ports]
        for sock in self._sockets:
            sock.close()
        await within(gatherResults(waits, consumeErrors=True))
        await turns(3)
        leaked = [
            reader
            for reader in set(reactor.getReaders()) - self._baseline
            if IListeningPort.providedBy(reader)
        ]
        for reader in leaked:
            reader.stopListening()
        assert not leaked, f"listeners left open at the end of the test: {leaked}"


async def recordingSession(
    net: Network, settings: GatewaySettings | None = None
) -> RecordingSessionFilter:
    """A gateway whose filter records everything, one client session through it, and
    that session's upstream connected; returns its session filter."""
    recording = RecordingFilter(connectUpstream=True)
    _, upstream = net.server()
    running = net.startGateway(recording, settings, upstream=upstream)
    _, sessionFilter = await net.openSession(running, recording)
    assert sessionFilter.upstream is not None
    await within(sessionFilter.upstream)
    return sessionFilter


@pytest.fixture
def net() -> Iterator[Network]:
    """The test's L{Network}; everything it opened is closed when the test ends."""
    network = Network()
    yield network
    pytest_twisted.blockon(Deferred.fromCoroutine(network.close()))
