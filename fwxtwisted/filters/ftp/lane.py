"""Lane: steps that run one at a time, each after what the one before returned."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.python.failure import Failure


class Lane:
    """Runs a step at once when nothing is pending (most FTP commands, most of the
    time), else after the pending ones; a step returning a Deferred holds the steps
    after it until that fires.  A step that raises or fails goes to C{failed}.

    @ivar queued: steps waiting, not yet run.
    """

    def __init__(self, failed: Callable[[Failure], None]) -> None:
        self._failed = failed
        self._tail: Deferred[Any] = succeed(None)
        self._idle = True
        self._mark = 0
        self.queued = 0

    def run(self, step: Callable[[], Deferred[Any] | None]) -> None:
        """Run C{step} now if nothing is pending, else once what is pending is done."""
        if self._idle:
            try:
                result = step()
            except Exception:
                self._failed(Failure())
                return
            if result is not None:
                self.waitFor(result.addErrback(self._failed))
            return
        self.queued += 1

        def queuedStep(_: object) -> Deferred[Any] | None:
            self.queued -= 1
            return step()

        self._extend(queuedStep, self._failed)

    def waitFor(self, pending: Deferred[Any]) -> None:
        """Steps from now on wait for C{pending}."""
        self._tail = pending
        self._extend(None, None)

    def _extend(
        self,
        step: Callable[[Any], object] | None,
        failed: Callable[[Failure], None] | None,
    ) -> None:
        self._idle = False
        self._mark += 1
        if step is not None:
            self._tail.addCallback(step)
        if failed is not None:
            self._tail.addErrback(failed)
        self._tail.addBoth(self._settled, self._mark)

    def _settled(self, result: object, mark: int) -> object:
        # Idle again only once the last step added has run.
        if mark == self._mark:
            self._idle = True
        return result
