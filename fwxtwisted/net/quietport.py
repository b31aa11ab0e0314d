"""listenQuietly: a TCP listener that logs nothing when it starts or stops.

A permission's listener usually lives for one data connection.  Twisted's Port logs
a line when it starts ("... starting on 21417") and another when it closes ("(TCP
Port 21417 Closed)"): for FTP two lines per transfer that say less than the
permission's own events, and half of what a session spent on logging.  Everything
else (accepting, the factory's doStart/doStop, closing) is Twisted's Port unchanged.
"""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet import tcp
from twisted.internet.error import CannotListenError
from twisted.internet.protocol import ServerFactory


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
