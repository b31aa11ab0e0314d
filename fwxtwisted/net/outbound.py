"""connectOut: an outbound TCP connection to an IP literal, made in one step.

Twisted's connectTCP starts the connect on the reactor's next turn, watches the
socket for reading and writing, stops both once it is connected, then starts
reading again, and keeps a Connector alive beside the transport: an extra turn and
five epoll changes per connection, which for a relay of short connections is a
tenth of the work.  Here the connect starts at once, the socket is watched for
writing only, and once connected it becomes an L{OutboundConnection}: Twisted's
own TCP connection class, so reading, writing, half-close, TLS and the close
events are all Twisted's.

Names still go through connectTCP (see connect.connectFrom), which resolves them.
"""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Callable
from typing import Any

from twisted.internet import error, tcp
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import CancelledError, Deferred
from twisted.python.failure import Failure

#: Twisted's client-side TLS role (ClientMixin: startTLS acts as the TLS client by
#: default), as tcp.Client has it.
_TLSClient: type = getattr(tcp, "_TLSClientMixin", object)

_IN_PROGRESS = (errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EALREADY)


class OutboundConnection(_TLSClient, tcp.Connection):  # type: ignore[misc]
    """A connected outbound TCP socket, as the transport of its protocol.

    @ivar tuned: the socket got its options (connectOut's C{prepare}) before it
        connected.
    """

    def __init__(
        self,
        skt: socket.socket,
        protocol: Any,
        reactor: Any,
        peer: tuple[Any, ...],
        tuned: bool = False,
    ) -> None:
        tcp.Connection.__init__(self, skt, protocol, reactor)
        self.tuned = tuned
        self._peer = peer
        # The peer's tuple says the family: socket.family builds an enum each time.
        self._addressType = IPv6Address if len(peer) == 4 else IPv4Address
        self.logstr = f"{protocol.__class__.__name__},client"
        self.connected = 1

    def getHost(self) -> IPv4Address | IPv6Address:
        """The local address the connection leaves from."""
        return self._addressType("TCP", *self.socket.getsockname()[:2])

    def getPeer(self) -> IPv4Address | IPv6Address:
        """The address connected to."""
        return self._addressType("TCP", *self._peer[:2])

    def __repr__(self) -> str:
        return f"<OutboundConnection to {self._peer[:2]} at {id(self):x}>"


def _socketAddress(host: str, port: int) -> tuple[int, tuple[Any, ...]]:
    if ":" not in host:
        return socket.AF_INET, (host, port)
    # getaddrinfo keeps a scope (fe80::1%eth0) that a plain tuple would lose.
    info = socket.getaddrinfo(
        host, port, socket.AF_INET6, socket.SOCK_STREAM, 0, socket.AI_NUMERICHOST
    )
    return socket.AF_INET6, info[0][4]


