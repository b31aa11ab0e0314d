"""SIGHUP reloads for real: twistd subprocesses, loopback peers, bounded waits."""

from __future__ import annotations

import hashlib
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_twistd import (
    RUN_WAIT,
    SOCKET_WAIT,
    Upstream,
    exchange,
    freePort,
    running,
    waitForListener,
)

#: What the slow upstream sends each connection: 4 MiB over about 2 s.
PAYLOAD = bytes(range(256)) * 4096 * 4
CHUNK = 64 * 1024
CHUNK_DELAY = 0.03


class SlowUpstream:
    """Sends L{PAYLOAD} to every connection, a chunk at a time, then closes it."""

    def __init__(self) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port: int = self.listener.getsockname()[1]
        self._stopping = False
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self._stopping:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._send, args=(connection,), daemon=True).start()

    def _send(self, connection: socket.socket) -> None:
        with connection:
            try:
                for offset in range(0, len(PAYLOAD), CHUNK):
                    connection.sendall(PAYLOAD[offset : offset + CHUNK])
                    time.sleep(CHUNK_DELAY)
            except OSError:
                pass  # a readiness probe that left

    def close(self) -> None:
        self._stopping = True
        self.listener.close()


@pytest.fixture
def slow() -> Iterator[SlowUpstream]:
    server = SlowUpstream()
    yield server
    server.close()


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    server = Upstream(connections=16)
    yield server
    server.close()


