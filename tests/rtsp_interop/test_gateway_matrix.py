"""Real players through the RTSP gateway to gst-rtsp-server: every player, client transport
and --transport-policy, decoded end to end. One server and one gateway per policy."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.peers import Gateway
from tests.rtsp_interop.support import (
    EXTERNAL,
    RTSPServer,
    assertCleanLog,
    ffmpegPlay,
    gatewayUrl,
    gstPlay,
    rtspGateway,
    sessionLines,
    startRTSPServer,
    waitForSessionLines,
)

pytestmark = pytest.mark.rtsp

POLICIES = ["client", "udp", "tcp"]
TRANSPORTS = ["udp", "tcp"]
SECONDS = 3
"""Media each ffmpeg run reads: 15 frames/s, so 45 frames when none is lost."""
MIN_FRAMES = 30
BUFFERS = 20
"""Buffers each gst-launch sink waits for (video 15/s, audio ~8/s: 1.3 to 2.5 s)."""


@pytest.fixture(scope="module", params=POLICIES)
def policyGateway(request: pytest.FixtureRequest) -> Iterator[tuple[str, RTSPServer, Gateway]]:
    policy: str = request.param
    with (
        startRTSPServer(lifetime=90) as server,
        rtspGateway(server, ["--transport-policy", policy], lifetime=90) as gateway,
    ):
        yield policy, server, gateway


def _serverSide(policy: str, transport: str) -> str:
    return transport if policy == "client" else policy


def _checkSession(gateway: Gateway, before: int, transport: str, policy: str) -> None:
    """The run left exactly one new rtsp.session line, with the transports it must have."""
    lines = waitForSessionLines(gateway, before + 1)
    assert len(lines) == before + 1, [line.text for line in lines]
    line = lines[-1]
    expected = f"{transport}<->{_serverSide(policy, transport)}"
    assert line.tracks == 2 and line.transports == [expected, expected], line.text
    assert line.packetsToClient > 0 and line.external == EXTERNAL, line.text
    assertCleanLog(gateway)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_ffmpegDecodesVideo(policyGateway: tuple[str, RTSPServer, Gateway], transport: str) -> None:
    policy, server, gateway = policyGateway
    before = len(sessionLines(gateway))
    result = ffmpegPlay(gatewayUrl(gateway), transport, seconds=SECONDS)
    result.client.check()
    assert result.frames > MIN_FRAMES, result.output
    _checkSession(gateway, before, transport, policy)
    setups = server.eventsNamed("setup")[-2:]
    assert [s["lowerTransport"] for s in setups] == [_serverSide(policy, transport)] * 2


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_gstLaunchDecodesVideoAndAudio(
    policyGateway: tuple[str, RTSPServer, Gateway], transport: str
) -> None:
    policy, server, gateway = policyGateway
    before = len(sessionLines(gateway))
    result = gstPlay(gatewayUrl(gateway), transport, buffers=BUFFERS)
    assert result.played, result.output
    # EOS with num-buffers: each sink got every one of its buffers, decoded.
    assert result.buffers == {"v": BUFFERS, "a": BUFFERS}, result.output
    assert result.seen["v"] > 0 and result.seen["a"] > 0, result.output
    _checkSession(gateway, before, transport, policy)
    setups = server.eventsNamed("setup")[-2:]
    assert [s["lowerTransport"] for s in setups] == [_serverSide(policy, transport)] * 2
