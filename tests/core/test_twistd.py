"""twistd fwx for real: subprocesses forwarding bytes, help texts, one-line errors."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from fwxtwisted.filters.tcp import TCPCommandOptions

ROOT = Path(__file__).parents[2]
EXAMPLE = ROOT / "examples" / "tcp-forward.toml"
TWISTD = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]
#: The bound on a twistd run, start to exit, and on every socket wait.
RUN_WAIT = 30.0
SOCKET_WAIT = 10.0


def environment() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def twistd(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run twistd to completion (bounded), capturing its output."""
    return subprocess.run(
        [*TWISTD, *args],
        cwd=cwd,
        env=environment(),
        capture_output=True,
        text=True,
        timeout=RUN_WAIT,
    )


def freePort() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@contextmanager
def running(cwd: Path, *args: str) -> Iterator[subprocess.Popen[bytes]]:
    """A twistd process in the foreground, stopped (and its output shown) at the end."""
    log = (cwd / "twistd.out").open("wb")
    process = subprocess.Popen(
        [*TWISTD, "-n", "--pidfile=", *args],
        cwd=cwd,
        env=environment(),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(SOCKET_WAIT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(SOCKET_WAIT)
        log.close()
        sys.stdout.write((cwd / "twistd.out").read_text(errors="replace"))


def waitForListener(process: subprocess.Popen[bytes], port: int) -> None:
    deadline = time.monotonic() + RUN_WAIT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"twistd exited with status {process.returncode} before listening")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    pytest.fail(f"twistd did not listen on port {port} within {RUN_WAIT} s")


class Upstream:
    """A server taking a few connections in turn: each is read to EOF, answered with
    'echo:' + what it read, and closed."""

    def __init__(self, connections: int = 4) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(8)
        self.listener.settimeout(SOCKET_WAIT)
        self.port: int = self.listener.getsockname()[1]
        #: (peer IP, bytes read) per connection, in order.
        self.heard: list[tuple[str, bytes]] = []
        self.error: BaseException | None = None
        self._stopping = False
        self.thread = threading.Thread(target=self._serve, args=(connections,), daemon=True)
        self.thread.start()

    def _serve(self, connections: int) -> None:
        try:
            for _ in range(connections):
                connection, peer = self.listener.accept()
                with connection:
                    connection.settimeout(SOCKET_WAIT)
                    data = b""
                    while chunk := connection.recv(65536):
                        data += chunk
                    self.heard.append((peer[0], data))
                    connection.sendall(b"echo:" + data)
        except BaseException as e:
            if not self._stopping:
                self.error = e

    def peerOf(self, data: bytes) -> str:
        """The IP the connection that carried C{data} came from."""
        return next(peer for peer, heard in self.heard if heard == data)

    def close(self) -> None:
        self._stopping = True
        self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        self.thread.join(SOCKET_WAIT)


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    server = Upstream()
    yield server
    server.close()


def exchange(port: int, data: bytes) -> bytes:
    """Send C{data} through the gateway, half-close, and read the answer to EOF.

    A connection the gateway refuses may be gone before the half-close (ENOTCONN,
    ECONNRESET): its answer is what arrived, often nothing.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=SOCKET_WAIT) as client:
        answer = b""
        try:
            client.sendall(data)
            client.shutdown(socket.SHUT_WR)
            while chunk := client.recv(65536):
                answer += chunk
        except (ConnectionResetError, BrokenPipeError, OSError) as e:
            if isinstance(e, TimeoutError):
                raise
    return answer


def test_tcp_command_forwards_bytes(tmp_path: Path, upstream: Upstream) -> None:
    port = freePort()
    listen = f"tcp:{port}:interface=127.0.0.1"
    with running(
        tmp_path, "fwx", "tcp", "--listen", listen, "--upstream", f"127.0.0.1:{upstream.port}"
    ) as process:
        waitForListener(process, port)
        assert exchange(port, b"through twistd") == b"echo:through twistd"
    assert upstream.error is None
    assert upstream.peerOf(b"through twistd") == "127.0.0.1"


def test_example_config_forwards_bytes_from_its_external_addresses_in_turn(
    tmp_path: Path, upstream: Upstream
) -> None:
    example = EXAMPLE.read_text()
    assert "tcp:38021:" in example and '"127.0.0.1:38080"' in example
    port = freePort()
    config = tmp_path / "tcp-forward.toml"
    config.write_text(example.replace("38021", str(port)).replace("38080", str(upstream.port)))
    with running(tmp_path, "fwx", "--config", str(config)) as process:
        waitForListener(process, port)
        # The readiness probe was the first session (from 127.0.0.2); this is the second.
        assert exchange(port, b"from the example") == b"echo:from the example"
        assert exchange(port, b"third") == b"echo:third"
    assert upstream.error is None
    assert upstream.peerOf(b"from the example") == "127.0.0.3"
    assert upstream.peerOf(b"third") == "127.0.0.2"


def test_bad_config_file_is_one_line_and_a_failure_status(tmp_path: Path) -> None:
    (tmp_path / "bad.toml").write_text(
        '[port_ranges]\n"127.0.0.1" = "40000-30000"\n'
        '[[listeners]]\nfilter = "tcp"\nlisten = "tcp:0"\nupstream = "127.0.0.1:1"\n'
    )
    result = twistd(tmp_path, "-n", "--pidfile=", "fwx", "--config", "bad.toml")
    assert result.returncode != 0
    output = (result.stdout + result.stderr).strip()
    assert output == (
        "fwx: bad.toml: port_ranges.127.0.0.1: "
        "'40000-30000' is not a range of ports 1-65535 with LOW <= HIGH"
    )


def test_unknown_filter_in_config_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "bad.toml").write_text('[[listeners]]\nfilter = "gopher"\nlisten = "tcp:0"\n')
    result = twistd(tmp_path, "-n", "--pidfile=", "fwx", "--config", "bad.toml")
    assert result.returncode != 0
    lines = (result.stdout + result.stderr).strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("fwx: bad.toml: listeners[0].filter: unknown filter 'gopher'")


def test_bad_command_line_value_is_one_line(tmp_path: Path) -> None:
    result = twistd(
        tmp_path, "-n", "--pidfile=", "fwx", "tcp", "--listen", "tcp:0", "--upstream", "nowhere"
    )
    assert result.returncode != 0
    output = (result.stdout + result.stderr).strip()
    assert output == "fwx: command line: listeners[0].upstream: no port in address 'nowhere'"


def test_unknown_endpoint_type_in_config_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "bad.toml").write_text(
        '[[listeners]]\nfilter = "tcp"\nlisten = "nope:2130"\nupstream = "127.0.0.1:1"\n'
    )
    result = twistd(tmp_path, "-n", "--pidfile=", "fwx", "--config", "bad.toml")
    assert result.returncode == 1
    assert (result.stdout + result.stderr).strip() == (
        "fwx: bad.toml: listeners[0].listen: "
        "'nope:2130' is not a server endpoint: Unknown endpoint type: 'nope'"
    )


def test_config_file_not_utf8_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "latin1.toml").write_bytes(
        '# passerelle de café\n[[listeners]]\nfilter = "tcp"\n'.encode("latin-1")
    )
    result = twistd(tmp_path, "-n", "--pidfile=", "fwx", "--config", "latin1.toml")
    assert result.returncode == 1
    assert (result.stdout + result.stderr).strip() == (
        "fwx: latin1.toml: not UTF-8 text (TOML must be): byte 0xe9 at offset 19"
    )


def test_usage_error_is_one_line_and_a_hint(tmp_path: Path) -> None:
    result = twistd(
        tmp_path,
        "-n",
        "--pidfile=",
        "fwx",
        "ftp",
        "--listen",
        "tcp:0",
        "--upstream",
        "127.0.0.1:21",
        "--idle-timeout",
        "abc",
    )
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "fwx ftp: --idle-timeout: expected seconds, got 'abc'",
        "fwx ftp: try 'twistd fwx ftp --help'",
    ]


def test_listen_port_in_use_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = twistd(
            tmp_path,
            "-n",
            "--pidfile=",
            "fwx",
            "tcp",
            "--listen",
            f"tcp:{port}:interface=127.0.0.1",
            "--upstream",
            "127.0.0.1:1",
        )
    assert result.returncode != 0
    output = (result.stdout + result.stderr).strip()
    assert "Traceback" not in output
    # twistd's log has taken stderr over by then: the line comes with a log prefix.
    line = output.splitlines()[-1]
    assert f"fwx: cannot listen on 'tcp:{port}:interface=127.0.0.1' (listener tcp-0): " in line
    assert line.endswith("Address already in use.")


def test_fwx_help_lists_the_tcp_command_and_config(tmp_path: Path) -> None:
    result = twistd(tmp_path, "fwx", "--help")
    assert result.returncode == 0
    assert "--config=" in result.stdout
    commands = result.stdout.split("Commands:", 1)[1]
    assert any(line.split()[:1] == ["tcp"] for line in commands.splitlines())


def test_tcp_help_documents_every_option(tmp_path: Path) -> None:
    result = twistd(tmp_path, "fwx", "tcp", "--help")
    assert result.returncode == 0
    options = TCPCommandOptions()
    names = [name.rstrip("=") for name in options.longOpt]
    assert {"listen", "upstream", "external-address", "no-fast-path"} <= set(names)
    for name in names:
        assert f"--{name}" in result.stdout
        if name not in ("help", "version"):
            assert options.docs.get(name), f"--{name} has no help text"


def test_help_lists_only_options_the_filter_uses(tmp_path: Path) -> None:
    ftp = twistd(tmp_path, "fwx", "ftp", "--help").stdout
    tcp = twistd(tmp_path, "fwx", "tcp", "--help").stdout
    assert "--redirect-timeout" in ftp and "--port-range" in ftp
    # Neither filter opens UDP channels; the tcp filter opens no secondary channel.
    assert "udp" not in ftp.lower() and "udp" not in tcp.lower()
    assert "--redirect-timeout" not in tcp and "--port-range" not in tcp


def test_an_external_address_of_another_machine_is_refused_at_start(tmp_path: Path) -> None:
    result = twistd(
        tmp_path,
        "-n",
        "--pidfile=",
        "fwx",
        "ftp",
        "--listen",
        "tcp:0",
        "--upstream",
        "127.0.0.1:21",
        "--external-address",
        "192.0.2.1",
    )
    assert result.returncode == 1
    assert (result.stdout + result.stderr).strip() == (
        "fwx: command line: external_addresses: cannot send from 192.0.2.1 "
        "(Cannot assign requested address): not an address of this machine?"
    )


def sessionLines(tmp_path: Path) -> list[str]:
    return [
        line
        for line in (tmp_path / "twistd.out").read_text(errors="replace").splitlines()
        if "] s" in line and ": " in line.split("] ", 1)[-1][:12]
    ]


def forwardOnce(tmp_path: Path, upstream: Upstream, data: bytes, *extra: str) -> list[str]:
    """Run `fwx tcp` (with C{extra} options), pass C{data} through once, stop it; the
    log lines of its sessions."""
    port = freePort()
    listen = f"tcp:{port}:interface=127.0.0.1"
    upstreamAt = f"127.0.0.1:{upstream.port}"
    with running(
        tmp_path, "fwx", "tcp", "--listen", listen, "--upstream", upstreamAt, *extra
    ) as process:
        waitForListener(process, port)
        assert exchange(port, data) == b"echo:" + data
    return sessionLines(tmp_path)


def test_a_session_logs_one_line_at_close(tmp_path: Path, upstream: Upstream) -> None:
    lines = [line for line in forwardOnce(tmp_path, upstream, b"counted") if "] s2: " in line]
    assert len(lines) == 1, lines
    assert "s2: 127.0.0.1:" in lines[0]
    assert (
        f"to 127.0.0.1:{upstream.port} from 127.0.0.1 (listener tcp-0) closed (normal close)"
        in lines[0]
    )
    assert "7 bytes from client, 12 from server" in lines[0]


def test_log_level_debug_adds_the_connect_lines(tmp_path: Path, upstream: Upstream) -> None:
    logged = forwardOnce(tmp_path, upstream, b"counted", "--log-level", "debug")
    lines = [line for line in logged if "] s2: " in line]
    assert [line.split("] s2: ", 1)[1].split(" ")[1:3] for line in lines[:2]] == [
        ["connected", "to"],
        [f"127.0.0.1:{upstream.port}", "connected"],
    ]
    assert "closed (normal close)" in lines[-1]


def test_log_level_warn_keeps_sessions_quiet(tmp_path: Path, upstream: Upstream) -> None:
    assert forwardOnce(tmp_path, upstream, b"quiet", "--log-level", "warn") == []


def test_a_config_file_with_workers_forwards_through_a_worker(
    tmp_path: Path, upstream: Upstream
) -> None:
    port = freePort()
    config = tmp_path / "workers.toml"
    config.write_text(
        'workers = 2\n[[listeners]]\nfilter = "tcp"\n'
        f'listen = "tcp:{port}:interface=127.0.0.1"\nupstream = "127.0.0.1:{upstream.port}"\n'
    )
    with running(tmp_path, "fwx", "--config", str(config)) as process:
        output = tmp_path / "twistd.out"
        deadline = time.monotonic() + RUN_WAIT
        while "#info worker 1] listener tcp-0" not in output.read_text(errors="replace"):
            assert process.poll() is None and time.monotonic() < deadline, "no worker listened"
            time.sleep(0.05)
        # Stopped, the gateway's own process accepts nothing: the worker must.
        process.send_signal(signal.SIGSTOP)
        try:
            assert exchange(port, b"through a worker") == b"echo:through a worker"
        finally:
            process.send_signal(signal.SIGCONT)
    assert any("worker 1] w1s1: " in line for line in output.read_text().splitlines())


def test_proxy_protocol_option_reads_the_client_from_the_header(
    tmp_path: Path, upstream: Upstream
) -> None:
    port = freePort()
    listen = f"tcp:{port}:interface=127.0.0.1"
    upstreamAt = f"127.0.0.1:{upstream.port}"
    with running(
        tmp_path, "fwx", "tcp", "--listen", listen, "--upstream", upstreamAt, "--proxy-protocol"
    ) as process:
        waitForListener(process, port)
        header = b"PROXY TCP4 192.0.2.7 198.51.100.1 40001 2121\r\n"
        assert exchange(port, header + b"proxied") == b"echo:proxied"
        # Without a header the connection is closed, nothing reaches the upstream.
        assert exchange(port, b"no header here") == b""
    lines = [line for line in sessionLines(tmp_path) if "closed (" in line]
    assert len(lines) == 1, lines
    assert ": 192.0.2.7:40001 to " in lines[0]
    log = (tmp_path / "twistd.out").read_text(errors="replace")
    assert log.count("bad PROXY protocol header: no PROXY protocol signature") == 1


class Feeder:
    """An upstream for two kinds of session, told apart by the client's first byte:
    b"F" gets C{size} bytes at a steady pace and EOF (a transfer that finishes), b"S"
    gets a byte every 0.1 s until the connection ends (one that never would)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.payload = os.urandom(size)
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(8)
        self.port: int = self.listener.getsockname()[1]
        self.threads: list[threading.Thread] = []
        accepting = threading.Thread(target=self._accept, daemon=True)
        accepting.start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                connection, _ = self.listener.accept()
                thread = threading.Thread(target=self._serve, args=(connection,), daemon=True)
                thread.start()
                self.threads.append(thread)

    def _serve(self, connection: socket.socket) -> None:
        with connection, contextlib.suppress(OSError):
            connection.settimeout(RUN_WAIT)
            kind = connection.recv(1)
            if kind == b"F":
                chunk = self.size // 20
                for offset in range(0, self.size, chunk):
                    connection.sendall(self.payload[offset : offset + chunk])
                    time.sleep(0.05)
            else:
                while True:
                    connection.sendall(b".")
                    time.sleep(0.1)

    def close(self) -> None:
        self.listener.close()


def readToEnd(sock: socket.socket) -> bytes:
    data = b""
    with contextlib.suppress(OSError):
        while chunk := sock.recv(65536):
            data += chunk
    return data


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_second_signal_ends_the_grace_at_once_and_cleanly(
    tmp_path: Path, signum: signal.Signals
) -> None:
    feeder = Feeder(2 * 1024 * 1024)
    port = freePort()
    listen = f"tcp:{port}:interface=127.0.0.1"
    try:
        with running(
            tmp_path,
            "fwx",
            "tcp",
            "--listen",
            listen,
            "--upstream",
            f"127.0.0.1:{feeder.port}",
            "--shutdown-grace",
            "30",
        ) as process:
            waitForListener(process, port)
            finishing = socket.create_connection(("127.0.0.1", port), timeout=RUN_WAIT)
            slow = socket.create_connection(("127.0.0.1", port), timeout=RUN_WAIT)
            finishing.sendall(b"F")
            slow.sendall(b"S")
            assert slow.recv(1) == b"."
            process.send_signal(signum)
            # The grace period lets the finishing transfer end, whole.
            received = readToEnd(finishing)
            finishing.close()
            assert received == feeder.payload
            assert process.poll() is None, "the gateway did not wait for the slow session"
            process.send_signal(signum)
            second = time.monotonic()
            process.wait(RUN_WAIT)
            stopped = time.monotonic() - second
            slow.settimeout(1)
            readToEnd(slow)
            slow.close()
    finally:
        feeder.close()
    assert stopped < 5, f"the second signal took {stopped:.1f} s to stop the gateway"
    output = (tmp_path / "twistd.out").read_text(errors="replace")
    assert "Traceback" not in output and "ReactorNotRunning" not in output, output
    assert "ending the shutdown grace now" in output
    # twistd ends by the first signal, as it always did.
    assert process.returncode == -signum


def test_a_download_the_server_ends_closes_normally(tmp_path: Path) -> None:
    # Large enough for the fast path: its pumps shut both sockets, and Twisted took
    # the hang-up for "lost in a non-clean fashion".
    payload = os.urandom(4 * 1024 * 1024)
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)

    def serve() -> None:
        for _ in range(2):
            with contextlib.suppress(OSError):
                connection, _ = server.accept()
                with connection:
                    connection.sendall(payload)

    threading.Thread(target=serve, daemon=True).start()
    port = freePort()
    listen = f"tcp:{port}:interface=127.0.0.1"
    upstreamAt = f"127.0.0.1:{server.getsockname()[1]}"
    try:
        with running(tmp_path, "fwx", "tcp", "--listen", listen, "--upstream", upstreamAt) as p:
            waitForListener(process=p, port=port)  # the probe is session s1
            with socket.create_connection(("127.0.0.1", port), timeout=SOCKET_WAIT) as client:
                assert readToEnd(client) == payload
            deadline = time.monotonic() + RUN_WAIT
            while not [line for line in sessionLines(tmp_path) if "] s2: " in line]:
                assert time.monotonic() < deadline, "no session line"
                time.sleep(0.05)
    finally:
        server.close()
    [line] = [line for line in sessionLines(tmp_path) if "] s2: " in line]
    assert "closed (normal close)" in line, line
    assert f"0 bytes from client, {len(payload)} from server" in line


