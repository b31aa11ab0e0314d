"""PortAllocator: runs of consecutive ports from a configured range per local IP."""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from typing import TypeVar

from twisted.internet.error import CannotListenError

from fwxtwisted.errors import PortRangeExhausted, PortUnavailable

T = TypeVar("T")

#: Outside Linux's default ephemeral range (32768-60999), so listeners rarely collide
#: with the gateway's own outbound connections.
DEFAULT_RANGE = (20000, 29999)

#: Key of the range used for IPs that have none of their own.
ANY_IP = "*"


#: Fewer ports than this in a process's slice: the process takes the whole range (an
#: RTP/RTCP pair needs two, from an even port).
MIN_SLICE = 4


def portSlice(portRange: tuple[int, int], index: int, count: int) -> tuple[int, int]:
    """The C{index}-th of C{count} disjoint, contiguous parts of C{portRange} (the last
    takes the remainder); the whole range when a part would hold fewer than
    L{MIN_SLICE} ports."""
    low, high = portRange
    size = (high - low + 1) // count
    if count <= 1 or size < MIN_SLICE:
        return portRange
    first = low + index * size
    return (first, high if index == count - 1 else first + size - 1)


class PortAllocator:
    """Binds runs of N consecutive ports, starting at a random place in a range.

    Binding is the only reliable test of whether a port is free (other programs share
    the machine), so the allocator tries, and moves past a port that fails.

    @param slice: C{(index, count)}: this process is the C{index}-th of C{count}
        sharing the ranges (workers with C{worker_sockets = "reuseport"}), and binds
        only in its own part of each range (L{portSlice}), so processes never race for
        a port.  L{rangeFor} still names the whole configured range.
    """

    def __init__(
        self,
        ranges: Mapping[str, tuple[int, int]] | None = None,
        rng: random.Random | None = None,
        slice: tuple[int, int] | None = None,
    ) -> None:
        self._ranges = dict(ranges or {})
        self._ranges.setdefault(ANY_IP, DEFAULT_RANGE)
        self._random = rng or random.Random()
        self.slice = slice

    def rangeFor(self, ip: str) -> tuple[int, int]:
        """The (low, high) inclusive range configured for C{ip}."""
        return self._ranges.get(ip, self._ranges[ANY_IP])

    def sliceOf(self, portRange: tuple[int, int]) -> tuple[int, int]:
        """The part of C{portRange} this process binds in (all of it without a slice)."""
        if self.slice is None:
            return portRange
        return portSlice(portRange, *self.slice)

    def bindRun(
        self,
        ip: str,
        count: int,
        bind: Callable[[int, int], T],
        portRange: tuple[int, int] | None = None,
        even: bool = False,
    ) -> list[T]:
        """Bind C{count} consecutive ports on C{ip} with C{bind}.

        C{bind(index, port)} binds the index-th port of the run; it raises
        C{CannotListenError} for a port that is taken, with no lasting effect then.
        Ports of a failed run are released with C{.stopListening()}.  C{portRange}
        overrides the range configured for C{ip}.  With C{even}, the run starts on an
        even port (RTP on the even port, RTCP on the odd one after it); an odd low
        bound is then passed over.

        @raise PortRangeExhausted: no run of C{count} free ports is left in the range.
        """
        low, high = self.sliceOf(portRange if portRange is not None else self.rangeFor(ip))
        if count < 1:
            raise ValueError("count must be at least 1")
        align = 2 if even else 1
        base = low + (-low % align)
        # Candidate starts: base, base + align, ... while the run still fits.
        starts = (high - count + 1 - base) // align + 1 if base + count - 1 <= high else 0
        if starts <= 0:
            if not even:
                raise PortRangeExhausted(
                    f"{count} consecutive ports asked for on {ip}, range {low}-{high} is smaller"
                )
            raise PortRangeExhausted(
                f"{count} consecutive ports from an even port asked for on {ip}, "
                f"range {low}-{high} holds no such run"
            )
        first = self._random.randrange(starts)
        tried = 0
        index = first
        while tried < starts:
            start = base + index * align
            bound, failedAt = _tryRun(start, count, bind)
            if bound is not None:
                return bound
            # Every run overlapping the failed port fails too: skip past it, but not
            # beyond the last run (the search wraps to the first, which may be free).
            skip = min((failedAt - start) // align + 1, starts - index)
            tried += skip
            index = (index + skip) % starts
        what = "from an even port " if even else ""
        raise PortRangeExhausted(
            f"no {count} free consecutive port(s) {what}on {ip} in {low}-{high}"
        )

    def bindExact(
        self, ip: str, port: int, count: int, bind: Callable[[int, int], T], even: bool = False
    ) -> list[T]:
        """Bind C{count} ports from C{port} exactly.

        @raise PortUnavailable: one is taken, or C{even} was asked and C{port} is odd.
        """
        if even and port % 2:
            raise PortUnavailable(f"port {port} on {ip} is odd: an even first port was asked")
        if port + count - 1 > 65535:
            raise PortUnavailable(f"ports {port}-{port + count - 1} on {ip} exceed 65535")
        bound, failedAt = _tryRun(port, count, bind)
        if bound is None:
            raise PortUnavailable(f"port {failedAt} on {ip} is not available")
        return bound


def _tryRun(start: int, count: int, bind: Callable[[int, int], T]) -> tuple[list[T] | None, int]:
    bound: list[T] = []
    for port in range(start, start + count):
        try:
            bound.append(bind(port - start, port))
        except CannotListenError:
            for item in bound:
                stop = getattr(item, "stopListening", None)
                if stop is not None:
                    stop()
            return None, port
    return bound, start + count
