"""ExternalAddressPool: hands each new session one external IP, round-robin."""

from __future__ import annotations

import ipaddress
import itertools
import os
import socket
from collections.abc import Iterator, Sequence


def unbindableAddress(ip: str) -> str | None:
    """Why an outbound leg could not leave from C{ip} (bind to it, port 0), or None
    when it can: an address of another machine fails every session with EADDRNOTAVAIL."""
    family = socket.AF_INET6 if ipaddress.ip_address(ip).version == 6 else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.bind((ip, 0))
    except OSError as e:
        return os.strerror(e.errno) if e.errno else str(e)
    return None


class ExternalAddressPool:
    """The IPs outbound legs may leave from.  Empty means: let the OS choose, and keep
    every secondary channel on whatever source IP the primary got."""

    def __init__(self, addresses: Sequence[str] = ()) -> None:
        self.addresses = tuple(addresses)
        self._cycle: Iterator[str] | None = (
            itertools.cycle(self.addresses) if self.addresses else None
        )
        self._byFamily: dict[bool, Iterator[str] | None] = {
            v6: (
                itertools.cycle(same)
                if (same := [a for a in self.addresses if (":" in a) == v6])
                else None
            )
            for v6 in (False, True)
        }

    def next(self) -> str | None:
        """The external IP for a new session, or None when the pool is empty."""
        if self._cycle is None:
            return None
        return next(self._cycle)

    def nextFor(self, host: str) -> str | None:
        """The external IP for a new session going to the IP C{host}: round-robin among
        the pool's addresses of its family (a source of the other family could not be
        bound); None when the pool has none (the OS chooses)."""
        cycle = self._byFamily[":" in host]
        return next(cycle) if cycle is not None else None
