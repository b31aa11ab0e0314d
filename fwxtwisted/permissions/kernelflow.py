"""KernelPath: one UDP redirect's flow in the kernel UDP path (permissions/kerneludp.py)."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from fwxtwisted.logs import Logger
from fwxtwisted.permissions.kerneludp import FlowCounts, KernelUDP, branch

log = Logger()

#: Seconds between two conntrack cleanups of one flow whose datagrams reach a socket.
FORGET_INTERVAL = 0.5


class KernelPath:
    """One UDP redirect's flow in the kernel: asked for once its addresses are known,
    counted while it lives, removed before its ports go back to the pool."""

    def __init__(self, registry: KernelUDP, counts: FlowCounts, label: str, clock: Any) -> None:
        self._registry = registry
        self.counts = counts
        self._label = label
        self._clock = clock
        #: The kernel held the flow at some point (the log's "kernel" path).
        self.installed = False
        #: The flow is out of the kernel and its counts are final.
        self.removed = False
        self._removing: Deferred[None] | None = None
        self._lastForget = float("-inf")
        self.ready: Deferred[None] = registry.add(counts)
        self.ready.addCallbacks(self._added, self._refused)

    @property
    def active(self) -> bool:
        """The kernel holds the flow: a datagram on the redirect's sockets is a stray.
        False again once it is being removed, or was handed back to Python."""
        return self.counts.inKernel and self._removing is None

    def _added(self, _: object) -> None:
        self.installed = True

    def _refused(self, failure: Failure) -> None:
        log.warn(
            "{label}: kernel UDP path refused for {flow}, relaying in Python: {error}",
            label=self._label,
            flow=self.counts.flow.name,
            error=failure.getErrorMessage(),
        )

    def stray(self) -> None:
        """A datagram of the flow reached a socket after the kernel took it over: an
        older conntrack entry still routes it here.  Forget it (at most every
        FORGET_INTERVAL seconds): the next datagram goes through the maps."""
        now = self._clock.seconds()
        if now - self._lastForget >= FORGET_INTERVAL:
            self._lastForget = now
            self._registry.forget(self.counts)

    def recount(self) -> Deferred[None]:
        """Read the kernel's counters now (the idle and session timers ask before
        they decide that nothing moved); never fails."""
        return self._registry.recount()

    def whenReady(self) -> Deferred[None]:
        """Fires once the kernel holds the flow, or refused it; never fails."""
        return branch(self.ready)

    def remove(self) -> Deferred[None]:
        """Take the flow out of the kernel (after its installation, if still running);
        fires once it is out and its counts are final.  Idempotent."""
        if self._removing is None:
            self._removing = branch(self.ready)
            self._removing.addCallback(lambda _: self._registry.remove(self.counts))
            self._removing.addCallback(self._out)
        return branch(self._removing)

    def _out(self, _: object) -> None:
        self.removed = True
