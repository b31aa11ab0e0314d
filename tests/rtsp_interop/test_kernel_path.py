"""`--kernel-udp` between real peers: gst-rtsp-server, ffmpeg and gst-launch through a
gateway whose UDP media the kernel carries (nftables NAT), as root."""

from __future__ import annotations

import subprocess

import pytest

from tests.peers import Gateway, requirePeer, requireRoot
from tests.rtsp_interop.support import (
    EXTERNAL,
    assertCleanLog,
    ffmpegPlay,
    gatewayUrl,
    gstPlay,
    rtspGateway,
    startRTSPServer,
    waitForSessionLines,
)

pytestmark = pytest.mark.rtsp

KERNEL = ["--kernel-udp"]


@pytest.fixture(autouse=True)
def _kernelPeers() -> None:
    requireRoot("the kernel UDP path (nftables, conntrack)")
    requirePeer("nft")


def tableExists(gateway: Gateway) -> bool:
    """Whether the gateway process's own table is in the kernel."""
    assert gateway.process is not None
    prefix = f"fwxtwisted_udp_{gateway.process.pid}_"
    return any(name.startswith(prefix) for name in ourTables())


def test_ffmpegDecodesBothTracksCarriedByTheKernelAndTheLineCountsThem() -> None:
    with startRTSPServer() as server, rtspGateway(server, KERNEL) as gateway:
        assert tableExists(gateway)
        result = ffmpegPlay(gatewayUrl(gateway), "udp", seconds=3, stream=("v", "a"))
        result.client.check()
        (line,) = waitForSessionLines(gateway, 1)
        assertCleanLog(gateway)
    assert result.perStream.get(0, 0) > 30, result.output
    assert result.perStream.get(1, 0) > 10, result.output
    assert line.transports == ["udp<->udp in the kernel"] * 2, line.text
    # The kernel's counters: at least every decoded video frame's packets, and
    # ffmpeg's receiver reports the other way.
    assert line.packetsToClient > result.perStream[0], line.text
    assert line.packetsToServer > 0 and line.dropped == 0, line.text
    # Stopping the gateway deleted its table.
    assert not tableExists(gateway)


def test_theServerSeesEveryRTCPFromTheExternalAddressOnTheAnnouncedPort() -> None:
    with startRTSPServer() as server, rtspGateway(server, KERNEL) as gateway:
        result = ffmpegPlay(gatewayUrl(gateway), "udp", seconds=2)
        result.client.check()
        setups = server.eventsNamed("setup")
        rtcp = {
            stream: server.waitFor(
                "sources", lambda e, i=stream: e["key"] == "rtcp-from" and e["stream"] == i
            )["address"]
            for stream in (0, 1)
        }
        assertCleanLog(gateway)
    assert result.frames > 15, result.output
    assert len(setups) == 2
    for setup in setups:
        assert setup["peer"][0] == EXTERNAL and setup["destination"] == EXTERNAL, setup
        ports = setup["clientPort"]
        assert ports[0] % 2 == 0 and ports[1] == ports[0] + 1, setup
        assert rtcp[setup["stream"]] == f"{EXTERNAL}:{ports[1]}", (rtcp, setup)


def test_gstLaunchPlaysToTheEndAndASecondSessionGetsItsOwnFlows() -> None:
    with startRTSPServer() as server, rtspGateway(server, KERNEL) as gateway:
        first = gstPlay(gatewayUrl(gateway), "udp", buffers=20)
        second = gstPlay(gatewayUrl(gateway), "udp", buffers=20)
        lines = waitForSessionLines(gateway, 2)
        assertCleanLog(gateway)
    for played in (first, second):
        assert played.played, played.output
        assert min(played.buffers.values()) >= 20, played.buffers
    for line in lines:
        assert line.transports == ["udp<->udp in the kernel"] * 2, line.text
        assert line.packetsToClient >= 40, line.text


def test_mediaTheKernelCarriesKeepsTheSessionAlivePastItsTimeout() -> None:
    # No RTSP message passes for 5 s (ffmpeg's keep-alive follows the server's 60 s):
    # only the media the kernel counts shows the session is alive.
    with (
        startRTSPServer() as server,
        rtspGateway(server, [*KERNEL, "--session-timeout", "0.5"]) as gateway,
    ):
        result = ffmpegPlay(gatewayUrl(gateway), "udp", seconds=5)
        (line,) = waitForSessionLines(gateway, 1)
        assertCleanLog(gateway)
    result.client.check()
    assert result.frames > 60, result.output
    assert "session timeout" not in line.reason, line.text


def test_withWorkersEachProcessKeepsItsOwnTableAndAllAreGoneAtStop() -> None:
    with startRTSPServer() as server, rtspGateway(server, [*KERNEL, "--workers", "2"]) as gateway:
        plays = [ffmpegPlay(gatewayUrl(gateway), "udp", seconds=2) for _ in range(3)]
        lines = waitForSessionLines(gateway, 3)
        running = ourTables()
        assertCleanLog(gateway)
    assert len(running) == 2, running  # the gateway's process and its worker
    for played in plays:
        played.client.check()
        assert played.frames > 15, played.output
    for line in lines:
        assert line.transports == ["udp<->udp in the kernel"] * 2, line.text
    assert ourTables() == []


def ourTables() -> list[str]:
    """The kernel UDP path's tables now in the kernel."""
    listing = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True)
    return [line.split()[-1] for line in listing.stdout.splitlines() if "fwxtwisted_udp_" in line]
