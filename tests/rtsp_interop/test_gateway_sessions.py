"""The RTSP gateway between real peers: both tracks, what the server sees, authentication,
publishing (RECORD), many sessions at once, and the session line it logs."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.rtsp_interop.support import (
    EXTERNAL,
    assertCleanLog,
    ffmpegPlay,
    ffmpegPublish,
    gatewayUrl,
    gstPlay,
    rtspGateway,
    sessionLines,
    startRTSPServer,
    waitForSessionLines,
)

pytestmark = pytest.mark.rtsp


def _ports(transport: str, name: str) -> list[int]:
    match = re.search(rf"{name}=(\d+)-(\d+)", transport)
    assert match, transport
    return [int(match.group(1)), int(match.group(2))]


def _evenPair(ports: list[int]) -> bool:
    return ports[0] % 2 == 0 and ports[1] == ports[0] + 1


def test_bothTracksDecodedAndOneSessionLine() -> None:
    with startRTSPServer() as server, rtspGateway(server) as gateway:
        result = ffmpegPlay(gatewayUrl(gateway), "udp", seconds=3, stream=("v", "a"))
        result.client.check()
        (line,) = waitForSessionLines(gateway, 1)
        assertCleanLog(gateway)
        assert len(sessionLines(gateway)) == 1
    # 3 s: 45 video frames, and PCMU audio frames (one per RTP packet) both decoded.
    assert result.perStream.get(0, 0) > 30, result.output
    assert result.perStream.get(1, 0) > 10, result.output
    assert line.tracks == 2 and line.transports == ["udp<->udp", "udp<->udp"], line.text
    assert line.packetsToClient > 0 and line.dropped == 0, line.text
    assert line.url == f"{server.url()}" and line.external == EXTERNAL, line.text


def test_serverSeesTheExternalAddressOnTheAnnouncedEvenPorts() -> None:
    with startRTSPServer() as server, rtspGateway(server) as gateway:
        result = ffmpegPlay(gatewayUrl(gateway), "udp", seconds=2, extra=["-loglevel", "trace"])
        result.client.check()
        setups = server.eventsNamed("setup")
        assert len(setups) == 2
        # ffmpeg's receiver reports (and hole punching) go to the gateway's RTCP port;
        # the server must see them come from there, on the external address.
        rtcp = {
            stream: server.waitFor(
                "sources", lambda e, i=stream: e["key"] == "rtcp-from" and e["stream"] == i
            )["address"]
            for stream in (0, 1)
        }
        connected = server.eventsNamed("connected")
        assertCleanLog(gateway)
    assert result.frames > 15, result.output
    assert [c["peer"][0] for c in connected] == [EXTERNAL]
    for setup in setups:
        assert setup["peer"][0] == EXTERNAL and setup["destination"] == EXTERNAL, setup
        assert setup["lowerTransport"] == "udp"
        ports = setup["clientPort"]
        assert ports == _ports(setup["requestTransport"], "client_port"), setup
        assert _evenPair(ports), setup
        assert rtcp[setup["stream"]] == f"{EXTERNAL}:{ports[1]}", (rtcp, setup)
    # What ffmpeg was told (its trace of the SETUP replies): its own client_port kept,
    # and the gateway's even-based pair as server_port.
    replies = re.findall(r"line='(Transport: [^']*)'", result.output)
    requests = re.findall(r"^(Transport: .*)$", result.output, re.MULTILINE)
    assert len(replies) == 2 == len(requests), result.output[-4000:]
    for request, reply in zip(requests, replies, strict=True):
        assert _ports(reply, "client_port") == _ports(request, "client_port")
        assert _evenPair(_ports(reply, "server_port")), reply
    gatewayPairs = {tuple(_ports(reply, "server_port")) for reply in replies}
    serverFacing = {tuple(setup["clientPort"]) for setup in setups}
    assert len(gatewayPairs) == 2 and len(serverFacing) == 2


@pytest.mark.parametrize("mode", ["basic", "digest"])
def test_serverAuthenticationThroughTheGateway(mode: str) -> None:
    with (
        startRTSPServer(mode, user="alice", password="s3cret") as server,
        rtspGateway(server) as gateway,
    ):
        right = ffmpegPlay(gatewayUrl(gateway, user="alice", password="s3cret"), "udp", seconds=2)
        gst = gstPlay(gatewayUrl(gateway), "tcp", buffers=5, user="alice", password="s3cret")
        wrong = ffmpegPlay(gatewayUrl(gateway, user="alice", password="wrong"), "tcp", seconds=1)
        waitForSessionLines(gateway, 3)
        assertCleanLog(gateway)
        authorizations = [
            e["headers"].get("Authorization", [""])[0] for e in server.eventsNamed("request")
        ]
    right.client.check()
    assert right.frames > 15, right.output
    assert gst.played, gst.output
    assert wrong.returncode != 0 and "401 Unauthorized" in wrong.output, wrong.output
    scheme = "Basic " if mode == "basic" else "Digest "
    assert any(a.startswith(scheme) for a in authorizations), authorizations


@pytest.mark.parametrize(
    ("transport", "policy"), [("udp", "client"), ("tcp", "client"), ("udp", "tcp")]
)
def test_ffmpegPublishesThroughTheGateway(transport: str, policy: str) -> None:
    with (
        startRTSPServer("record") as server,
        rtspGateway(server, ["--transport-policy", policy]) as gateway,
    ):
        ffmpegPublish(gatewayUrl(gateway), transport, seconds=2).check()
        received = server.waitFor("received", lambda e: e["why"] == "teardown", timeout=5)
        setups = server.eventsNamed("setup")
        (line,) = waitForSessionLines(gateway, 1)
        sources = server.eventsNamed("sources")
        assertCleanLog(gateway)
    serverSide = transport if policy == "client" else policy
    assert [s["lowerTransport"] for s in setups] == [serverSide, serverSide]
    packets = {s["stream"]: s["rtpPackets"] for s in received["streams"]}
    # 2 s of 15 frames/s MJPEG (several packets a frame) and 8 kHz PCMU (~8 packets/s).
    assert packets[0] > 30 and packets[1] > 8, received
    assert all(s["depayBuffers"] > 0 for s in received["streams"]), received
    expected = f"{transport}<->{serverSide}"
    assert line.transports == [expected, expected] and line.packetsToServer > 40, line.text
    if serverSide == "udp":
        # Symmetric RTP the other way: the publisher's RTP and RTCP reach the server from
        # the external address, on the very ports the SETUP announced as client_port.
        for setup in setups:
            low, high = setup["clientPort"]
            seen = {e["key"]: e["address"] for e in sources if e["stream"] == setup["stream"]}
            assert seen == {"rtp-from": f"{EXTERNAL}:{low}", "rtcp-from": f"{EXTERNAL}:{high}"}


SESSIONS = 20


def test_twentyConcurrentSessions() -> None:
    with startRTSPServer() as server, rtspGateway(server) as gateway:
        url = gatewayUrl(gateway)
        with ThreadPoolExecutor(SESSIONS) as pool:
            results = list(pool.map(lambda _: ffmpegPlay(url, "udp", seconds=3), range(SESSIONS)))
        lines = waitForSessionLines(gateway, SESSIONS)
        setups = server.eventsNamed("setup")
        assertCleanLog(gateway)
    for result in results:
        result.client.check()
        assert result.frames > 15, result.output
    # Each session's two tracks got their own server-facing pairs, all even-based.
    assert len(setups) == 2 * SESSIONS
    pairs = [tuple(s["clientPort"]) for s in setups]
    assert len(set(pairs)) == 2 * SESSIONS, pairs
    assert all(_evenPair(list(pair)) for pair in pairs), pairs
    assert {s["destination"] for s in setups} == {EXTERNAL}
    assert len(lines) == SESSIONS and len({line.session for line in lines}) == SESSIONS
    for line in lines:
        assert line.tracks == 2 and line.transports == ["udp<->udp"] * 2, line.text
        assert line.packetsToClient > 0, line.text
