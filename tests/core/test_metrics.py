"""--metrics for real: a twistd gateway's /metrics page counts exactly the sessions and
bytes a test moves through it, in one process and summed over worker processes."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.core.test_twistd import (
    RUN_WAIT,
    SOCKET_WAIT,
    Upstream,
    exchange,
    freePort,
    running,
    twistd,
)
from tests.peers import isListening

#: label set (sorted pairs) -> value, per sample name.
Samples = dict[str, dict[tuple[tuple[str, str], ...], float]]


def scrape(port: int) -> Samples:
    """GET /metrics, parsed by prometheus_client's own parser."""
    url = f"http://127.0.0.1:{port}/metrics"
    with urllib.request.urlopen(url, timeout=SOCKET_WAIT) as response:
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        assert family.name.startswith("fwx_"), family.name
        assert family.documentation, family.name
        for sample in family.samples:
            key = tuple(sorted(sample.labels.items()))
            samples.setdefault(sample.name, {})[key] = sample.value
    return samples


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of C{name}'s samples whose labels include C{labels}."""
    return sum(
        value
        for key, value in samples.get(name, {}).items()
        if all(pair in key for pair in labels.items())
    )


def waitFor(port: int, done: Callable[[Samples], bool]) -> Samples:
    """Scrape until C{done} holds (bounded): sessions close a moment after the client."""
    deadline = time.monotonic() + RUN_WAIT
    while True:
        samples = scrape(port)
        if done(samples):
            return samples
        assert time.monotonic() < deadline, samples
        time.sleep(0.05)


def ready(process: subprocess.Popen[bytes], *ports: int) -> None:
    """Wait until twistd listens on C{ports}, read from /proc: a probe connection
    would be a session, counted."""
    deadline = time.monotonic() + RUN_WAIT
    while not all(isListening("127.0.0.1", port) for port in ports):
        assert process.poll() is None, f"twistd exited with {process.returncode}"
        assert time.monotonic() < deadline, f"twistd did not listen on {ports}"
        time.sleep(0.05)


def waitForLine(output: Path, pattern: str, process: object) -> re.Match[str]:
    deadline = time.monotonic() + RUN_WAIT
    while True:
        match = re.search(pattern, output.read_text(errors="replace"))
        if match:
            return match
        assert time.monotonic() < deadline, f"no {pattern!r} in the log"
        time.sleep(0.05)


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    server = Upstream(connections=8)
    yield server
    server.close()


SESSION = {"listener": "tcp-0", "filter": "tcp"}
#: A short exchange, a longer one, and one past 64 KiB (it may take the fast path).
PAYLOADS = [b"one", b"a second, longer message", bytes(range(256)) * 400]


def test_metrics_count_the_sessions_and_bytes_of_twistd_fwx_tcp(
    tmp_path: Path, upstream: Upstream
) -> None:
    port, metricsPort = freePort(), freePort()
    with running(
        tmp_path,
        "fwx",
        "tcp",
        "--listen",
        f"tcp:{port}:interface=127.0.0.1",
        "--upstream",
        f"127.0.0.1:{upstream.port}",
        "--metrics",
        f"tcp:{metricsPort}:interface=127.0.0.1",
    ) as process:
        ready(process, port, metricsPort)
        before = scrape(metricsPort)
        assert total(before, "fwx_sessions_total") == 0
        assert total(before, "fwx_port_pool_size", range="20000-29999") == 10000
        for data in PAYLOADS:
            assert exchange(port, data) == b"echo:" + data
        after = waitFor(
            metricsPort,
            lambda s: (
                total(s, "fwx_sessions_total", **SESSION) == len(PAYLOADS)
                and total(s, "fwx_current_sessions", **SESSION) == 0
            ),
        )
    assert total(after, "fwx_bytes_in_total", channel="primary", filter="tcp") == sum(
        len(data) for data in PAYLOADS
    )
    assert total(after, "fwx_bytes_out_total", channel="primary", filter="tcp") == sum(
        len(b"echo:" + data) for data in PAYLOADS
    )
    assert total(after, "fwx_bytes_in_total", channel="secondary") == 0
    assert total(after, "fwx_sessions_refused_total") == 0
    assert total(after, "fwx_connect_failures_total") == 0
    assert upstream.error is None


def gateway(tmp_path: Path, upstreamPort: int, *extra: str) -> tuple[int, int, list[str]]:
    """A free listen port, a free metrics port, and twistd's arguments for them."""
    port, metricsPort = freePort(), freePort()
    args = [
        "fwx",
        "tcp",
        "--listen",
        f"tcp:{port}:interface=127.0.0.1",
        "--upstream",
        f"127.0.0.1:{upstreamPort}",
        "--metrics",
        f"tcp:{metricsPort}:interface=127.0.0.1",
        *extra,
    ]
    return port, metricsPort, args


def test_metrics_count_a_refusal_by_reason(tmp_path: Path, upstream: Upstream) -> None:
    port, metricsPort, args = gateway(tmp_path, upstream.port, "--max-sessions", "1")
    with running(tmp_path, *args) as process:
        ready(process, port, metricsPort)
        # Connected and not half-closed: the upstream waits, the session stays open.
        with socket.create_connection(("127.0.0.1", port), timeout=SOCKET_WAIT) as held:
            waitFor(metricsPort, lambda s: total(s, "fwx_current_sessions", **SESSION) == 1)
            assert exchange(port, b"one too many") == b""
            samples = waitFor(metricsPort, lambda s: total(s, "fwx_sessions_refused_total") == 1)
            assert total(samples, "fwx_sessions_refused_total", reason="max_sessions") == 1
            held.sendall(b"held")
            held.shutdown(socket.SHUT_WR)
            assert held.recv(100) == b"echo:held"
        samples = waitFor(metricsPort, lambda s: total(s, "fwx_current_sessions") == 0)
    assert total(samples, "fwx_sessions_total", **SESSION) == 1


