"""GatewayMetrics fed directly: the summaries it reads (rtsp.session, ftp.transfer),
whatever the log level keeps."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry

from fwxtwisted.logs import Logger, logLevel, setLogLevel
from fwxtwisted.metrics import hooks
from fwxtwisted.metrics.collect import GatewayMetrics, transferResult


@pytest.fixture
def metrics() -> Iterator[tuple[GatewayMetrics, CollectorRegistry]]:
    registry = CollectorRegistry()
    observer = GatewayMetrics(registry)
    hooks.install(observer)
    try:
        yield observer, registry
    finally:
        hooks.uninstall()


def track(transport: str, toClient: int, toServer: int) -> dict[str, object]:
    return {
        "transport": transport,
        "packets_to_client": toClient,
        "bytes_to_client": toClient * 100,
        "packets_to_server": toServer,
        "bytes_to_server": toServer * 10,
        "dropped": 0,
    }


def test_an_rtsp_session_counts_its_tracks_by_transport_and_its_media(
    metrics: tuple[GatewayMetrics, CollectorRegistry],
) -> None:
    observer, registry = metrics
    observer.summary(
        {
            "fwx_event": "rtsp.session",
            "tracks": [track("udp<->udp", 5, 2), track("tcp<->udp", 3, 1)],
            "dropped": 4,
        }
    )
    value = registry.get_sample_value
    assert value("fwx_rtsp_sessions_total") == 1
    assert value("fwx_rtsp_tracks_total", {"transport": "udp<->udp"}) == 1
    assert value("fwx_rtsp_tracks_total", {"transport": "tcp<->udp"}) == 1
    assert value("fwx_rtsp_media_packets_total", {"direction": "to_client"}) == 8
    assert value("fwx_rtsp_media_bytes_total", {"direction": "to_server"}) == 30
    assert value("fwx_rtsp_foreign_datagrams_dropped_total") == 4


@pytest.mark.parametrize(
    ("result", "label"),
    [
        ("226 Transfer complete.", "completed"),
        ("550 Failed to open file.", "failed"),
        ("426 Connection closed; transfer aborted.", "failed"),
        ("aborted: session closed", "aborted"),
        (None, "failed"),
    ],
)
def test_ftp_transfer_results(result: str | None, label: str) -> None:
    assert transferResult(result) == label


def test_summaries_are_counted_below_the_log_level(
    metrics: tuple[GatewayMetrics, CollectorRegistry],
) -> None:
    _, registry = metrics
    level = logLevel()
    setLogLevel("error")
    try:
        Logger().info(
            "{bytes}",
            fwx_event="ftp.transfer",
            direction="upload",
            bytes=1234,
            result="226 ok",
        )
    finally:
        setLogLevel(level)
    labels = {"direction": "upload", "result": "completed"}
    assert registry.get_sample_value("fwx_ftp_transfers_total", labels) == 1
    assert registry.get_sample_value("fwx_ftp_transfer_bytes_total", labels) == 1234
