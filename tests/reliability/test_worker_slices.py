"""--worker-sockets reuseport in front of vsftpd: each process binds its passive
(permission) ports only in its own slice of the port range, and the port-pool gauges
still name the whole range."""

from __future__ import annotations

import re
import urllib.request

from tests.interop.support import ftpGateway, ftpSession, gatewayLog, waitForLog
from tests.peers import freePort, freePortRange
from tests.reliability.conftest import Upstream

START = 15.0
SESSIONS = 24


def _epsvPort(reply: str) -> int:
    match = re.search(r"\(\|\|\|(\d+)\|\)", reply)
    assert match, reply
    return int(match.group(1))


def test_eachProcessBindsItsPassivePortsInItsOwnSliceOfTheRange(upstream: Upstream) -> None:
    low, high = freePortRange(40)
    metrics = freePort()
    options = [
        "--upstream",
        upstream.address,
        "--workers",
        "2",
        "--worker-sockets",
        "reuseport",
        "--port-range",
        f"{low}-{high}",
        "--metrics",
        f"tcp:{metrics}:interface=127.0.0.1",
    ]
    with ftpGateway(options) as gateway:
        waitForLog(gateway, r"#info worker 1\] listener ", timeout=START)
        host, port = gateway.address
        # The client port of each session, and the passive port it was given.
        given: dict[int, int] = {}
        for _ in range(SESSIONS):
            with ftpSession(host, port) as ftp:
                clientPort = ftp.sock.getsockname()[1]
                given[clientPort] = _epsvPort(ftp.sendcmd("EPSV"))
        for clientPort in given:
            waitForLog(gateway, rf"s\d+: 127\.0\.0\.1:{clientPort} .* closed", timeout=10.0)
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics", timeout=10) as reply:
            scraped = reply.read().decode()
        log = gatewayLog(gateway)
    half = low + (high - low + 1) // 2
    slices = {"s": (low, half - 1), "w1s": (half, high)}
    served = {"s": 0, "w1s": 0}
    for clientPort, passive in given.items():
        match = re.search(rf"\b(w1s|s)\d+: 127\.0\.0\.1:{clientPort} ", log)
        assert match, clientPort
        process = match.group(1)
        served[process] += 1
        first, last = slices[process]
        assert first <= passive <= last, (process, passive, slices)
    # The kernel spread the sessions over both processes' sockets.
    assert served["s"] and served["w1s"], served
    # Each process holds its slice; the gauges name (and size) the whole range.
    label = f'range="{low}-{high}"'
    assert f"fwx_port_pool_size{{{label}}} {float(high - low + 1)}" in scraped
    assert f"fwx_port_pool_ports_in_use{{{label}}} 0.0" in scraped