class _Attempt:
    """One connect in flight: the socket, watched for writing until it is connected."""

    def __init__(self, reactor: Any, protocol: Any, result: Deferred[Any]) -> None:
        self._reactor = reactor
        self._protocol = protocol
        self._result = result
        #: The socket, until it is connected (then the transport's) or closed.
        self.socket: socket.socket | None = None
        #: Where it connects: (host, port).
        self.addr: tuple[str, int] = ("", 0)
        self._peer: tuple[Any, ...] = ()
        self._timer: Any = None
        self._watched = False
        self._prepared = False
        self.transport: OutboundConnection | None = None

    def start(
        self,
        host: str,
        port: int,
        bindHost: str | None,
        timeout: float,
        prepare: Callable[[socket.socket], None] | None,
    ) -> None:
        self.addr = (host, port)
        try:
            family, self._peer = _socketAddress(host, port)
            skt = socket.socket(family, socket.SOCK_STREAM)
        except OSError as e:
            self._failLater(error.ConnectBindError(e.errno, e.strerror))
            return
        self.socket = skt
        skt.setblocking(False)
        try:
            if prepare is not None:
                prepare(skt)
                self._prepared = True
            if bindHost is not None:
                skt.bind(_socketAddress(bindHost, 0)[1])
        except OSError as e:
            self._failLater(error.ConnectBindError(e.errno, e.strerror))
            return
        code = skt.connect_ex(self._peer)
        if code and code not in _IN_PROGRESS:
            self._failLater(error.getConnectError((code, os.strerror(code))))
            return
        self._timer = self._reactor.callLater(timeout, self._timedOut)
        self._watched = True
        self._reactor.addWriter(self)

    # The reactor's side (IWriteDescriptor).

    def fileno(self) -> int:
        # Asked of the socket each time: -1 once it is closed.
        return self.socket.fileno() if self.socket is not None else -1

    def logPrefix(self) -> str:
        return "OutboundConnect"

    def doRead(self) -> None:
        pass

    def doWrite(self) -> None:
        self._connectEnded()

    def connectionLost(self, reason: Failure) -> None:
        # The reactor saw the socket fail (a refused connect) and dropped it: the
        # socket's pending error names why.
        self._watched = False
        if self.socket is not None and self.transport is None:
            failed = self._pendingError()
            self._fail(failed or error.ConnectError(string=reason.getErrorMessage()))

    # The outcome.

    def _pendingError(self) -> Exception | None:
        """The connect's error, as Twisted names it, or None when it succeeded."""
        assert self.socket is not None
        code = self.socket.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        return error.getConnectError((code, os.strerror(code))) if code else None

    def _connectEnded(self) -> None:
        skt = self.socket
        if skt is None or self.transport is not None:
            return
        failed = self._pendingError()
        if failed is not None:
            self._fail(failed)
            return
        self._unwatch()
        self._cancelTimer()
        transport = OutboundConnection(
            skt, self._protocol, self._reactor, self._peer, self._prepared
        )
        self.transport = transport
        transport.startReading()
        self._protocol.makeConnection(transport)

    def _timedOut(self) -> None:
        self._timer = None
        self._fail(error.TimeoutError())

    def _failLater(self, reason: Exception) -> None:
        # Failures are reported on a later turn, as connectTCP reports them: the
        # caller has its Deferred in hand and its callbacks attached by then.
        self._reactor.callLater(0, self._fail, reason)

    def _fail(self, reason: Exception) -> None:
        self._unwatch()
        self._cancelTimer()
        self._closeSocket()
        if not self._result.called:
            self._result.errback(Failure(reason))

    def abandon(self) -> None:
        """The attempt was cancelled: stop it, or close the connection it made."""
        if self.transport is not None:
            self.transport.loseConnection()
            return
        self._unwatch()
        self._cancelTimer()
        self._closeSocket()

    def _unwatch(self) -> None:
        if self._watched:
            self._watched = False
            self._reactor.removeWriter(self)

    def _cancelTimer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _closeSocket(self) -> None:
        if self.socket is not None and self.transport is None:
            self.socket.close()


def connectOut(
    reactor: Any,
    host: str,
    port: int,
    bindHost: str | None,
    protocol: Any,
    timeout: float,
    prepare: Callable[[socket.socket], None] | None = None,
) -> Deferred[Any]:
    """Connect C{protocol} to the IP literal C{host}, from C{bindHost} when given.

    The Deferred fires with the protocol once its connectionMade has run (the
    protocol's C{onConnected} is set to fire it), fails with Twisted's connect
    errors (C{TimeoutError}, C{ConnectionRefusedError}, C{ConnectBindError} ...), and
    cancelling it stops the attempt, or closes the connection just made, on the next
    reactor turn.

    @param prepare: called with the socket before it binds and connects (a primary
        leg's options, see connect.keepUrgentInline).
    """
    attempt: _Attempt | None = None

    def cancel(result: Deferred[Any]) -> None:
        failThenStop(result, reactor, attempt.abandon if attempt is not None else None)

    result: Deferred[Any] = Deferred(cancel)
    attempt = _Attempt(reactor, protocol, result)

    def connected(made: Any) -> None:
        if not result.called:
            result.callback(made)

    protocol.onConnected = connected
    attempt.start(host, port, bindHost, timeout, prepare)
    return result


def failThenStop(result: Deferred[Any], reactor: Any, stop: Callable[[], object] | None) -> None:
    """A connect's canceller: fail C{result} with CancelledError now, and C{stop} the
    attempt (or close the connection it made) on the next reactor turn.

    Not at once: a cancel comes from another connection's event, and a socket closed
    then frees its descriptor for any socket opened later in the same poll round,
    which the reactor would hand this one's pending readiness ("doWrite called on a
    Port").
    """
    result.errback(Failure(CancelledError()))
    if stop is not None:
        reactor.callLater(0, stop)
