"""The fake primary connection's data-filter chain: the real FilterChain, with checks."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

from fwxtwisted.interfaces import Direction, IDataChannel, IDataFilter
from fwxtwisted.relay.filterchain import FilterChain


# Identity, not field equality: the same filter object may be attached twice.
@dataclass(eq=False)
class AttachedDataFilter:
    """A data filter in the fake primary connection's chain."""

    dataFilter: IDataFilter
    priority: int
    #: A channel to the stage after the filter (as the one it was given in C{attached}).
    channel: IDataChannel = field(repr=False)


class CheckedChain(FilterChain):
    """L{FilterChain}, the relay's own, with what a test wants to hear about: a filter
    writing str, writing after its own half-close, or half-closing twice raises; what
    a filter writes once the session is closed is dropped, as a closed connection
    would."""

    def __init__(
        self,
        deliver: Callable[[Direction, bytes], None],
        deliverEOF: Callable[[Direction], None],
        abort: Callable[[str], None],
        isClosed: Callable[[], bool],
        hold: Callable[[Direction, Hashable, bool], None] | None = None,
        writable: Callable[[Direction], bool] | None = None,
    ) -> None:
        super().__init__(deliver, deliverEOF, abort, hold, writable)
        self._isClosed = isClosed
        self._eofSent: dict[int, set[Direction]] = {}

    def forward(self, current: IDataFilter, direction: Direction, data: bytes) -> None:
        if not isinstance(data, bytes):
            raise TypeError(f"{current!r} wrote {type(data).__name__}, not bytes")
        if direction in self._eofSent.get(id(current), ()):
            raise RuntimeError(f"{current!r} wrote {direction.value} after its EOF")
        if self._isClosed():
            return
        super().forward(current, direction, data)

    def forwardEOF(self, current: IDataFilter, direction: Direction) -> None:
        sent = self._eofSent.setdefault(id(current), set())
        if direction in sent:
            raise RuntimeError(f"{current!r} wrote a second {direction.value} EOF")
        sent.add(direction)
        if self._isClosed():
            return
        super().forwardEOF(current, direction)
