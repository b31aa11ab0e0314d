"""A worker process of a gateway (see workers.py): C{python -m fwxtwisted.app.worker}.

Started by WorkerPool only.  Its stdin brings one JSON line (its index, the
configuration, the listening sockets it inherited and the parent's import path) and
then stays open: when it closes, the parent is gone and the worker stops.  Its log
events leave as JSON lines on stdout for the parent to publish.  SIGTERM (or SIGINT)
stops it the way twistd stops the gateway: no new sessions, running ones get the
shutdown grace.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Callable
from typing import IO, Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ReactorNotRunning
from twisted.internet.interfaces import IListeningPort, IReadDescriptor
from twisted.internet.protocol import ServerFactory
from twisted.logger import ILogObserver, eventAsJSON, globalLogBeginner
from twisted.python.failure import Failure
from zope.interface import implementer

from fwxtwisted.app.primary import BoundListener
from fwxtwisted.app.service import FirewallService, ListenError
from fwxtwisted.app.signals import hurryOnSecondSignal
from fwxtwisted.app.workers import RETIRE, sessionPrefix
from fwxtwisted.errors import ConfigError
from fwxtwisted.logs import Logger, setLogLevel

log = Logger()

#: A hello longer than this is not from WorkerPool.
MAX_HELLO = 16 << 20


def readHello(fd: int = 0) -> dict[str, Any]:
    """The first line on C{fd}, read byte by byte so nothing after it is consumed.

    @raise ValueError: no complete JSON object before EOF or L{MAX_HELLO}.
    """
    chunks: list[bytes] = []
    size = 0
    while size < MAX_HELLO:
        byte = os.read(fd, 1)
        if not byte:
            raise ValueError("stdin closed before the worker's configuration line")
        if byte == b"\n":
            break
        chunks.append(byte)
        size += 1
    else:
        raise ValueError(f"configuration line longer than {MAX_HELLO} bytes")
    hello = json.loads(b"".join(chunks))
    if not isinstance(hello, dict):
        raise ValueError("configuration line is not a JSON object")
    return hello


@implementer(ILogObserver)
class JSONLines:
    """A log observer writing each event as one JSON line; a closed pipe ends it."""

    def __init__(self, stream: IO[str]) -> None:
        self._stream: IO[str] | None = stream

    def __call__(self, event: dict[str, Any]) -> None:
        if self._stream is None:
            return
        try:
            self._stream.write(eventAsJSON(event) + "\n")
            self._stream.flush()
        except (OSError, ValueError):
            # The parent is gone; stdin's close stops this process soon.
            self._stream = None


@implementer(IReadDescriptor)
class ParentWatch:
    """Reads stdin for its end (the parent closed it, or died) and for the parent's
    L{RETIRE} line (a reload replaced this worker)."""

    def __init__(
        self, reactor: Any, fd: int = 0, onRetire: Callable[[], object] | None = None
    ) -> None:
        self._reactor = reactor
        self._fd = fd
        self._onRetire = onRetire
        self._pending = b""

    def fileno(self) -> int:
        return self._fd

    def doRead(self) -> None:
        try:
            data = os.read(self._fd, 4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._reactor.removeReader(self)
            self._parentGone()
            return
        *lines, self._pending = (self._pending + data).split(b"\n")
        self._pending = self._pending[-len(RETIRE) :]
        if RETIRE.rstrip(b"\n") in lines and self._onRetire is not None:
            onRetire, self._onRetire = self._onRetire, None
            onRetire()

    def connectionLost(self, reason: Failure) -> None:
        # The reactor reports a hang-up without a read.
        self._parentGone()

    def _parentGone(self) -> None:
        # The reactor may be stopping already (SIGTERM came first).
        with contextlib.suppress(ReactorNotRunning):
            self._reactor.stop()

    def logPrefix(self) -> str:
        return "parent"


def adopting(reactor: Any, listeners: list[dict[str, int]]) -> Any:
    """A listen function for FirewallService taking each listener's inherited socket."""

    def listen(
        index: int, listener: BoundListener, factory: ServerFactory
    ) -> Deferred[IListeningPort]:
        try:
            spec = listeners[index]
            port = reactor.adoptStreamPort(spec["fd"], spec["family"], factory)
        except (IndexError, KeyError, OSError) as e:
            return fail(ListenError(f"worker cannot adopt listener {index}: {e}"))
        # The port listens on a copy of the descriptor.
        os.close(spec["fd"])
        return succeed(port)

    return listen


def run(hello: dict[str, Any], reactor: Any) -> FirewallService:
    """Build and start the worker's FirewallService from C{hello}. @raise ConfigError."""
    from fwxtwisted.app.build import buildService
    from fwxtwisted.app.config import parseConfig
    from fwxtwisted.app.metricsserver import recordInWorker
    from fwxtwisted.app.registry import discoverFilters

    config = parseConfig(hello["table"], str(hello["source"]))
    setLogLevel(config.settings.logLevel)
    firewall = buildService(
        config,
        discoverFilters(),
        reactor,
        sessionPrefix=sessionPrefix(int(hello["index"]), int(hello.get("generation", 0))),
        listen=adopting(reactor, hello["listeners"]),
        process=int(hello["index"]),
    )
    recordInWorker(config)
    firewall.privilegedStartService()
    firewall.startService()

    def stop() -> Any:
        hurryOnSecondSignal(reactor, firewall.endGrace)
        return firewall.stopService()

    reactor.addSystemEventTrigger("before", "shutdown", stop)
    return firewall


def retire(firewall: FirewallService, reactor: Any) -> None:
    """Replaced by a reload: accept nothing more, stop once the last session ends."""
    count = len(firewall.sessions)
    log.info("retiring: no new sessions; exiting once the {count} running end", count=count)
    retired = firewall.retire()
    retired.addCallback(lambda _: _stop(reactor))


def _stop(reactor: Any) -> None:
    with contextlib.suppress(ReactorNotRunning):
        reactor.stop()


def main() -> int:
    """The worker process: 0 after a clean stop, 1 when it cannot start."""
    try:
        hello = readHello()
    except ValueError as e:
        sys.stderr.write(f"fwx worker: {e}\n")
        return 1
    for entry in reversed(hello.get("path", [])):
        if isinstance(entry, str) and entry not in sys.path:
            sys.path.insert(0, entry)
    from twisted.internet import reactor

    globalLogBeginner.beginLoggingTo([JSONLines(sys.stdout)], redirectStandardIO=False)
    try:
        firewall = run(hello, reactor)
    except (ConfigError, ListenError) as e:
        sys.stderr.write(f"fwx worker: {e}\n")
        return 1
    os.set_blocking(0, False)
    reactor.addReader(ParentWatch(reactor, onRetire=lambda: retire(firewall, reactor)))
    reactor.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
