"""hurryOnSecondSignal: a SIGTERM or SIGINT during the shutdown grace ends it at once."""

from __future__ import annotations

import signal
from collections.abc import Callable
from types import FrameType
from typing import Any

from twisted.application.service import IService, IServiceCollection

from fwxtwisted.logs import Logger

log = Logger()


def hurryOnSecondSignal(reactor: Any, hurry: Callable[[], None]) -> None:
    """Called as the gateway starts to stop: from now on SIGTERM and SIGINT call
    C{hurry} (in the reactor thread) instead of Twisted's handlers, which would stop a
    reactor already stopping (a critical ReactorNotRunning traceback) and change
    nothing.  Only handlers the reactor installed are replaced: a process that runs no
    reactor signal handling (a test, pdb's SIGINT) keeps its own."""

    def second(number: int, frame: FrameType | None) -> None:
        log.info(
            "received {name} again: ending the shutdown grace now",
            name=signal.Signals(number).name,
        )
        reactor.callFromThread(hurry)

    for number, name in ((signal.SIGTERM, "sigTerm"), (signal.SIGINT, "sigInt")):
        handler = getattr(reactor, name, None)
        if handler is not None and signal.getsignal(number) == handler:
            signal.signal(number, second)


def endGrace(service: IService) -> None:
    """Call C{endGrace()} on C{service} and every service under it that has one."""
    method = getattr(service, "endGrace", None)
    if method is not None:
        method()
    if IServiceCollection.providedBy(service):
        for child in service:  # type: ignore[attr-defined]
            endGrace(child)
