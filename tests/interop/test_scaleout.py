"""Scale-out with real parts: HAProxy (tcp mode, send-proxy-v2) balancing the control
port of three `twistd fwx ftp` instances in front of one vsftpd.

Each instance listens on its own loopback address (127.0.0.11-13), advertises it in 227
replies and leaves toward the server from its own external address (127.0.0.21-23).
Clients are curl processes bound to real-client addresses 127.0.0.31-38; HAProxy
connects to the instances from 127.0.0.5. The balancer carries control connections
only: data connections go from the client straight to the instance holding its control
connection (passive), or from that instance to the client (active).

HAProxy runs examples/deploy/haproxy.cfg itself, with its values from the environment,
plus one more frontend for the per-IP limit test.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import ftplib
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.interop.support import gatewayLog, listenEndpoint
from tests.peers import (
    PROJECT_ROOT,
    ClientResult,
    Gateway,
    Vsftpd,
    _Managed,
    curl,
    freePort,
    freePortRange,
    isListening,
    makeFile,
    requirePeer,
    runGateway,
    sha256File,
)

pytestmark = [pytest.mark.peers, pytest.mark.scaleout]

TEMPLATE = PROJECT_ROOT / "examples" / "deploy" / "haproxy.cfg"
BALANCER_SOURCE = "127.0.0.5"
VIP = "127.0.0.1"
ADVERTISE = ("127.0.0.11", "127.0.0.12", "127.0.0.13")
EXTERNAL = ("127.0.0.21", "127.0.0.22", "127.0.0.23")
CLIENTS = tuple(f"127.0.0.{31 + i}" for i in range(8))
LIMITED = "127.0.0.14"

SESSIONS = 200
CONCURRENCY = 16
FILE_SIZE = 256 * 1024
LIFETIME = 180.0
SOCKET_TIMEOUT = 10.0

LIMIT_SECTION = """
frontend ftp_limited
    bind "${FWX_VIP}:${FWX_LIMITED_PORT}"
    default_backend fwx_limited

backend fwx_limited
    server limited "${FWX_LIMITED}" send-proxy-v2 source "${FWX_SOURCE}"
