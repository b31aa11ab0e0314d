"""Worker processes (--workers N) in front of vsftpd, as real processes.

The gateway's own process is stopped with SIGSTOP where a test must be sure a worker
serves the session: then only a worker can accept from the shared listening socket.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import time
from collections.abc import Iterator

import pytest

from tests.interop.support import ftpGateway, ftplibDownload, ftpSession, gatewayLog, waitForLog
from tests.peers import Gateway
from tests.reliability.conftest import Files, Upstream
from tests.reliability.support import SOCKET_TIMEOUT, gatewayPid

STARTED = r"worker 1 started \(pid (\d+)\)"
#: How long a worker may take to start and listen, in seconds.
START = 15.0


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            # A zombie has ended; only its parent's wait is missing.
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _waitUntilGone(pid: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() > deadline:
            raise AssertionError(f"process {pid} still running after {timeout} s")
        time.sleep(0.05)


def _workerListening(gateway: Gateway, since: int = 0) -> int:
    """Worker 1's pid, once it has logged that it listens."""
    started = waitForLog(gateway, STARTED, timeout=START, since=since)
    waitForLog(gateway, r"#info worker 1\] listener ", timeout=START, since=started.end())
    return int(started.group(1))


@contextlib.contextmanager
def _gatewayStopped(gateway: Gateway) -> Iterator[None]:
    """SIGSTOP the gateway's own process for the block (SIGCONT always after)."""
    pid = gatewayPid(gateway)
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


@contextlib.contextmanager
def _workersGateway(upstream: Upstream, *extra: str, workers: str = "2") -> Iterator[Gateway]:
    with ftpGateway(["--upstream", upstream.address, "--workers", workers, *extra]) as gateway:
        yield gateway


def test_aWorkerServesSessionsWhileTheGatewaysOwnProcessIsStopped(
    upstream: Upstream, files: Files
) -> None:
    with _workersGateway(upstream) as gateway:
        _workerListening(gateway)
        host, port = gateway.address
        with _gatewayStopped(gateway):
            for _ in range(3):
                with ftpSession(host, port) as ftp:
                    assert ftplibDownload(ftp, "medium.bin") == (
                        files.medium.sha256,
                        files.medium.size,
                    )
        # The worker's lines reach the gateway's log once it runs again.
        done = waitForLog(gateway, r"w1s\d+: ftp download 'medium.bin' 8388613 bytes", 10.0)
        assert "worker 1]" in gatewayLog(gateway)[: done.end()].splitlines()[-1]


def test_aKilledWorkerIsStartedAgainAndServes(upstream: Upstream, files: Files) -> None:
    with _workersGateway(upstream) as gateway:
        first = _workerListening(gateway)
        os.kill(first, signal.SIGKILL)
        ended = waitForLog(gateway, r"worker 1 ended \(signal 9\); its sessions are gone", 10.0)
        second = _workerListening(gateway, since=ended.end())
        assert second != first
        host, port = gateway.address
        with _gatewayStopped(gateway), ftpSession(host, port) as ftp:
            assert ftplibDownload(ftp, "small.bin") == (files.small.sha256, files.small.size)


def test_sigtermStopsEveryWorkerAndTellsItsSessions(upstream: Upstream) -> None:
    with _workersGateway(upstream, "--shutdown-grace", "2") as gateway:
        worker = _workerListening(gateway)
        host, port = gateway.address
        with _gatewayStopped(gateway):
            client = socket.create_connection((host, port), timeout=SOCKET_TIMEOUT)
        with contextlib.closing(client), client.makefile("rb") as replies:
            assert replies.readline().startswith(b"220")
            os.kill(gatewayPid(gateway), signal.SIGTERM)
            assert replies.readline().startswith(b"421 the gateway is shutting down")
            _waitUntilGone(worker, timeout=10.0)
            assert gateway.process is not None
            # twistd ends with the signal it was stopped by.
            assert gateway.process.wait(timeout=10.0) == -signal.SIGTERM
        assert re.search(r"worker 1 stopped \(exit status 0\)", gatewayLog(gateway))


def test_workersEndWithTheirParent(upstream: Upstream) -> None:
    with _workersGateway(upstream) as gateway:
        worker = _workerListening(gateway)
        os.kill(gatewayPid(gateway), signal.SIGKILL)
        _waitUntilGone(worker, timeout=10.0)


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("0", "workers: must be a whole number from 1 to 64"),
        ("65", "workers: must be a whole number from 1 to 64"),
    ],
)
def test_aBadWorkerCountIsOneLineAndExitStatusOne(
    upstream: Upstream, option: str, message: str
) -> None:
    with pytest.raises(RuntimeError) as raised:
        with _workersGateway(upstream, workers=option):
            pass
    assert message in str(raised.value)
    assert "Traceback" not in str(raised.value)
