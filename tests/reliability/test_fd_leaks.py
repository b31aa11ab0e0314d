"""After 1,000 sessions, many of them cut short, the gateway's open descriptors are back
to what they were before them.

The gateway (twistd, a subprocess) runs in front of vsftpd. Its descriptors are counted
in /proc/PID/fd after a warm-up (every kind of session a few times), then 1,000 sessions
run, 20 at a time, each choosing (seeded) what to do: download through PASV or PORT and
QUIT, reset the connections in the middle of a transfer, hang up without QUIT, leave a
PASV or PORT unused, reset before the greeting. Then the count must come back to the
baseline within a bounded time. vsftpd's own processes may linger: only the gateway's
descriptors are counted.
"""

from __future__ import annotations

import collections
import random
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from typing import TypeVar

import pytest

from tests.interop.support import ftpGateway, gatewayLog
from tests.peers import Gateway
from tests.reliability.conftest import Files, Upstream
from tests.reliability.support import (
    SOCKET_TIMEOUT,
    RawFtp,
    assertCleanLog,
    assertFdsBackTo,
    fdCount,
    gatewayPid,
    readAll,
    resetSocket,
    settledFdCount,
)

pytestmark = pytest.mark.peers

SESSIONS = 1000
CONCURRENCY = 20
SEED = 20261126
#: The bound on the 1,000 sessions, in seconds (they take about 15 here).
RUN_LIMIT = 90.0

Client = Callable[[tuple[str, int], random.Random, Files], None]


def _open(address: tuple[str, int]) -> RawFtp:
    client = RawFtp(address, timeout=SOCKET_TIMEOUT)
    try:
        client.login()
        assert client.command("TYPE I")[0] == 200
    except BaseException:
        client.close()
        raise
    return client


def _startRetrieve(client: RawFtp, name: str, passive: bool) -> socket.socket:
    """PASV or PORT, then RETR `name`: the data connection, once the 150 is read."""
    if passive:
        data = client.dataConnection(client.pasv())
        client.send(f"RETR {name}")
        assert client.reply()[0] == 150
        return data
    listener = client.port()
    with listener:
        client.send(f"RETR {name}")
        assert client.reply()[0] == 150
        data, _ = listener.accept()
    data.settimeout(SOCKET_TIMEOUT)
    return data


def downloadAndQuit(address: tuple[str, int], rng: random.Random, files: Files) -> None:
    client = _open(address)
    try:
        data = _startRetrieve(client, files.small.name, passive=rng.random() < 0.5)
        with data:
            assert len(readAll(data)) == files.small.size
        assert client.reply()[0] == 226
        client.quit()
    finally:
        client.close()


def quitAfterLogin(address: tuple[str, int], rng: random.Random, files: Files) -> None:
    _open(address).quit()


def resetMidTransfer(address: tuple[str, int], rng: random.Random, files: Files) -> None:
    """RST the data and the control connection in the middle of a RETR."""
    client = _open(address)
    data = _startRetrieve(client, files.medium.name, passive=rng.random() < 0.5)
    readAll(data, rng.randrange(1, 256 * 1024))
    resetSocket(data)
    data.close()
    client.reset()


def resetDataAndGoOn(address: tuple[str, int], rng: random.Random, files: Files) -> None:
    """RST the data connection mid-transfer, read the server's verdict, QUIT."""
    client = _open(address)
    try:
        data = _startRetrieve(client, files.medium.name, passive=rng.random() < 0.5)
        readAll(data, rng.randrange(1, 256 * 1024))
        resetSocket(data)
        data.close()
        assert client.reply()[0] in (226, 426)
        client.quit()
    finally:
        client.close()


def hangUpMidTransfer(address: tuple[str, int], rng: random.Random, files: Files) -> None:
    """Close the control connection without QUIT mid-transfer, then the data one."""
    client = _open(address)
    data = _startRetrieve(client, files.medium.name, passive=rng.random() < 0.5)
    readAll(data, rng.randrange(1, 256 * 1024))
    client.close()
    data.close()


def leaveAfterPasv(address: tuple[str, int], rng: random.Random, files: Files) -> None:
    """PASV, never connect, hang up (with QUIT or not)."""
    client = _open(address)
    client.pasv()
    client.quit() if rng.random() < 0.5 else client.close()


def leaveAfterPort(address: tuple[str, int], rng: random.Random, files: Files) -> None:
    """PORT, never RETR, hang up without QUIT."""
    client = _open(address)
    listener = client.port()
    listener.close()
    client.close()


