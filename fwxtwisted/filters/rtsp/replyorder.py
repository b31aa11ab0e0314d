"""ResponseOrder: responses reach the client in the order of its requests."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable


class ResponseSlot:
    """The place of one request's response in the client's stream."""

    __slots__ = ("data", "_order")

    def __init__(self, order: ResponseOrder) -> None:
        self.data: bytes | None = None
        self._order = order

    def fill(self, data: bytes) -> None:
        """The response is ready: it is written once every earlier one is."""
        if self.data is not None:
            return
        self.data = data
        self._order._flush()


class ResponseOrder:
    """Responses to pipelined requests, written in request order.

    A response the gateway answers itself (a refused SETUP) must not overtake the
    server's response to an earlier request, and a SETUP response waits for its ports
    while later responses may already be in.
    """

    def __init__(self, write: Callable[[bytes], None], limit: int = 128) -> None:
        self._write = write
        self.limit = limit
        self._slots: deque[ResponseSlot] = deque()

    def __len__(self) -> int:
        return len(self._slots)

    @property
    def full(self) -> bool:
        """Whether L{limit} responses are outstanding: no slot may be added."""
        return len(self._slots) >= self.limit

    def slot(self) -> ResponseSlot:
        """A slot for the next request's response. @raise OverflowError: when L{full}."""
        if self.full:
            raise OverflowError(f"more than {self.limit} responses outstanding")
        slot = ResponseSlot(self)
        self._slots.append(slot)
        return slot

    def _flush(self) -> None:
        while self._slots and self._slots[0].data is not None:
            data = self._slots.popleft().data
            assert data is not None
            self._write(data)
