"""The RTSP harness against the real server directly (no gateway): it must work before it
can judge the gateway. Every process is bounded in time; loopback only."""

from __future__ import annotations

import re

import pytest

from tests.rtsp_interop.support import (
    ffmpegFrames,
    ffmpegPlay,
    ffmpegPublish,
    ffprobeStreams,
    gstPlay,
    startRTSPServer,
)

pytestmark = pytest.mark.rtsp

TRANSPORTS = ["udp", "tcp"]


def _clientPorts(transportHeader: str) -> list[int]:
    match = re.search(r"client_port=(\d+)-(\d+)", transportHeader)
    assert match, transportHeader
    return [int(match.group(1)), int(match.group(2))]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_ffmpegGetsVideoFrames(transport: str) -> None:
    with startRTSPServer() as server:
        # 15 frames/s for 4 s is 60: more than 10 leaves room for a slow start.
        assert ffmpegFrames(server.url(), transport, seconds=4, stream="v") > 10


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_ffmpegGetsAudioFrames(transport: str) -> None:
    with startRTSPServer() as server:
        assert ffmpegFrames(server.url(), transport, seconds=2, stream="a") > 10


def test_ffprobeSeesBothTracks() -> None:
    with startRTSPServer() as server:
        streams = ffprobeStreams(server.url(), "tcp")
    assert [(s["codec_type"], s["codec_name"]) for s in streams] == [
        ("video", "mjpeg"),
        ("audio", "pcm_mulaw"),
    ]


@pytest.mark.parametrize("protocols", TRANSPORTS)
def test_gstLaunchEndsByItselfWithBuffersCounted(protocols: str) -> None:
    with startRTSPServer() as server:
        result = gstPlay(server.url(), protocols, buffers=20)
        teardown = server.waitFor("teardown", timeout=5)
    assert result.played, result.output
    assert result.buffers == {"v": 20, "a": 20}
    # Notifications are approximate (see GstResult.seen): some, about 20.
    assert 0 < result.seen["v"] <= 21 and 0 < result.seen["a"] <= 21
    assert teardown["peer"][0] == "127.0.0.1"


@pytest.mark.parametrize("mode", ["basic", "digest"])
def test_rightCredentialsPlay(mode: str) -> None:
    with startRTSPServer(mode, user="alice", password="s3cret") as server:
        assert ffmpegFrames(server.url("alice", "s3cret"), "tcp", seconds=2) > 5
        result = gstPlay(server.url(), "tcp", buffers=5, user="alice", password="s3cret")
    assert result.played, result.output


@pytest.mark.parametrize("mode", ["basic", "digest"])
def test_wrongCredentialsGet401(mode: str) -> None:
    with startRTSPServer(mode, user="alice", password="s3cret") as server:
        ffmpeg = ffmpegPlay(server.url("alice", "wrong"), "tcp", seconds=1)
        anonymous = ffmpegPlay(server.url(), "tcp", seconds=1)
        gst = gstPlay(server.url(), "tcp", buffers=5, user="alice", password="wrong")
    assert ffmpeg.returncode != 0 and "401 Unauthorized" in ffmpeg.output, ffmpeg.output
    assert anonymous.returncode != 0 and "401 Unauthorized" in anonymous.output
    assert gst.returncode != 0 and "Unauthorized (401)" in gst.output, gst.output


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_ffmpegPublishesToRecordMode(transport: str) -> None:
    with startRTSPServer("record") as server:
        ffmpegPublish(server.url(), transport, seconds=2).check()
        received = server.waitFor("received", lambda e: e["why"] == "teardown", timeout=5)
        setups = server.eventsNamed("setup")
    assert [s["lowerTransport"] for s in setups] == [transport, transport]
    packets = {s["stream"]: s["rtpPackets"] for s in received["streams"]}
    # 2 s of 15 frames/s MJPEG (several packets a frame) and 8 kHz PCMU (~8 packets/s).
    assert packets[0] > 30, received
    assert packets[1] > 8, received
    assert all(s["depayBuffers"] > 0 for s in received["streams"]), received


def test_reportedClientPortIsWhatThePlayerAsked() -> None:
    with startRTSPServer() as server:
        ffmpegFrames(server.url(), "udp", seconds=1)
        played = gstPlay(server.url(), "udp", buffers=5)
        assert played.played, played.output
        setups = server.eventsNamed("setup")
    assert len(setups) == 4
    for setup in setups:
        assert setup["lowerTransport"] == "udp"
        assert setup["clientPort"] == _clientPorts(setup["requestTransport"])
        assert setup["destination"] == "127.0.0.1" == setup["peer"][0]
        low, high = setup["serverPort"]
        assert high == low + 1 and low % 2 == 0


def test_serverSeesPlayerRtcpFromItsClientPort() -> None:
    # ffmpeg sends an RTCP receiver report (and hole-punching packets) from client_port+1.
    with startRTSPServer() as server:
        ffmpegFrames(server.url(), "udp", seconds=2)
        setups = server.eventsNamed("setup")
        rtcp = server.waitFor("sources", lambda e: e["key"] == "rtcp-from", timeout=5)
    expected = {f"127.0.0.1:{s['clientPort'][1]}" for s in setups}
    assert rtcp["address"] in expected
