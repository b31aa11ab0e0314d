"""PortCloser: stops listening ports and knows when their sockets are really closed."""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IListeningPort


class PortCloser:
    """Twisted closes a listening socket on a later reactor turn; a permission that
    says it is finished must mean its port can be bound again, so it waits for this."""

    def __init__(self, onClosed: Callable[[], None]) -> None:
        self._onClosed = onClosed
        self._closing: set[Deferred[object]] = set()

    @property
    def busy(self) -> bool:
        """True while a port is still closing."""
        return bool(self._closing)

    def close(self, port: IListeningPort) -> Deferred[None]:
        """Stop C{port}; C{onClosed} is called once its socket is closed.

        @return: a Deferred firing (with None) after C{onClosed}, for whoever else
            waits for that port.
        """
        closing: Deferred[object] = maybeDeferred(port.stopListening)
        self._closing.add(closing)

        def closed(_: object) -> None:
            self._closing.discard(closing)
            self._onClosed()

        return closing.addBoth(closed)
