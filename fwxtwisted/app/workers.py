"""WorkerPool: more processes serving the same primary listeners.

One event loop serves every session of a process, and under load each hop of a
session (a client's command, the server's reply) waits for the loop's turn in
progress.  With C{workers = N} the gateway's own process opens the listeners as
always and starts N-1 worker processes (C{python -m fwxtwisted.app.worker}) that adopt
the same listening sockets: the kernel hands each new connection to whichever
process accepts first, so an idle worker takes it.  A session lives in one process
from its first byte to its last, with its data connections, permissions and timers;
processes share nothing else (each binds its own redirect ports, and a port another
process holds fails to bind and is passed over like any taken port).

Each worker's log events come back over its stdout as JSON lines and are published
here, so the gateway keeps one log.  A worker that dies is started again; at stop
each is sent SIGTERM (it drains its sessions as the gateway does) and, after the
shutdown grace and a margin, SIGKILL.  A worker whose parent is gone sees its stdin
close and stops too.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.error import ProcessDone, ProcessExitedAlready
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import LogLevel, eventFromJSON, globalLogPublisher
from twisted.python.failure import Failure

from fwxtwisted.app.reuseport import ReusePortGroup
from fwxtwisted.logs import Logger
from fwxtwisted.metrics import hooks

log = Logger()

#: Seconds before a dead worker is started again; doubled (to L{MAX_RESTART_DELAY})
#: while workers die within L{STEADY} seconds of starting.
RESTART_DELAY = 1.0
MAX_RESTART_DELAY = 30.0
STEADY = 10.0
#: Seconds past the shutdown grace before a worker still running gets SIGKILL.
KILL_MARGIN = 5.0
#: A log line from a worker longer than this is cut (a worker writes one event a line).
MAX_LINE = 1 << 20
#: The line on a worker's stdin telling it to retire (a reload replaced it).
RETIRE = b"retire\n"
#: The worker's first inherited listening socket; the rest follow in order.
FIRST_LISTENER_FD = 3


def sessionPrefix(index: int, generation: int = 0) -> str:
    """How the session ids of worker C{index} start (the gateway's own are C{s1}...);
    the workers started by the C{generation}-th reload have C{w1r2s1}..."""
    return f"w{index}r{generation}s" if generation else f"w{index}s"


class _WorkerProtocol(ProcessProtocol):
    """One worker: its log lines in, its end out."""

    def __init__(self, pool: WorkerPool, index: int) -> None:
        self._pool = pool
        self.index = index
        self.started = time.monotonic()
        self.pid: int | None = None
        self.ended: Deferred[None] = Deferred()
        #: Replaced at a reload: it finishes its sessions and exits.
        self.retiring = False
        self._pending = b""
        self._errPending = b""

    def outReceived(self, data: bytes) -> None:
        self._pending = self._lines(self._pending + data, self._publish)

    def errReceived(self, data: bytes) -> None:
        self._errPending = self._lines(self._errPending + data, self._stderrLine)

    def _lines(self, data: bytes, each: Any) -> bytes:
        *lines, rest = data.split(b"\n")
        for line in lines:
            if line:
                each(line)
        if len(rest) > MAX_LINE:
            each(rest[:MAX_LINE])
            return b""
        return rest

    def _publish(self, line: bytes) -> None:
        try:
            event = eventFromJSON(line.decode("utf-8", "replace"))
        except ValueError:
            self._stderrLine(line)
            return
        level = event.get("log_level")
        levelName = level.name if isinstance(level, LogLevel) else "info"
        namespace = event.get("log_namespace", "-")
        # Twisted's text format shows log_system in place of namespace#level.
        where = (
            event.get("system", "-") if namespace == "log_legacy" else f"{namespace}#{levelName}"
        )
        old = " (old)" if self.retiring else ""
        event["log_system"] = f"{where} worker {self.index}{old}"
        globalLogPublisher(event)

    def _stderrLine(self, line: bytes) -> None:
        log.warn(
            "worker {index}: {line}",
            index=self.index,
            line=line.decode("utf-8", "replace").rstrip(),
        )

    def processEnded(self, reason: Failure) -> None:
        for rest, each in ((self._pending, self._publish), (self._errPending, self._stderrLine)):
            if rest:
                each(rest)
        self._pending = self._errPending = b""
        self._pool._ended(self, reason)
        self.ended.callback(None)


class WorkerPool(Service):
    """Starts, watches and stops the worker processes of a gateway.

    @param listeners: gives the gateway's own listening ports, in configuration order,
        once they are open; each worker adopts their sockets.
    @param table: the configuration, as TOML's table: each worker validates and runs it.
    @param group: with C{worker_sockets = "reuseport"}, gives each worker its own
        socket beside each listener, and serves a dead worker's sockets here until it
        is started again; None: each worker shares the gateway's own sockets.
    """

    def __init__(
        self,
        reactor: Any,
        count: int,
        listeners: Callable[[], Sequence[IListeningPort]],
        table: Mapping[str, object],
        source: str,
        shutdownGrace: float,
        group: ReusePortGroup | None = None,
    ) -> None:
        self._reactor = reactor
        self._group = group
        self.count = count
        self._listeners = listeners
        self._table = dict(table)
        self._source = source
        self._grace = shutdownGrace
        self.workers: dict[int, _WorkerProtocol] = {}
        self._restarts: dict[int, Any] = {}
        self._delays: dict[int, float] = {}
        self._stopping = False
        #: Workers replaced at a reload, running until their sessions end.
        self.retiring: set[_WorkerProtocol] = set()
        #: Reloads so far: the session ids of each generation of workers differ.
        self._generation = 0

    def startService(self) -> None:
        super().startService()
        self._stopping = False
        # The reactor reaps children once it runs; start them then.
        self._reactor.callWhenRunning(self._startAll)

    def _startAll(self) -> None:
        if self._stopping:
            return
        for index in range(1, self.count):
            self._start(index)

    def _sockets(self, index: int) -> list[tuple[int, int]]:
        """The descriptor and address family of each socket worker C{index} listens on.

        @raise OSError: its own SO_REUSEPORT socket cannot be made.
        """
        ports = list(self._listeners())
        if self._group is None:
            return [(port.fileno(), int(port.addressFamily)) for port in ports]  # type: ignore[attr-defined]
        return [(s.fileno(), int(s.family)) for s in self._group.socketsFor(index, ports)]

    def _hello(self, index: int, sockets: list[tuple[int, int]]) -> bytes:
        listeners = [
            {"fd": FIRST_LISTENER_FD + i, "family": family} for i, (_, family) in enumerate(sockets)
        ]
        hello = {
            "index": index,
            "generation": self._generation,
            "source": self._source,
            "table": self._table,
            "listeners": listeners,
            "path": sys.path,
        }
        return json.dumps(hello, default=str).encode() + b"\n"

    def _start(self, index: int) -> None:
        self._restarts.pop(index, None)
        if self._stopping:
            return
        protocol = _WorkerProtocol(self, index)
        childFDs: dict[int, int | str] = {0: "w", 1: "r", 2: "r"}
        executable = sys.executable
        try:
            sockets = self._sockets(index)
            for i, (fd, _) in enumerate(sockets):
                childFDs[FIRST_LISTENER_FD + i] = fd
            transport = self._reactor.spawnProcess(
                protocol,
                executable,
                [executable, "-m", "fwxtwisted.app.worker"],
                env=dict(os.environ),
                childFDs=childFDs,
            )
        except OSError as e:
            log.error("worker {index}: cannot start: {error}", index=index, error=e)
            if self._group is not None:
                self._group.cover(index)
            self._scheduleRestart(index, lived=0.0)
            return
        self.workers[index] = protocol
        protocol.pid = transport.pid
        if self._group is not None:
            # Connections queued meanwhile wait in its sockets for it.
            self._group.uncover(index)
        # The pipe stays open: the worker stops when it reads its end.
        transport.write(self._hello(index, sockets))
        log.info("worker {index} started (pid {pid})", index=index, pid=transport.pid)

    def _ended(self, protocol: _WorkerProtocol, reason: Failure) -> None:
        if self.workers.get(protocol.index) is protocol:
            del self.workers[protocol.index]
        if protocol.pid is not None:
            hooks.observer.processEnded(protocol.pid)
        status = _describeEnd(reason)
        if protocol in self.retiring:
            self.retiring.discard(protocol)
            log.info(
                "worker {index} (old configuration) ended ({status})",
                index=protocol.index,
                status=status,
            )
            return
        if self._stopping:
            log.info("worker {index} stopped ({status})", index=protocol.index, status=status)
            return
        log.error(
            "worker {index} ended ({status}); its sessions are gone, starting it again",
            index=protocol.index,
            status=status,
        )
        if self._group is not None:
            self._group.cover(protocol.index)
        self._scheduleRestart(protocol.index, lived=time.monotonic() - protocol.started)

    def _scheduleRestart(self, index: int, lived: float) -> None:
        delay = self._delays.get(index, RESTART_DELAY / 2) * 2 if lived < STEADY else RESTART_DELAY
        delay = min(max(delay, RESTART_DELAY), MAX_RESTART_DELAY)
        self._delays[index] = delay
        self._restarts[index] = self._reactor.callLater(delay, self._start, index)

    def stopService(self) -> Deferred[Any]:
        """SIGTERM every worker; fires once all have ended (SIGKILL after the grace)."""
        super().stopService()
        self._stopping = True
        for call in self._restarts.values():
            if call.active():
                call.cancel()
        self._restarts.clear()
        if self._group is not None:
            self._group.close()
        running = list(self.workers.values()) + list(self.retiring)
        if not running:
            return succeed(None)
        for protocol in running:
            _signal(protocol, "TERM")
        killer = self._reactor.callLater(self._grace + KILL_MARGIN, self._killAll)
        ended: Deferred[Any] = DeferredList([p.ended for p in running])
        ended.addBoth(lambda result: killer.cancel() if killer.active() else None)
        return ended

    def endGrace(self) -> None:
        """A second SIGTERM to the gateway: each worker gets one too (and ends its own
        grace)."""
        if self._stopping:
            for protocol in [*self.workers.values(), *self.retiring]:
                _signal(protocol, "TERM")

    def reload(self, table: Mapping[str, object], source: str, shutdownGrace: float) -> None:
        """Replace every worker by one running C{table} and the gateway's listening
        ports as they are now; each old worker is told to retire (close its copies of
        the listening sockets, let its sessions end by themselves, exit)."""
        self._table = dict(table)
        self._source = source
        self._grace = shutdownGrace
        if self._stopping or not self.running:
            return
        self._generation += 1
        for protocol in list(self.workers.values()):
            protocol.retiring = True
            self.retiring.add(protocol)
            if protocol.transport is not None:
                protocol.transport.write(RETIRE)
        self.workers.clear()
        for index in range(1, self.count):
            # A worker waiting to be started again starts with the new table anyway.
            if index not in self._restarts:
                self._start(index)

    def _killAll(self) -> None:
        for protocol in [*self.workers.values(), *self.retiring]:
            log.warn("worker {index} still running: SIGKILL", index=protocol.index)
            _signal(protocol, "KILL")


def _signal(protocol: _WorkerProtocol, name: str) -> None:
    if protocol.transport is None:
        return
    try:
        protocol.transport.signalProcess(name)
    except ProcessExitedAlready:
        pass


def _describeEnd(reason: Failure) -> str:
    if reason.check(ProcessDone):
        return "exit status 0"
    value = reason.value
    signal = getattr(value, "signal", None)
    if signal is not None:
        return f"signal {signal}"
    return f"exit status {getattr(value, 'exitCode', '?')}"
