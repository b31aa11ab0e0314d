"""connectFrom: an outbound TCP connection bound to a chosen source IP; and the socket
details of a relay leg (its options, the words for a failed connect).

Twisted's client endpoints wrap the protocol, and the wrapper re-declares only the
last of the optional interfaces it copies (IHalfCloseableProtocol, IHandshakeListener),
which silently loses half-close on a leg that also listens for TLS handshakes.  The
reactor's connectTCP hands our protocol the transport directly, and saves a call per
read on the data path.
"""

from __future__ import annotations

import socket
import sys
from typing import Any, Protocol

from twisted.internet import error
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IAddress, IConnector
from twisted.internet.protocol import ClientFactory
from twisted.internet.protocol import Protocol as TwistedProtocol
from twisted.python.failure import Failure

from fwxtwisted.address import Address, isIPLiteral
from fwxtwisted.net.outbound import connectOut, failThenStop


class Connectable(Protocol):
    """A protocol that reports its own connection (RelayLeg does)."""

    onConnected: Any

    def makeConnection(self, transport: Any) -> None: ...


def bindFor(address: Address, bindHost: str | None) -> tuple[str, int] | None:
    """The source to bind toward C{address}: C{bindHost} when of the same family.

    A source of the other family cannot be bound; the OS then picks the source, as it
    would with no external address at all.
    """
    if bindHost is None or (":" in bindHost) != address.isIPv6:
        return None
    return (bindHost, 0)


class _Connecting(ClientFactory):
    noisy = False

    def __init__(self, protocol: Connectable, result: Deferred[Any]) -> None:
        self._protocol = protocol
        self._result = result

    def buildProtocol(self, addr: IAddress | None) -> TwistedProtocol:
        protocol = self._protocol
        protocol.onConnected = self._connected
        assert isinstance(protocol, TwistedProtocol)
        return protocol

    def _connected(self, protocol: Connectable) -> None:
        if not self._result.called:
            self._result.callback(protocol)

    def clientConnectionFailed(self, connector: IConnector, reason: Failure) -> None:
        if not self._result.called:
            self._result.errback(reason)


def connectFrom(
    reactor: Any,
    address: Address,
    bindHost: str | None,
    protocol: Connectable,
    timeout: float,
    tune: bool = False,
) -> Deferred[Any]:
    """Connect C{protocol} to C{address} from C{bindHost}.

    The Deferred fires with the protocol once it is connected (its connectionMade has
    run), fails with the connect error (C{TimeoutError}, C{ConnectionRefusedError} ...),
    and cancelling it stops the attempt (or closes the connection just made).

    An IP literal is connected by outbound.connectOut, in one step; a name through
    the reactor's connectTCP, which resolves it.

    @param tune: give the socket the options of L{keepUrgentInline} before it
        connects (an IP literal only: its transport's C{tuned} says so).
    """
    bind = bindFor(address, bindHost)
    if isIPLiteral(address.host):
        return connectOut(
            reactor,
            address.host,
            address.port,
            bind[0] if bind is not None else None,
            protocol,
            timeout,
            _primaryOptions if tune else None,
        )
    connector: IConnector | None = None

    def cancel(result: Deferred[Any]) -> None:
        # Failed first (in failThenStop): stopConnecting reports a UserError that must
        # not look like a connect failure.  Stopping closes the connection too if it
        # is up already (a cancel from code its connectionMade ran).
        failThenStop(result, reactor, connector.disconnect if connector is not None else None)

    result: Deferred[Any] = Deferred(cancel)
    connector = reactor.connectTCP(
        address.host,
        address.port,
        _Connecting(protocol, result),
        timeout=timeout,
        bindAddress=bind,
    )
    return result


def keepUrgentInline(transport: object) -> None:
    """Tune a primary leg (a plain TCP transport): urgent data in line, no Nagle delay.

    Without SO_OOBINLINE the kernel takes the urgent byte out of the stream and the
    relay loses it: a client's ABOR sent as urgent data (Telnet Synch; ftplib's abort())
    reaches the gateway without its final LF, and that session waits for the rest of
    the line.  Without TCP_NODELAY a short reply written right after another (FTP's 226
    after a transfer) can wait for the peer's delayed ACK, some 40 ms.
    """
    getHandle = getattr(transport, "getHandle", None)
    handle = getHandle() if getHandle is not None else None
    if isinstance(handle, socket.socket):
        try:
            _primaryOptions(handle)
        except OSError:
            pass


def _primaryOptions(handle: socket.socket) -> None:
    """SO_OOBINLINE and TCP_NODELAY (see L{keepUrgentInline} for why)."""
    handle.setsockopt(socket.SOL_SOCKET, socket.SO_OOBINLINE, 1)
    handle.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def tuneListener(port: object) -> bool:
    """Give a listening TCP socket the options of L{keepUrgentInline}, so that every
    socket it accepts has them from the start (Linux copies SO_OOBINLINE and
    TCP_NODELAY to accepted sockets) and needs no syscalls of its own.

    @return: True when accepted sockets inherit them; False elsewhere (not Linux, not
        a socket, the options refused): tune each accepted socket then.
    """
    handle = getattr(port, "socket", None)
    if not sys.platform.startswith("linux") or not isinstance(handle, socket.socket):
        return False
    try:
        _primaryOptions(handle)
    except OSError:
        return False
    return True


def describeConnectFailure(failure: Failure, target: Address, timeout: float) -> str:
    """One line saying why connecting to C{target} failed, fit for a log and a reply."""
    if failure.check(error.TimeoutError):
        return f"connecting to {target} timed out after {timeout:g} s"
    if failure.check(error.ConnectionRefusedError):
        return f"connection to {target} refused"
    if failure.check(error.DNSLookupError):
        return f"cannot resolve {target.host}"
    if failure.check(error.NoRouteError):
        return f"no route to {target}"
    return f"cannot connect to {target}: {failure.getErrorMessage()}"
