"""ReusePortGroup: C{worker_sockets = "reuseport"}, one listening socket per process.

With C{"shared"} (workers.py) every process accepts from the same socket, and all of
them are woken for each new connection.  Here each listener is a C{SO_REUSEPORT}
group: the gateway's process listens on one socket of it and each worker on its own,
and the kernel hashes each new connection to one socket (so to one process's accept
queue).  The group keeps every worker's socket open in the gateway's process too, for
two reasons:

  - a worker that dies does not close its socket, so the connections the kernel
    queued there are not reset: the gateway's process accepts from that socket
    (L{cover}) until the worker is started again with the same socket (L{uncover});
  - a reload's new worker takes over the socket of the one it replaces, so nothing
    queued is lost while the old one retires.

A worker that is alive but stuck still gets its share of new connections, which wait
in its queue until it runs again or dies (a shared socket would give them to the
others): see docs/performance.md.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, replace
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import ServerFactory

from fwxtwisted.app.primary import BoundListener
from fwxtwisted.app.service import withBacklog
from fwxtwisted.logs import Logger
from fwxtwisted.net.connect import tuneListener

log = Logger()


@dataclass(frozen=True)
class _Address:
    """Where a listener's sockets bind, and their backlog."""

    family: socket.AddressFamily
    host: str
    port: int
    backlog: int


class _Socket:
    """What tuneListener reads: a C{socket} attribute."""

    def __init__(self, sock: socket.socket) -> None:
        self.socket = sock


def _address(reactor: Any, description: str) -> _Address:
    """The address of a C{tcp:} or C{tcp6:} server endpoint description."""
    endpoint = serverFromString(reactor, withBacklog(description))
    family = socket.AF_INET6 if description.startswith("tcp6:") else socket.AF_INET
    interface = getattr(endpoint, "_interface", "") or ("::" if family == socket.AF_INET6 else "")
    return _Address(family, interface, int(endpoint._port), int(endpoint._backlog))  # type: ignore[attr-defined]


def _bind(address: _Address) -> socket.socket:
    """A non-blocking listening socket in C{address}'s SO_REUSEPORT group.

    @raise OSError: it cannot bind or listen.
    """
    sock = socket.socket(address.family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((address.host, address.port))
        sock.listen(address.backlog)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    tuneListener(_Socket(sock))
    return sock


class ReusePortGroup:
    """Opens the gateway's listeners with SO_REUSEPORT (L{listen}, FirewallService's
    listen function) and every worker's own socket beside each (L{socketsFor})."""

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor
        #: The address of each listening port L{listen} opened.
        self._addresses: dict[IListeningPort, _Address] = {}
        #: Each worker's sockets, by the gateway's port they stand beside.
        self._siblings: dict[int, dict[IListeningPort, socket.socket]] = {}
        #: The ports accepting from a dead worker's sockets in this process.
        self._covering: dict[int, list[IListeningPort]] = {}

    def listen(
        self, index: int, listener: BoundListener, factory: ServerFactory
    ) -> Deferred[IListeningPort]:
        """Open C{listener} with SO_REUSEPORT (a ListenFunction)."""
        description = listener.config.listen
        try:
            address = _address(self._reactor, description)
            sock = _bind(address)
        except (OSError, ValueError) as e:
            return fail(CannotListenError(None, description, e))
        try:
            port: IListeningPort = self._reactor.adoptStreamPort(
                sock.fileno(), address.family, factory
            )
        finally:
            # The port listens on a copy.
            sock.close()
        # A listener on port 0 has its port now: the workers' sockets take the same.
        self._addresses[port] = replace(address, port=port.getHost().port)  # type: ignore[attr-defined]
        return succeed(port)

    def socketsFor(self, index: int, ports: list[IListeningPort]) -> list[socket.socket]:
        """Worker C{index}'s socket beside each of C{ports}: made the first time, then
        the same one for each worker started at that index while the port stays open
        (the sockets of ports no longer listed are closed).

        @raise OSError: a socket cannot bind.
        """
        mine = self._siblings.setdefault(index, {})
        for gone in [port for port in mine if port not in ports]:
            mine.pop(gone).close()
        for port in self._addresses.copy():
            if port not in ports and not any(port in each for each in self._siblings.values()):
                del self._addresses[port]
        for port in ports:
            if port not in mine:
                mine[port] = _bind(self._addresses[port])
        return [mine[port] for port in ports]

    def cover(self, index: int) -> None:
        """Worker C{index} is gone: accept from its sockets in this process until
        L{uncover}, so what the kernel queued there, and gives it meanwhile, is
        served."""
        if index in self._covering:
            return
        covering = self._covering[index] = []
        for port, sock in self._siblings.get(index, {}).items():
            factory = getattr(port, "factory", None)
            if factory is None or not getattr(port, "connected", True):
                # The gateway's port closed (a reload removed it).
                continue
            try:
                adopted = self._reactor.adoptStreamPort(sock.fileno(), sock.family, factory)
            except OSError as e:
                log.error("cannot accept from worker {index}'s socket: {e}", index=index, e=e)
                continue
            covering.append(adopted)
        if covering:
            log.info(
                "worker {index}'s {count} listening socket(s) served here until it starts",
                index=index,
                count=len(covering),
            )

    def uncover(self, index: int) -> None:
        """Stop accepting from worker C{index}'s sockets here (it runs again); the
        sockets stay open."""
        for port in self._covering.pop(index, []):
            # An adopted port closes its own copy of the descriptor, with no shutdown.
            port.stopListening()

    def close(self) -> None:
        """At stop: let go of every worker's socket (the workers close theirs)."""
        for index in list(self._covering):
            self.uncover(index)
        for mine in self._siblings.values():
            for sock in mine.values():
                sock.close()
        self._siblings.clear()