def test_the_demo_log_holds_the_gateway_lines_not_the_embedded_server_chatter(
    tmp_path: Path,
) -> None:
    import ftplib

    port = freePort()
    with running(tmp_path, "fwx", "demo", "--listen", f"tcp:{port}:interface=127.0.0.1") as p:
        waitForListener(p, port)
        for passive in (True, False):
            with ftplib.FTP() as ftp:
                ftp.connect("127.0.0.1", port, timeout=SOCKET_WAIT)
                ftp.login()
                ftp.set_pasv(passive)
                listing: list[str] = []
                ftp.retrlines("LIST", listing.append)
                assert any("hello.txt" in entry for entry in listing)
                lines: list[bytes] = []
                ftp.retrbinary("RETR hello.txt", lines.append)
                assert b"".join(lines)
    log = (tmp_path / "twistd.out").read_text(errors="replace")
    for chatter in ("DTPFactory", "cleanupDTP", "FTP (ProtocolWrapper)", "Starting factory"):
        assert chatter not in log, log
    assert log.count("fwx_event") == 0
    assert len([line for line in log.splitlines() if "ftp download 'hello.txt'" in line]) == 2
    assert len([line for line in log.splitlines() if "closed (normal close)" in line]) >= 2
    # The demo's own lines, the gateway's, twistd's: before, the embedded server's
    # lines outnumbered them two to one.
    assert len(log.splitlines()) <= 30, log