class Download:
    """Reads one connection through the gateway to EOF in a thread."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=SOCKET_WAIT)
        self.first = self.sock.recv(CHUNK)
        assert self.first, "the download did not start"
        self.data = b""
        self.thread = threading.Thread(target=self._read, daemon=True)

    def start(self) -> Download:
        self.thread.start()
        return self

    def _read(self) -> None:
        with self.sock:
            data = self.first
            while chunk := self.sock.recv(CHUNK):
                data += chunk
            self.data = data

    def result(self) -> bytes:
        self.thread.join(RUN_WAIT)
        assert not self.thread.is_alive(), "the download did not finish"
        return self.data


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def listener(name: str, port: int, upstream: int, extra: str = "") -> str:
    return (
        f'[[listeners]]\nname = "{name}"\nfilter = "tcp"\n'
        f'listen = "tcp:{port}:interface=127.0.0.1"\nupstream = "127.0.0.1:{upstream}"\n{extra}'
    )


def logText(cwd: Path) -> str:
    return (cwd / "twistd.out").read_text(errors="replace")


def waitForLog(process: subprocess.Popen[bytes], cwd: Path, text: str, count: int = 1) -> None:
    deadline = time.monotonic() + RUN_WAIT
    while logText(cwd).count(text) < count:
        assert process.poll() is None, f"twistd exited waiting for {text!r}"
        assert time.monotonic() < deadline, f"no {text!r} in the log within {RUN_WAIT} s"
        time.sleep(0.05)


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=SOCKET_WAIT).close()
    except ConnectionRefusedError:
        return True
    return False


def turnedAway(port: int) -> bool:
    """Whether the gateway closes a new connection to C{port} at once."""
    with socket.create_connection(("127.0.0.1", port), timeout=SOCKET_WAIT) as client:
        try:
            return client.recv(1) == b""
        except ConnectionResetError:
            return True


def reload(
    process: subprocess.Popen[bytes], cwd: Path, config: Path, text: str, outcome: str
) -> None:
    """Write C{text} to C{config}, send SIGHUP and wait for the next line with
    C{outcome}."""
    before = logText(cwd).count(outcome)
    config.write_text(text)
    process.send_signal(signal.SIGHUP)
    waitForLog(process, cwd, outcome, before + 1)


def test_reload_changes_listeners_without_dropping_sessions(
    tmp_path: Path, slow: SlowUpstream, upstream: Upstream
) -> None:
    kept, removed, added = freePort(), freePort(), freePort()
    config = tmp_path / "gw.toml"
    config.write_text(
        listener("kept", kept, slow.port, "max_sessions = 1\n")
        + listener("removed", removed, slow.port)
    )
    with running(tmp_path, "fwx", "--config", str(config)) as process:
        waitForLog(process, tmp_path, "listener removed: tcp on")
        # Each listener's one running download, across the reload.
        downloads = [Download(kept).start(), Download(removed).start()]
        # max_sessions = 1: the kept listener's download is its one session.
        assert turnedAway(kept)
        reload(
            process,
            tmp_path,
            config,
            'log_level = "debug"\n'
            + listener("kept", kept, slow.port, "max_sessions = 4\n")
            + listener("added", added, upstream.port),
            f"reloaded {config}",
        )
        assert exchange(added, b"to the new one") == b"echo:to the new one"
        assert refused(removed)
        # The new limit counts the running download, and lets a second session in.
        assert sha(Download(kept).start().result()) == sha(PAYLOAD)
        for download in downloads:
            assert sha(download.result()) == sha(PAYLOAD)
        assert downloads[0].thread.is_alive() is False
    log = logText(tmp_path)
    line = next(line for line in log.splitlines() if f"reloaded {config}" in line)
    assert line.endswith(
        "added added; changed kept; removed removed; settings changed: log_level"
    ), line
    # debug from the reload on: the new listener's session says it connected.
    assert "connected to listener added (tcp)" in log
    assert "connected to listener removed" not in log


def test_a_bad_file_leaves_the_running_configuration_whole(
    tmp_path: Path, upstream: Upstream
) -> None:
    first, second, spare = freePort(), freePort(), freePort()
    config = tmp_path / "gw.toml"
    good = listener("first", first, upstream.port) + listener("second", second, upstream.port)
    config.write_text(good)
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    takenPort = taken.getsockname()[1]
    bad = {
        "not TOML": "[[listeners]\n",
        "unknown filter": listener("first", first, upstream.port).replace('"tcp"', '"gopher"', 1),
        "bad option": listener("first", first, upstream.port, "colour = 1\n"),
        # The spare port opens, the taken one cannot: the spare is closed again.
        "port in use": listener("spare", spare, upstream.port)
        + listener("taken", takenPort, upstream.port),
    }
    with taken, running(tmp_path, "fwx", "--config", str(config)) as process:
        waitForLog(process, tmp_path, "listener second: tcp on")
        for text in bad.values():
            reload(process, tmp_path, config, text, f"reload of {config} refused")
            assert exchange(first, b"still") == b"echo:still"
            assert exchange(second, b"both") == b"echo:both"
            assert refused(spare)
    refusals = [line for line in logText(tmp_path).splitlines() if "refused, the running" in line]
    assert len(refusals) == len(bad), refusals
    suffixes = [line.split("configuration stays: ", 1)[1] for line in refusals]
    assert suffixes[0].startswith("not valid TOML: ")
    assert suffixes[1].startswith("listeners[0].filter: unknown filter 'gopher'")
    assert suffixes[2] == "listeners[0].colour: not an option of the tcp filter"
    assert suffixes[3].startswith(f"cannot listen on 'tcp:{takenPort}:")
    assert "reloaded" not in logText(tmp_path)


def test_restart_only_settings_are_logged_and_kept(tmp_path: Path, upstream: Upstream) -> None:
    port = freePort()
    config = tmp_path / "gw.toml"
    config.write_text(listener("one", port, upstream.port))
    with running(tmp_path, "fwx", "--config", str(config)) as process:
        waitForListener(process, port)
        reload(
            process,
            tmp_path,
            config,
            'workers = 2\nworker_sockets = "reuseport"\n'
            + listener("one", port, upstream.port, "max_sessions = 3\n"),
            f"reloaded {config}",
        )
        assert exchange(port, b"one process") == b"echo:one process"
    log = logText(tmp_path)
    assert f"reload of {config}: workers 2 (running 1) needs a restart" in log
    assert f"reload of {config}: worker_sockets reuseport (running shared) needs a restart" in log
    assert "worker 1" not in log


def test_command_line_gateway_has_nothing_to_reload(tmp_path: Path, upstream: Upstream) -> None:
    port = freePort()
    listen = f"tcp:{port}:interface=127.0.0.1"
    with running(
        tmp_path, "fwx", "tcp", "--listen", listen, "--upstream", f"127.0.0.1:{upstream.port}"
    ) as process:
        waitForListener(process, port)
        process.send_signal(signal.SIGHUP)
        waitForLog(process, tmp_path, "configured on the command line: nothing to re-read")
        assert exchange(port, b"still here") == b"echo:still here"


def test_reload_with_workers_replaces_them_and_old_sessions_finish(
    tmp_path: Path, slow: SlowUpstream, upstream: Upstream
) -> None:
    kept, added = freePort(), freePort()
    config = tmp_path / "gw.toml"
    config.write_text("workers = 2\n" + listener("kept", kept, slow.port))
    with running(tmp_path, "fwx", "--config", str(config)) as process:
        waitForLog(process, tmp_path, "#info worker 1] listener kept")
        # Stopped, the gateway's own process accepts nothing: the worker takes it.
        process.send_signal(signal.SIGSTOP)
        try:
            download = Download(kept)
        finally:
            process.send_signal(signal.SIGCONT)
        download.start()
        reload(
            process,
            tmp_path,
            config,
            "workers = 2\n"
            + listener("kept", kept, slow.port)
            + listener("added", added, upstream.port),
            "#info worker 1] listener added",
        )
        waitForLog(process, tmp_path, "worker 1 (old)] retiring: no new sessions")
        process.send_signal(signal.SIGSTOP)
        try:
            assert exchange(added, b"new worker") == b"echo:new worker"
        finally:
            process.send_signal(signal.SIGCONT)
        assert sha(download.result()) == sha(PAYLOAD)
        waitForLog(process, tmp_path, "worker 1 (old configuration) ended (exit status 0)")
    log = logText(tmp_path)
    assert "worker 1 (old)] w1s1: " in log
    assert "worker 1] w1r1s1: " in log