def hangUpAfterLogin(address: tuple[str, int], rng: random.Random, files: Files) -> None:
    _open(address).close()


def resetAtOnce(address: tuple[str, int], rng: random.Random, files: Files) -> None:
    """RST right after connecting, before (or just after) the greeting."""
    sock = socket.create_connection(address, timeout=SOCKET_TIMEOUT)
    if rng.random() < 0.5:
        sock.recv(1024)
    resetSocket(sock)
    sock.close()


CLIENTS: dict[str, Client] = {
    "download+QUIT": downloadAndQuit,
    "login+QUIT": quitAfterLogin,
    "RST mid-transfer": resetMidTransfer,
    "RST data, go on": resetDataAndGoOn,
    "hang up mid-transfer": hangUpMidTransfer,
    "PASV unused": leaveAfterPasv,
    "PORT unused": leaveAfterPort,
    "hang up after login": hangUpAfterLogin,
    "RST at once": resetAtOnce,
}


def runSessions(
    address: tuple[str, int], plan: list[tuple[str, int]], files: Files
) -> collections.Counter[str]:
    """Run `plan` ((kind, seed) per session), CONCURRENCY at a time; every session must
    go as its kind expects. Returns how many of each kind ran."""

    def one(kind: str, seed: int) -> str:
        try:
            CLIENTS[kind](address, random.Random(seed), files)
        except Exception as error:
            raise AssertionError(f"session {kind!r} (seed {seed}) failed: {error!r}") from error
        return kind

    with ThreadPoolExecutor(CONCURRENCY) as pool:
        futures = [pool.submit(one, kind, seed) for kind, seed in plan]
        done, pending = wait(futures, timeout=RUN_LIMIT, return_when=FIRST_EXCEPTION)
        for future in pending:
            future.cancel()
        failed = [f for f in done if f.exception() is not None]
        if failed:
            raise failed[0].exception()  # type: ignore[misc]
        assert not pending, f"{len(pending)} sessions still running after {RUN_LIMIT} s"
    return collections.Counter(f.result() for f in futures)


class FdSampler:
    """Samples the fd count of a process in a thread while the block runs: its peak."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, fdCount(self.pid))

    def __enter__(self) -> FdSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


T = TypeVar("T")


def withGatewayWarnings(gateway: Gateway, run: Callable[[], T]) -> T:
    """C{run()}; a session failing in it fails with the gateway's warnings and errors
    attached, so a rare failure says what the gateway saw."""
    try:
        return run()
    except AssertionError as e:
        lines = [
            line
            for line in gatewayLog(gateway).splitlines()
            if "#warn" in line or "#error" in line or "#critical" in line or "Traceback" in line
        ]
        raise AssertionError(f"{e}\ngateway warnings (last 40):\n" + "\n".join(lines[-40:])) from e


def test_fdsBackToBaselineAfter1000Sessions(upstream: Upstream, files: Files) -> None:
    with ftpGateway(["--upstream", upstream.address, "--shutdown-grace", "1"]) as gateway:
        pid = gatewayPid(gateway)
        warmUp = [(kind, n) for n in range(3) for kind in CLIENTS]
        withGatewayWarnings(gateway, lambda: runSessions(gateway.address, warmUp, files))
        baseline = settledFdCount(pid)

        rng = random.Random(SEED)
        kinds = sorted(CLIENTS)
        plan = [(rng.choice(kinds), rng.randrange(1 << 30)) for _ in range(SESSIONS)]
        began = time.monotonic()
        with FdSampler(pid) as sampler:
            counts = withGatewayWarnings(gateway, lambda: runSessions(gateway.address, plan, files))
        elapsed = time.monotonic() - began
        assert sum(counts.values()) == SESSIONS
        assert set(counts) == set(CLIENTS), counts
        # The run did load the gateway: many sessions at once, each with its sockets.
        assert sampler.peak >= baseline + CONCURRENCY, sampler.peak
        after = fdCount(pid)

        # Every session is over on the client side; the gateway gets a bounded time
        # to see the last closes through, then holds exactly what it held before.
        assertFdsBackTo(pid, baseline, timeout=15.0)
        assertCleanLog(gateway)
        print(
            f"\n{SESSIONS} sessions in {elapsed:.1f} s; fds: baseline {baseline}, "
            f"peak {sampler.peak}, {after} just after, then {fdCount(pid)}; {dict(counts)}"
        )