def test_metrics_count_connect_failures(tmp_path: Path) -> None:
    port, metricsPort, args = gateway(tmp_path, freePort())
    with running(tmp_path, *args) as process:
        ready(process, port, metricsPort)
        for _ in range(2):
            # Nothing sent: the gateway closes the session once the connect fails.
            with socket.create_connection(("127.0.0.1", port), timeout=SOCKET_WAIT) as client:
                assert client.recv(100) == b""
        samples = waitFor(
            metricsPort,
            lambda s: (
                total(s, "fwx_connect_failures_total", channel="primary", filter="tcp") == 2
                and total(s, "fwx_current_sessions") == 0
            ),
        )
    assert total(samples, "fwx_sessions_total", **SESSION) == 2
    assert total(samples, "fwx_bytes_in_total") == total(samples, "fwx_bytes_out_total") == 0


def test_bad_metrics_endpoint_is_one_line(tmp_path: Path) -> None:
    result = twistd(
        tmp_path,
        "-n",
        "--pidfile=",
        "fwx",
        "tcp",
        "--listen",
        "tcp:0",
        "--upstream",
        "127.0.0.1:1",
        "--metrics",
        "bogus:9120",
    )
    assert result.returncode != 0
    assert (result.stdout + result.stderr).strip() == (
        "fwx: command line: metrics: 'bogus:9120' is not a server endpoint "
        "(Unknown endpoint type: 'bogus')"
    )


def test_metrics_port_in_use_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        busy = taken.getsockname()[1]
        result = twistd(
            tmp_path,
            "-n",
            "--pidfile=",
            "fwx",
            "tcp",
            "--listen",
            "tcp:0:interface=127.0.0.1",
            "--upstream",
            "127.0.0.1:1",
            "--metrics",
            f"tcp:{busy}:interface=127.0.0.1",
        )
    assert result.returncode == 1
    output = (result.stdout + result.stderr).strip()
    assert "Traceback" not in output
    # twistd's log has taken stderr over by then: the line comes with a log prefix.
    assert output.splitlines()[-1].endswith(
        f"fwx: cannot serve metrics on 'tcp:{busy}:interface=127.0.0.1': "
        f"Couldn't listen on 127.0.0.1:{busy}: [Errno 98] Address already in use."
    )


def test_with_workers_one_scrape_sums_every_process(tmp_path: Path, upstream: Upstream) -> None:
    port, metricsPort = freePort(), freePort()
    config = tmp_path / "workers.toml"
    config.write_text(
        f'workers = 2\nmetrics = "tcp:{metricsPort}:interface=127.0.0.1"\n'
        f'[[listeners]]\nfilter = "tcp"\nlisten = "tcp:{port}:interface=127.0.0.1"\n'
        f'upstream = "127.0.0.1:{upstream.port}"\n'
    )
    output = tmp_path / "twistd.out"
    with running(tmp_path, "fwx", "--config", str(config)) as process:
        waitForLine(output, r"#info worker 1\] listener tcp-0", process)
        worker = int(waitForLine(output, r"worker 1 started \(pid (\d+)\)", process).group(1))
        directory = waitForLine(output, r"workers count in (\S+)\)", process).group(1)
        assert Path(directory).is_dir()
        sent: list[bytes] = []

        def through(data: bytes) -> None:
            assert exchange(port, data) == b"echo:" + data
            sent.append(data)

        # The gateway's process stopped: the worker takes these sessions...
        process.send_signal(signal.SIGSTOP)
        try:
            through(b"to the worker")
            through(b"to the worker again" * 5000)
        finally:
            process.send_signal(signal.SIGCONT)
        # ...and the worker stopped, the gateway's own process takes these.
        os.kill(worker, signal.SIGSTOP)
        try:
            through(b"to the gateway")
            through(b"to the gateway once more")
        finally:
            os.kill(worker, signal.SIGCONT)

        def summed(samples: Samples) -> bool:
            return (
                total(samples, "fwx_sessions_total", **SESSION) == len(sent)
                and total(samples, "fwx_current_sessions", **SESSION) == 0
            )

        samples = waitFor(metricsPort, summed)
        bytesIn = sum(len(data) for data in sent)
        bytesOut = sum(len(b"echo:" + data) for data in sent)
        assert total(samples, "fwx_bytes_in_total", channel="primary") == bytesIn
        assert total(samples, "fwx_bytes_out_total", channel="primary") == bytesOut
        # Both processes had sessions (their summaries come within 50 ms).
        for session in (
            r"worker 1\] w1s1: ",
            r"worker 1\] w1s2: ",
            r"#info\] s1: ",
            r"#info\] s2: ",
        ):
            waitForLine(output, session, process)

        # A worker that dies takes its live gauges along, not its counts.
        os.kill(worker, signal.SIGKILL)
        waitForLine(output, r"worker 1 ended \(signal 9\)", process)
        samples = scrape(metricsPort)
        assert total(samples, "fwx_sessions_total", **SESSION) == len(sent)
        assert total(samples, "fwx_current_sessions", **SESSION) == 0
        assert total(samples, "fwx_bytes_in_total", channel="primary") == bytesIn
    # The run's directory is gone with the gateway.
    assert not Path(directory).exists()
