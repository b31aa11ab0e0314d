"""What the players send on the wire, as support.py's notes say: the gateway relies on it.

Through RTSPRelay in front of the real server: ``observe`` records every datagram a player
sends to the server_port pair, ``blackhole`` also keeps all RTP from reaching the player.
"""

from __future__ import annotations

import time

import pytest

from tests.rtsp_interop.support import (
    RelayedMessage,
    RTSPRelay,
    ffmpegPlay,
    gstPlay,
    startRTSPServer,
)

pytestmark = pytest.mark.rtsp


def _requests(relay: RTSPRelay) -> list[RelayedMessage]:
    return [m for m in relay.messages if m.direction == "C->S"]


def _playTime(relay: RTSPRelay) -> float:
    return next(m.t for m in _requests(relay) if m.firstLine.startswith("PLAY "))


def test_ffmpegPunchesRtpAndRtcpAtPlay() -> None:
    with (
        startRTSPServer() as server,
        RTSPRelay(("127.0.0.1", server.port), udp="observe") as relay,
    ):
        ffmpegPlay(relay.url(), "udp", seconds=1).client.check()
        time.sleep(0.2)
    play = _playTime(relay)
    punches = [d for d in relay.datagrams if d.t < play + 0.5]
    # Per stream (2): an empty RTP packet with ssrc 0 and an empty RR with ssrc 0.
    assert sorted((d.role, d.kind, d.data.hex()) for d in punches) == [
        ("rtcp", "rtcp-RR", "80c9000100000000"),
        ("rtcp", "rtcp-RR", "80c9000100000000"),
        ("rtp", "rtp-empty", "800000000000000000000000"),
        ("rtp", "rtp-empty", "800000000000000000000000"),
    ]
    # From its own client_port pair: RTP from the even port, RTCP from the odd one.
    assert all((d.source[1] % 2 == 1) == (d.role == "rtcp") for d in punches)


def test_gstPunchesWithFillerOnTheRtpPortOnly() -> None:
    with (
        startRTSPServer() as server,
        RTSPRelay(("127.0.0.1", server.port), udp="observe") as relay,
    ):
        played = gstPlay(relay.url(), "udp", buffers=5)
    assert played.played, played.output
    play = _playTime(relay)
    punches = [d for d in relay.datagrams if d.t < play + 0.5]
    assert len(punches) == 10
    # Random filler: its first byte is random, so it is only now and then RTP version 2.
    assert {(d.role, len(d.data)) for d in punches} == {("rtp", 200)}


def test_gstFallsBackToTcpOnANewConnectionAfter5s() -> None:
    with (
        startRTSPServer() as server,
        RTSPRelay(("127.0.0.1", server.port), udp="blackhole") as relay,
    ):
        result = gstPlay(relay.url(), "udp+tcp", buffers=5)
    assert result.played, result.output
    requests = _requests(relay)
    teardown = next(m for m in requests if m.firstLine.startswith("TEARDOWN "))
    assert teardown.connection == 0
    assert 4.8 < teardown.t - _playTime(relay) < 6.0
    retried = [m for m in requests if m.connection == 1]
    assert [m.firstLine.split()[0] for m in retried[:5]] == [
        "OPTIONS",
        "DESCRIBE",
        "SETUP",
        "SETUP",
        "PLAY",
    ]
    assert b"Transport: RTP/AVP/TCP;unicast;interleaved=0-1" in retried[2].data


def test_ffmpegFallsBackToTcpOnTheSameConnectionWithATimeout() -> None:
    with (
        startRTSPServer() as server,
        RTSPRelay(("127.0.0.1", server.port), udp="blackhole") as relay,
    ):
        result = ffmpegPlay(relay.url(), None, seconds=1, extra=["-timeout", "2000000"])
    assert result.returncode == 0, result.output
    assert "UDP timeout, retrying with TCP" in result.output
    requests = _requests(relay)
    assert {m.connection for m in requests} == {0}
    pause = next(m for m in requests if m.firstLine.startswith("PAUSE "))
    assert 1.8 < pause.t - _playTime(relay) < 3.0
    after = requests[requests.index(pause) + 1 :]
    assert [m.firstLine.split()[0] for m in after[:3]] == ["SETUP", "SETUP", "PLAY"]
    assert b"interleaved=0-1" in after[0].data
