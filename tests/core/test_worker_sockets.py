"""worker_sockets = "shared" | "reuseport" with real twistd processes: both spread
connections over the processes, and a worker killed with connections waiting for it
loses none of them."""

from __future__ import annotations

import os
import re
import select
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.core.test_twistd import RUN_WAIT, SOCKET_WAIT, Upstream, freePort, running

MODES = ["shared", "reuseport"]
#: Connections made while worker 1 is stopped.
WAITING = 24


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    server = Upstream(connections=200)
    # Room for every connection at once (it serves them in turn).
    server.listener.listen(64)
    yield server
    server.close()


def _output(tmp_path: Path) -> str:
    return (tmp_path / "twistd.out").read_text(errors="replace")


def _waitFor(tmp_path: Path, process: subprocess.Popen[bytes], pattern: str) -> re.Match[str]:
    deadline = time.monotonic() + RUN_WAIT
    while not (match := re.search(pattern, _output(tmp_path))):
        assert process.poll() is None and time.monotonic() < deadline, f"no {pattern!r}"
        time.sleep(0.05)
    return match


def _gateway(tmp_path: Path, upstream: Upstream, mode: str) -> tuple[list[str], int]:
    port = freePort()
    config = tmp_path / "workers.toml"
    config.write_text(
        f'workers = 2\nworker_sockets = "{mode}"\n[[listeners]]\nfilter = "tcp"\n'
        f'listen = "tcp:{port}:interface=127.0.0.1"\nupstream = "127.0.0.1:{upstream.port}"\n'
    )
    return ["fwx", "--config", str(config)], port


def _workerPid(tmp_path: Path, process: subprocess.Popen[bytes]) -> int:
    started = _waitFor(tmp_path, process, r"worker 1 started \(pid (\d+)\)")
    _waitFor(tmp_path, process, r"#info worker 1\] listener tcp-0")
    return int(started.group(1))


def _send(port: int, data: bytes) -> socket.socket:
    """A connection through the gateway that has sent C{data} and half-closed."""
    client = socket.create_connection(("127.0.0.1", port), timeout=SOCKET_WAIT)
    client.sendall(data)
    client.shutdown(socket.SHUT_WR)
    return client


def _answer(client: socket.socket) -> bytes:
    with client:
        answer = b""
        while chunk := client.recv(65536):
            answer += chunk
    return answer


def _answered(client: socket.socket) -> bool:
    """Has the answer (or its start) arrived, without waiting?"""
    readable, _, _ = select.select([client], [], [], 0)
    return bool(readable)


@pytest.mark.parametrize("mode", MODES)
def test_both_modes_spread_connections_over_the_processes(
    tmp_path: Path, upstream: Upstream, mode: str
) -> None:
    arguments, port = _gateway(tmp_path, upstream, mode)
    with running(tmp_path, *arguments) as process:
        _workerPid(tmp_path, process)
        answers: list[bytes] = []

        def client(index: int) -> None:
            for turn in range(8):
                data = f"{index}-{turn}".encode()
                answers.append(_answer(_send(port, data)))

        threads = [threading.Thread(target=client, args=(i,)) for i in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(RUN_WAIT)
        assert len(answers) == 48 and all(a.startswith(b"echo:") for a in answers)
        deadline = time.monotonic() + RUN_WAIT
        while _output(tmp_path).count("closed (normal close)") < 48:
            assert time.monotonic() < deadline, "not every session logged its end"
            time.sleep(0.05)
    sessions = re.findall(r"\] (w1s|s)\d+: .* closed \(normal close\)", _output(tmp_path))
    assert sessions.count("s") and sessions.count("w1s"), sessions


@pytest.mark.parametrize("mode", MODES)
def test_a_worker_killed_with_connections_waiting_for_it_loses_none(
    tmp_path: Path, upstream: Upstream, mode: str
) -> None:
    """Worker 1 is stopped (a stuck worker), connections are made, then it is killed.

    shared: the gateway's own process accepts them all from the one socket while the
    worker is stuck.  reuseport: the kernel queues about half in the stuck worker's
    own socket; they wait there, and once it dies the gateway's process (which holds
    that socket too) accepts them: none is reset.
    """
    arguments, port = _gateway(tmp_path, upstream, mode)
    with running(tmp_path, *arguments) as process:
        worker = _workerPid(tmp_path, process)
        os.kill(worker, signal.SIGSTOP)
        try:
            clients = [_send(port, f"waiting {i}".encode()) for i in range(WAITING)]
            time.sleep(1.0)
            waited = [client for client in clients if not _answered(client)]
        finally:
            os.kill(worker, signal.SIGKILL)
        answers = [_answer(client) for client in clients]
        assert answers == [f"echo:waiting {i}".encode() for i in range(WAITING)]
        _waitFor(tmp_path, process, rf"worker 1 started \(pid (?!{worker}\))\d+\)")
    output = _output(tmp_path)
    if mode == "shared":
        assert waited == []
    else:
        assert 0 < len(waited) < WAITING
        assert "worker 1's 1 listening socket(s) served here until it starts" in output
    assert "w1s" not in output
