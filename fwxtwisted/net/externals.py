"""ExternalAddressPool: hands each new session one external IP, round-robin."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence


class ExternalAddressPool:
    """The IPs outbound legs may leave from.  Empty means: let the OS choose, and keep
    every secondary channel on whatever source IP the primary got."""

    def __init__(self, addresses: Sequence[str] = ()) -> None:
        self.addresses = tuple(addresses)
        self._cycle: Iterator[str] | None = (
            itertools.cycle(self.addresses) if self.addresses else None
        )

    def next(self) -> str | None:
        """The external IP for a new session, or None when the pool is empty."""
        if self._cycle is None:
            return None
        return next(self._cycle)
