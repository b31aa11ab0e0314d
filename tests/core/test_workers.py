"""WorkerPool and the worker's own pieces, without processes: a fake reactor records
what would be spawned and signalled, a Clock drives the restarts and the kill timer.
(tests/reliability/test_workers.py runs real workers.)"""

from __future__ import annotations

import io
import json
import os
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.task import Clock
from twisted.logger import LogLevel, eventFromJSON, formatEvent, globalLogPublisher
from twisted.python.failure import Failure

from fwxtwisted.app.worker import JSONLines, ParentWatch, readHello
from fwxtwisted.app.workers import (
    KILL_MARGIN,
    MAX_RESTART_DELAY,
    STEADY,
    WorkerPool,
    sessionPrefix,
)
from fwxtwisted.logs import Logger

GRACE = 30.0
TABLE = {"workers": 3, "listeners": [{"filter": "tcp", "listen": "tcp:2100"}]}


class FakeProcess:
    """What spawnProcess returns: a pid, what was written, which signals were sent."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.written = b""
        self.signals: list[str] = []

    def write(self, data: bytes) -> None:
        self.written += data

    def signalProcess(self, name: str) -> None:
        self.signals.append(name)


class FakeReactor(Clock):
    """A Clock that runs callWhenRunning at once and records spawnProcess calls."""

    def __init__(self) -> None:
        super().__init__()
        self.spawned: list[dict[str, Any]] = []

    def callWhenRunning(self, f: Any, *args: Any) -> None:
        f(*args)

    def spawnProcess(self, protocol: Any, executable: str, args: list[str], **kw: Any) -> Any:
        process = FakeProcess(1000 + len(self.spawned))
        protocol.makeConnection(process)
        self.spawned.append({"protocol": protocol, "args": args, "process": process, **kw})
        return process


class FakePort:
    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.addressFamily = socket.AF_INET

    def fileno(self) -> int:
        return self.fd


def end(spawned: dict[str, Any], reason: Failure) -> None:
    spawned["protocol"].processEnded(reason)


KILLED = Failure(ProcessTerminated(signal=9))
DONE = Failure(ProcessDone(0))


@pytest.fixture
def events() -> Iterator[list[dict[str, Any]]]:
    seen: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(seen.append)
    yield seen
    globalLogPublisher.removeObserver(seen.append)


def texts(events: list[dict[str, Any]]) -> list[str]:
    return [formatEvent(event) for event in events]


def started(count: int = 3) -> tuple[FakeReactor, WorkerPool]:
    reactor = FakeReactor()
    pool = WorkerPool(reactor, count, lambda: [FakePort(7), FakePort(9)], TABLE, "gw.toml", GRACE)
    pool.startService()
    return reactor, pool


def test_starts_one_worker_fewer_than_the_count() -> None:
    reactor, _ = started(3)
    assert [s["args"][1:] for s in reactor.spawned] == [["-m", "fwxtwisted.app.worker"]] * 2


def test_each_worker_inherits_the_listening_sockets_from_descriptor_3() -> None:
    reactor, _ = started(2)
    [spawned] = reactor.spawned
    assert spawned["childFDs"] == {0: "w", 1: "r", 2: "r", 3: 7, 4: 9}


def test_each_worker_is_told_its_index_configuration_and_sockets() -> None:
    reactor, _ = started(3)
    hellos = [json.loads(s["process"].written) for s in reactor.spawned]
    assert [h["index"] for h in hellos] == [1, 2]
    assert all(h["table"] == TABLE and h["source"] == "gw.toml" for h in hellos)
    assert hellos[0]["listeners"] == [
        {"fd": 3, "family": int(socket.AF_INET)},
        {"fd": 4, "family": int(socket.AF_INET)},
    ]


def test_worker_session_ids_differ_from_the_gateways() -> None:
    assert sessionPrefix(1) == "w1s" and sessionPrefix(2) != "s"


def test_a_worker_that_dies_is_started_again_a_second_later(events: list[Any]) -> None:
    reactor, pool = started(2)
    end(reactor.spawned[0], KILLED)
    assert 1 not in pool.workers
    assert any("worker 1 ended (signal 9); its sessions are gone" in t for t in texts(events))
    reactor.advance(0.99)
    assert len(reactor.spawned) == 1
    reactor.advance(0.01)
    assert len(reactor.spawned) == 2 and pool.workers[1] is reactor.spawned[1]["protocol"]


def test_the_restart_delay_doubles_while_workers_die_young() -> None:
    reactor, _ = started(2)
    delays = []
    for _ in range(7):
        end(reactor.spawned[-1], KILLED)
        before = reactor.seconds()
        while len(reactor.spawned) == len(delays) + 1:
            reactor.advance(0.5)
        delays.append(reactor.seconds() - before)
    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0, MAX_RESTART_DELAY, MAX_RESTART_DELAY]


def test_a_worker_that_ran_steadily_is_started_again_after_a_second(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    reactor, _ = started(2)
    for _ in range(3):
        end(reactor.spawned[-1], KILLED)
        reactor.advance(MAX_RESTART_DELAY)
    protocol = reactor.spawned[-1]["protocol"]
    protocol.started -= STEADY
    end(reactor.spawned[-1], KILLED)
    count = len(reactor.spawned)
    reactor.advance(1.0)
    assert len(reactor.spawned) == count + 1


def test_stop_sends_sigterm_and_fires_once_every_worker_has_ended(events: list[Any]) -> None:
    reactor, pool = started(3)
    stopped = pool.stopService()
    assert [s["process"].signals for s in reactor.spawned] == [["TERM"], ["TERM"]]
    fired: list[object] = []
    stopped.addCallback(fired.append)
    end(reactor.spawned[0], DONE)
    assert not fired
    end(reactor.spawned[1], KILLED)
    assert fired
    assert "worker 1 stopped (exit status 0)" in texts(events)
    reactor.advance(MAX_RESTART_DELAY)
    assert len(reactor.spawned) == 2


def test_stop_kills_a_worker_still_running_after_the_grace() -> None:
    reactor, pool = started(2)
    pool.stopService()
    [spawned] = reactor.spawned
    reactor.advance(GRACE + KILL_MARGIN - 0.1)
    assert spawned["process"].signals == ["TERM"]
    reactor.advance(0.1)
    assert spawned["process"].signals == ["TERM", "KILL"]


def test_stop_cancels_a_pending_restart() -> None:
    reactor, pool = started(2)
    end(reactor.spawned[0], KILLED)
    stopped: Deferred[Any] = pool.stopService()
    assert stopped.called
    reactor.advance(MAX_RESTART_DELAY)
    assert len(reactor.spawned) == 1


def workerEvent(text: str) -> bytes:
    """One log line as a worker writes it."""
    stream = io.StringIO()
    Logger(namespace="fwxtwisted.permissions.session", observer=JSONLines(stream)).info(text)
    return stream.getvalue().encode()


def test_a_workers_log_events_are_published_with_its_index(events: list[Any]) -> None:
    reactor, _ = started(2)
    protocol = reactor.spawned[0]["protocol"]
    events.clear()
    line = workerEvent("w1s7: closed")
    protocol.outReceived(line[:10])
    assert not events
    protocol.outReceived(line[10:])
    [event] = events
    assert formatEvent(event) == "w1s7: closed"
    assert event["log_level"] is LogLevel.info
    assert event["log_system"] == "fwxtwisted.permissions.session#info worker 1"


def test_a_workers_line_that_is_not_json_is_logged_as_text(events: list[Any]) -> None:
    reactor, _ = started(2)
    protocol = reactor.spawned[0]["protocol"]
    events.clear()
    protocol.errReceived(b"Fatal Python error: oops\n")
    protocol.outReceived(b"not json\n")
    assert texts(events) == ["worker 1: Fatal Python error: oops", "worker 1: not json"]


def test_the_hello_is_read_up_to_its_newline_only() -> None:
    read, write = os.pipe()
    try:
        os.write(write, b'{"index": 1}\nleft for later')
        assert readHello(read) == {"index": 1}
        assert os.read(read, 100) == b"left for later"
    finally:
        os.close(read)
        os.close(write)


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b'{"index": 1}', "stdin closed before the worker's configuration line"),
        (b"[1, 2]\n", "configuration line is not a JSON object"),
    ],
)
def test_a_hello_that_is_cut_or_not_an_object_is_refused(data: bytes, why: str) -> None:
    read, write = os.pipe()
    os.write(write, data)
    os.close(write)
    try:
        with pytest.raises(ValueError, match=why):
            readHello(read)
    finally:
        os.close(read)


def test_json_lines_writes_one_event_a_line() -> None:
    stream = io.StringIO()
    log = Logger(namespace="fwxtwisted.test", observer=JSONLines(stream))
    log.info("first {n}", n=1)
    log.warn("second")
    lines = stream.getvalue().splitlines()
    assert [formatEvent(eventFromJSON(line)) for line in lines] == ["first 1", "second"]


def test_json_lines_goes_quiet_once_the_parent_is_gone() -> None:
    stream = io.StringIO()
    observer = JSONLines(stream)
    stream.close()
    log = Logger(observer=observer)
    log.info("nobody reads this")
    log.info("nor this")


class StoppingReactor:
    def __init__(self) -> None:
        self.stops = 0
        self.readers: list[object] = []

    def stop(self) -> None:
        self.stops += 1

    def removeReader(self, reader: object) -> None:
        self.readers.append(reader)


def test_the_worker_stops_when_its_stdin_ends() -> None:
    read, write = os.pipe()
    reactor = StoppingReactor()
    watch = ParentWatch(reactor, read)
    try:
        os.write(write, b"ignored")
        watch.doRead()
        assert reactor.stops == 0
        os.close(write)
        watch.doRead()
        assert reactor.stops == 1 and reactor.readers == [watch]
    finally:
        os.close(read)


def test_the_worker_stops_when_the_reactor_reports_a_hang_up() -> None:
    reactor = StoppingReactor()
    ParentWatch(reactor, 0).connectionLost(Failure(ProcessDone(0)))
    assert reactor.stops == 1


class FakeGroup:
    """A ReusePortGroup: records what the pool asks of it."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    def socketsFor(self, index: int, ports: list[Any]) -> list[socket.socket]:
        self.calls.append(("socketsFor", index))
        sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        self.sockets = getattr(self, "sockets", []) + [sock]
        return [sock for _ in ports]

    def cover(self, index: int) -> None:
        self.calls.append(("cover", index))

    def uncover(self, index: int) -> None:
        self.calls.append(("uncover", index))

    def close(self) -> None:
        self.calls.append(("close", 0))
        for sock in self.sockets:
            sock.close()


def test_with_reuseport_each_worker_gets_its_own_sockets_and_a_dead_ones_are_covered() -> None:
    reactor = FakeReactor()
    group = FakeGroup()
    pool = WorkerPool(
        reactor,
        2,
        lambda: [FakePort(7), FakePort(9)],
        TABLE,
        "gw.toml",
        GRACE,
        group,  # type: ignore[arg-type]
    )
    pool.startService()
    [spawned] = reactor.spawned
    fd = group.sockets[0].fileno()
    assert spawned["childFDs"] == {0: "w", 1: "r", 2: "r", 3: fd, 4: fd}
    assert json.loads(spawned["process"].written)["listeners"][0]["family"] == socket.AF_INET6
    end(spawned, KILLED)
    assert group.calls[-1] == ("cover", 1)
    reactor.advance(1.0)
    assert group.calls[-2:] == [("socketsFor", 1), ("uncover", 1)]
    pool.stopService()
    assert group.calls[-1] == ("close", 0)
