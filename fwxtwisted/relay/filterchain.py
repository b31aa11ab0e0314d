"""FilterChain: the data filters of one relay, in priority order, and the channel each
writes to (the stage after it in each direction, or the relay's delivery)."""

from __future__ import annotations

from collections.abc import Callable, Hashable

from zope.interface import implementer

from fwxtwisted.interfaces import Direction, IDataChannel, IDataFilter


class FilterChain:
    """Client bytes pass the filters from the lowest priority up, server bytes from the
    highest down; equal priorities keep the order they were attached in.  What leaves
    the last stage goes to C{deliver} / C{deliverEOF}.
    """

    def __init__(
        self,
        deliver: Callable[[Direction, bytes], None],
        deliverEOF: Callable[[Direction], None],
        abort: Callable[[str], None],
        hold: Callable[[Direction, Hashable, bool], None] | None = None,
        writable: Callable[[Direction], bool] | None = None,
    ) -> None:
        self._deliver = deliver
        self._deliverEOF = deliverEOF
        self._abort = abort
        self._hold = hold
        self._writable = writable
        self._filters: list[IDataFilter] = []
        self._priorities: list[int] = []

    def __bool__(self) -> bool:
        return bool(self._filters)

    def attach(self, dataFilter: IDataFilter, priority: int) -> None:
        """Insert C{dataFilter} after every filter of the same or a lower priority."""
        index = sum(1 for p in self._priorities if p <= priority)
        self._filters.insert(index, dataFilter)
        self._priorities.insert(index, priority)
        dataFilter.attached(ChainLink(self, dataFilter))

    def received(self, direction: Direction, data: bytes) -> None:
        """Bytes from a peer enter the chain at its end for their direction."""
        self._entry(direction).dataReceived(direction, data)

    def eofReceived(self, direction: Direction) -> None:
        self._entry(direction).eofReceived(direction)

    def detachAll(self) -> None:
        for dataFilter in self._filters:
            dataFilter.detached()

    def forward(self, current: IDataFilter, direction: Direction, data: bytes) -> None:
        following = self._next(current, direction)
        if following is None:
            self._deliver(direction, data)
        else:
            following.dataReceived(direction, data)

    def forwardEOF(self, current: IDataFilter, direction: Direction) -> None:
        following = self._next(current, direction)
        if following is None:
            self._deliverEOF(direction)
        else:
            following.eofReceived(direction)

    def abort(self, reason: str) -> None:
        self._abort(reason)

    def holdReading(self, current: IDataFilter, direction: Direction, paused: bool) -> None:
        """C{current} pauses (or resumes) reading the peer sending C{direction}; each
        filter's pause is its own, the peer is read when none holds it."""
        if self._hold is not None:
            self._hold(direction, ("data filter", id(current)), paused)

    def writable(self, direction: Direction) -> bool:
        """Whether what leaves the chain in C{direction} drains (always, unwatched)."""
        return self._writable is None or self._writable(direction)

    def _entry(self, direction: Direction) -> IDataFilter:
        return self._filters[0 if direction is Direction.CLIENT_TO_SERVER else -1]

    def _next(self, current: IDataFilter, direction: Direction) -> IDataFilter | None:
        index = next(i for i, f in enumerate(self._filters) if f is current)
        index += 1 if direction is Direction.CLIENT_TO_SERVER else -1
        if 0 <= index < len(self._filters):
            return self._filters[index]
        return None


@implementer(IDataChannel)
class ChainLink:
    """The channel a data filter writes to: the stage after it in each direction."""

    def __init__(self, chain: FilterChain, dataFilter: IDataFilter) -> None:
        self._chain = chain
        self._filter = dataFilter

    def write(self, direction: Direction, data: bytes) -> None:
        self._chain.forward(self._filter, direction, data)

    def writeEOF(self, direction: Direction) -> None:
        self._chain.forwardEOF(self._filter, direction)

    def close(self, reason: str) -> None:
        self._chain.abort(reason)

    def pauseReading(self, direction: Direction) -> None:
        self._chain.holdReading(self._filter, direction, True)

    def resumeReading(self, direction: Direction) -> None:
        self._chain.holdReading(self._filter, direction, False)

    def writable(self, direction: Direction) -> bool:
        return self._chain.writable(direction)