"""


class HAProxy(_Managed):
    """`haproxy -db -f FILE` in the foreground, values from the environment."""

    name = "haproxy"

    def __init__(self, config: str, env: dict[str, str]) -> None:
        super().__init__(LIFETIME)
        self.binary = requirePeer("haproxy")
        self.config = config
        self.env = env

    def start(self, listen: list[tuple[str, int]]) -> HAProxy:
        logDir = self._makeLogDir()
        path = logDir / "haproxy.cfg"
        path.write_text(self.config)
        process = self._spawn(
            [self.binary, "-db", "-f", str(path)], env={**os.environ, **self.env}, cwd=logDir
        )
        deadline = time.monotonic() + 10
        while not all(isListening(host, port) for host, port in listen):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"haproxy did not start:\n{self.log()}")
            time.sleep(0.05)
        return self


@dataclass
class Cluster:
    vsftpd: Vsftpd
    gateways: list[Gateway]
    passiveRanges: list[tuple[int, int]]
    limited: Gateway
    haproxy: HAProxy
    port: int
    limitedPort: int
    sha256: str


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    requirePeer("curl")
    # Not under pytest's 0700 temp dir: vsftpd's unprivileged side must reach it.
    root = Path(tempfile.mkdtemp(prefix="fwx-scaleout-"))
    root.chmod(0o755)
    sha256 = makeFile(root / "f000.bin", FILE_SIZE, seed=7)
    for i in range(1, SESSIONS):
        os.link(root / "f000.bin", root / f"f{i:03d}.bin")
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, root, True)
        vsftpd = stack.enter_context(Vsftpd(root, pasvPorts=freePortRange(60), lifetime=LIFETIME))
        server = f"{vsftpd.host}:{vsftpd.port}"
        gateways, ranges, env = [], [], {}
        for index, (advertise, external) in enumerate(zip(ADVERTISE, EXTERNAL, strict=True)):
            port = freePort(advertise)
            passive = freePortRange(40, advertise)
            argv = [
                "ftp",
                "--listen",
                listenEndpoint(advertise, port),
                "--upstream",
                server,
                "--proxy-protocol",
                "--advertise-address",
                advertise,
                "--external-address",
                external,
                "--passive-ports",
                f"{passive[0]}-{passive[1]}",
            ]
            gateways.append(
                stack.enter_context(runGateway(argv, (advertise, port), lifetime=LIFETIME))
            )
            ranges.append(passive)
            env[f"FWX_GW{index + 1}"] = f"{advertise}:{port}"
        limitedPort = freePort(LIMITED)
        limited = stack.enter_context(
            runGateway(
                [
                    "ftp",
                    "--listen",
                    listenEndpoint(LIMITED, limitedPort),
                    "--upstream",
                    server,
                    "--proxy-protocol",
                    "--max-sessions-per-ip",
                    "1",
                ],
                (LIMITED, limitedPort),
                lifetime=LIFETIME,
            )
        )
        port, otherPort = freePort(VIP), freePort(VIP)
        env.update(
            FWX_VIP=VIP,
            FWX_CONTROL_PORT=str(port),
            FWX_LIMITED_PORT=str(otherPort),
            FWX_LIMITED=f"{LIMITED}:{limitedPort}",
            FWX_SOURCE=BALANCER_SOURCE,
        )
        haproxy = stack.enter_context(
            HAProxy(TEMPLATE.read_text() + LIMIT_SECTION, env).start(
                [(VIP, port), (VIP, otherPort)]
            )
        )
        yield Cluster(vsftpd, gateways, ranges, limited, haproxy, port, otherPort, sha256)


MODES = {
    "PASV": ("--disable-epsv", "--no-ftp-skip-pasv-ip"),
    "PORT": ("-P", "{client}", "--disable-eprt"),
    "EPRT": ("-P", "{client}"),
}

_PASV_REPLY = re.compile(r"^< 227 .*\((\d+),(\d+),(\d+),(\d+),(\d+),(\d+)\)", re.MULTILINE)


@dataclass
class Run:
    index: int
    client: str
    mode: str
    result: ClientResult
    sha256: str


def download(cluster: Cluster, index: int, out: Path) -> Run:
    client = CLIENTS[index % len(CLIENTS)]
    mode = list(MODES)[index % len(MODES)]
    options = [option.format(client=client) for option in MODES[mode]]
    target = out / f"{index:03d}.bin"
    result = curl(
        [
            "-v",
            "--interface",
            client,
            *options,
            "-o",
            str(target),
            f"ftp://{VIP}:{cluster.port}/f{index:03d}.bin",
        ],
        timeout=60,
    )
    digest = sha256File(target) if result.ok and target.exists() else ""
    target.unlink(missing_ok=True)
    return Run(index, client, mode, result, digest)


#: s5: ftp download 'f016.bin' 262144 bytes in 0.032 s: 226 Transfer complete.
#: (client 127.0.0.31:44136, user anonymous, server 127.0.0.1:57171, from 127.0.0.22)
_TRANSFER = re.compile(r"download '(f\d{3}\.bin)' .*: 226 .*\(client ([\d.]+):\d+,")


def test_200_sessions_through_haproxy_land_on_one_instance_each(
    cluster: Cluster, tmp_path: Path
) -> None:
    began = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(CONCURRENCY) as pool:
        runs = list(pool.map(lambda i: download(cluster, i, tmp_path), range(SESSIONS)))
    elapsed = time.monotonic() - began
    failed = [run for run in runs if not run.result.ok or run.sha256 != cluster.sha256]
    assert not failed, f"{len(failed)} sessions failed; first:\n{failed[0].result}"

    # Which instance carried each session: the one that logged its transfer.
    time.sleep(0.5)
    holder: dict[str, int] = {}
    clientOf: dict[str, str] = {}
    logs = [gatewayLog(gateway) for gateway in cluster.gateways]
    for instance, text in enumerate(logs):
        for match in _TRANSFER.finditer(text):
            name, client = match.groups()
            assert holder.setdefault(name, instance) == instance, match.group(0)
            clientOf[name] = client
    missing = [i for i in range(SESSIONS) if f"f{i:03d}.bin" not in holder]
    assert not missing, f"no instance logged the transfers of sessions {missing[:10]}"
    for run in runs:
        name = f"f{run.index:03d}.bin"
        instance = holder[name]
        # The instance saw the real client (from the PROXY header), not the balancer.
        assert clientOf[name] == run.client, (run.index, clientOf[name])
        if run.mode == "PASV":
            replied = _PASV_REPLY.search(run.result.stderr)
            assert replied, run.result
            host = ".".join(replied.groups()[:4])
            port = int(replied.group(5)) * 256 + int(replied.group(6))
            low, high = cluster.passiveRanges[instance]
            assert host == ADVERTISE[instance] and low <= port <= high, (run.index, host, port)
    perInstance = [list(holder.values()).count(i) for i in range(len(cluster.gateways))]
    assert min(perInstance) >= SESSIONS // 10, perInstance
    for text in logs:
        assert "Traceback" not in text
    print(
        f"\n{SESSIONS} sessions ({CONCURRENCY} at a time, PASV/PORT/EPRT) in {elapsed:.1f} s; "
        f"per instance {perInstance}"
    )


def greeting(port: int, source: str) -> tuple[socket.socket, bytes]:
    sock = socket.create_connection((VIP, port), SOCKET_TIMEOUT, (source, 0))
    line = b""
    while not line.endswith(b"\r\n"):
        chunk = sock.recv(1024)
        if not chunk:
            break
        line += chunk
    return sock, line


def test_per_ip_limit_sees_the_real_clients(cluster: Cluster) -> None:
    first, hello = greeting(cluster.limitedPort, "127.0.0.41")
    try:
        assert hello.startswith(b"220"), hello
        second, refused = greeting(cluster.limitedPort, "127.0.0.41")
        second.close()
        assert refused.startswith(b"421") and b"from 127.0.0.41" in refused, refused
        other, welcome = greeting(cluster.limitedPort, "127.0.0.42")
        other.close()
        assert welcome.startswith(b"220"), welcome
    finally:
        first.close()
    text = gatewayLog(cluster.limited)
    assert "too many sessions (1) from 127.0.0.41" in text
    assert BALANCER_SOURCE not in text.split("refused", 1)[-1].splitlines()[0]


def test_port_must_name_the_real_client_not_the_balancer(cluster: Cluster) -> None:
    client = "127.0.0.43"
    ftp = ftplib.FTP(timeout=SOCKET_TIMEOUT, source_address=(client, 0))
    try:
        ftp.connect(VIP, cluster.port)
        ftp.login()
        for balancer in (BALANCER_SOURCE, VIP):
            with pytest.raises(ftplib.error_perm, match="500 Illegal PORT command"):
                ftp.sendcmd(f"PORT {balancer.replace('.', ',')},200,10")
        assert ftp.sendcmd(f"PORT {client.replace('.', ',')},200,10").startswith("200")
    finally:
        ftp.close()
