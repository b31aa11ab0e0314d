"""--metrics of the FTP gateway in front of vsftpd: a download and an unused passive
port move the transfer, permission, secondary-connection and port-pool metrics by
exactly what happened."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.core.test_metrics import scrape, total, waitFor
from tests.interop.support import (
    Payloads,
    RootFactory,
    ftpGateway,
    ftplibDownload,
    ftpSession,
)
from tests.peers import Vsftpd, freePort, freePortRange

pytestmark = pytest.mark.peers


@pytest.fixture(scope="module")
def server(serverRoots: RootFactory, payloads: Payloads) -> Iterator[Vsftpd]:
    with Vsftpd(serverRoots("vsftpd-metrics", [payloads.small]), lifetime=300) as vsftpd:
        yield vsftpd


def test_ftp_transfer_and_permissions_are_counted(server: Vsftpd, payloads: Payloads) -> None:
    metricsPort = freePort()
    low, high = freePortRange(20)
    options = [
        "--upstream",
        f"127.0.0.1:{server.port}",
        "--passive-ports",
        f"{low}-{high}",
        "--redirect-timeout",
        "1",
        "--metrics",
        f"tcp:{metricsPort}:interface=127.0.0.1",
    ]
    ftp = {"filter": "ftp", "transport": "tcp"}
    passive = f"{low}-{high}"
    with ftpGateway(options) as gateway:
        host, port = gateway.address
        before = scrape(metricsPort)
        assert total(before, "fwx_port_pool_size", range=passive) == 0  # not used yet
        with ftpSession(host, port) as session:
            # A passive port nobody uses expires (--redirect-timeout 1)...
            assert session.sendcmd("PASV").startswith("227")
            waitFor(metricsPort, lambda s: total(s, "fwx_permissions_expired_total", **ftp) == 1)
            # ...then one download through a new one.
            digest, size = ftplibDownload(session, payloads.small.name)
            assert (digest, size) == (payloads.small.sha256, payloads.small.size)
            during = scrape(metricsPort)
            assert total(during, "fwx_current_sessions", filter="ftp") == 1
        after = waitFor(
            metricsPort,
            lambda s: (
                total(s, "fwx_ftp_transfers_total", direction="download", result="completed") == 1
                and total(s, "fwx_current_sessions") == 0
            ),
        )
    assert total(after, "fwx_sessions_total", filter="ftp") == 1
    assert total(after, "fwx_ftp_transfers_total") == 1
    assert total(after, "fwx_ftp_transfer_bytes_total", direction="download") == size
    assert total(after, "fwx_permissions_granted_total", **ftp) == 2
    assert total(after, "fwx_permissions_used_total", **ftp) == 1
    assert total(after, "fwx_permissions_expired_total", **ftp) == 1
    assert total(after, "fwx_permissions_refused_total") == 0
    assert total(after, "fwx_secondary_connections_total", **ftp) == 1
    # The data connection carried the file from the server (out), nothing in.
    secondary = {"filter": "ftp", "channel": "secondary", "transport": "tcp"}
    assert total(after, "fwx_bytes_out_total", **secondary) == size
    assert total(after, "fwx_bytes_in_total", **secondary) == 0
    # The control connection's bytes are there too, each way.
    assert total(after, "fwx_bytes_in_total", channel="primary", filter="ftp") > 0
    assert total(after, "fwx_bytes_out_total", channel="primary", filter="ftp") > 0
    # Both passive ports came from --passive-ports and are back.
    assert total(after, "fwx_port_pool_size", range=passive) == high - low + 1
    assert total(after, "fwx_port_pool_ports_in_use", range=passive) == 0
    assert total(after, "fwx_connect_failures_total") == 0


def test_a_port_pool_in_use_shows_while_a_permission_waits(
    server: Vsftpd, payloads: Payloads
) -> None:
    metricsPort = freePort()
    low, high = freePortRange(20)
    options = [
        "--upstream",
        f"127.0.0.1:{server.port}",
        "--passive-ports",
        f"{low}-{high}",
        "--metrics",
        f"tcp:{metricsPort}:interface=127.0.0.1",
    ]
    passive = f"{low}-{high}"
    with ftpGateway(options) as gateway, ftpSession(*gateway.address) as session:
        assert session.sendcmd("PASV").startswith("227")
        samples = waitFor(
            metricsPort, lambda s: total(s, "fwx_port_pool_ports_in_use", range=passive) == 1
        )
        assert total(samples, "fwx_port_pool_size", range=passive) == high - low + 1
        # Used, the single-use port is free again while the transfer runs on.
        ftplibDownload(session, payloads.small.name)
        deadline = time.monotonic() + 10
        while total(scrape(metricsPort), "fwx_port_pool_ports_in_use", range=passive):
            assert time.monotonic() < deadline
            time.sleep(0.05)
