"""listenQuietly, listenUDPQuietly: TCP and UDP listeners that log nothing when they
start or stop.

A permission's listener usually lives for one data connection.  Twisted's Port logs
a line when it starts ("... starting on 21417") and another when it closes ("(TCP
Port 21417 Closed)"): for FTP two lines per transfer that say less than the
permission's own events, and half of what a session spent on logging.  Everything
else (accepting, the factory's doStart/doStop, closing) is Twisted's Port unchanged.
A UDP permission has two sockets per channel (its listener and a mapping's): with a
noisy protocol Twisted logs four lines for each, all of them here said by the
permission's events instead.
"""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet import base, tcp, udp
from twisted.internet.error import CannotListenError
from twisted.internet.protocol import DatagramProtocol, ServerFactory


class QuietPort(tcp.Port):
    """Twisted's listening TCP port, without its start and close log lines."""

    def startListening(self) -> None:
        """Bind, listen and start accepting, as Twisted's Port does, without the log."""
        # Set by the constructor (Twisted's types allow None for unpickling).
        assert self.port is not None and self.factory is not None
        tcp._reservedFD.reserve()
        skt: socket.socket | None = None
        try:
            skt = self.createInternetSocket()
            skt.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_RECEIVE_BUFFER)
            skt.bind(_bindAddress(self.addressFamily, self.interface, self.port))
            skt.listen(self.backlog)
        except OSError as e:
            if skt is not None:
                skt.close()
            raise CannotListenError(self.interface, self.port, e) from e
        self._realPortNumber = skt.getsockname()[1]
        self.factory.doStart()
        self.connected = True
        self.socket = skt
        self.fileno = skt.fileno  # type: ignore[method-assign]
        self.numberAccepts = 100
        self.startReading()

    def _logConnectionLostMsg(self) -> None:
        """Nothing: the permission says when its listener is done."""


def _bindAddress(family: int, host: str, port: int) -> tuple[Any, ...]:
    if family == socket.AF_INET6:
        # Numeric only, with a scope for a link-local address ("fe80::1%eth0").
        info = socket.getaddrinfo(host, port, family, socket.SOCK_STREAM, 0, socket.AI_NUMERICHOST)
        return info[0][4]
    return (host, port)


def listenQuietly(
    reactor: Any, port: int, factory: ServerFactory, interface: str, backlog: int = 50
) -> QuietPort:
    """Listen on C{interface}:C{port} like C{reactor.listenTCP}, without the log lines.

    @raise CannotListenError: the address is taken or cannot be bound.
    """
    listening = QuietPort(port, factory, backlog, interface, reactor)
    listening.startListening()
    return listening


#: Bytes of datagrams a relay socket may queue while the gateway is busy elsewhere
#: (the kernel caps it at net.core.rmem_max and charges only what is queued).  The
#: default (about 208 KiB, 150 RTP packets) is lost in one 10 ms scheduling gap at
#: 15,000 packets/s; 2 MiB rides out a hundred times more.
UDP_RECEIVE_BUFFER = 2 * 1024 * 1024


class QuietUDPPort(udp.Port):
    """Twisted's UDP port, without its "starting on" and "(UDP Port N Closed)" lines.

    Its protocol should be quiet too (C{noisy = False}: no "Starting protocol" and
    "Stopping protocol" lines); L{listenUDPQuietly} sees to it.
    """

    def _bindSocket(self) -> None:
        """Bind as Twisted's Port does, without the log line."""
        try:
            skt = self.createInternetSocket()
            skt.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_RECEIVE_BUFFER)
            skt.bind(_bindAddress(self.addressFamily, self.interface, self.port))
        except OSError as e:
            raise CannotListenError(self.interface, self.port, e) from e
        self._realPortNumber = skt.getsockname()[1]
        self.connected = 1
        self.socket = skt
        self.fileno = skt.fileno  # type: ignore[method-assign]

    def connectionLost(self, reason: Any = None) -> None:
        """Close as Twisted's Port does, without the log line."""
        self._realPortNumber = None
        self.maxThroughput = -1
        base.BasePort.connectionLost(self, reason)
        self.protocol.doStop()
        self.socket.close()
        del self.socket
        del self.fileno
        if hasattr(self, "d"):
            self.d.callback(None)
            del self.d


def listenUDPQuietly(
    reactor: Any, port: int, protocol: DatagramProtocol, interface: str
) -> QuietUDPPort:
    """Listen like C{reactor.listenUDP}, without a log line at start or close; the
    protocol is made quiet (C{noisy = False}) as well.

    @raise CannotListenError: the address is taken or cannot be bound.
    """
    protocol.noisy = False
    listening = QuietUDPPort(port, protocol, interface, reactor=reactor)
    listening.startListening()
    return listening
