"""twistd fwx rtsp --transparent between three namespaces (root; see netns.py):
gst-rtsp-server (tests/rtsp_interop/gst_server.py) in the server namespace, ffmpeg in
the client namespace playing the server's own URL.

The gateway takes the control connection (examples/transparent.nft redirects port
7000) and connects to the server from its WAN address.  Media is interleaved only: a
UDP SETUP is answered 461.  Measured here (ffmpeg 5.1, GStreamer 1.22): ffmpeg with its
default transports and rtspsrc protocols=udp+tcp retry the SETUP interleaved at once, on
the same connection; ffmpeg -rtsp_transport udp ends ("Protocol not supported", exit 1).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.peers import requirePeer
from tests.rtsp_interop.support import (
    RTSPServer,
    ffmpegPlay,
    gstPlay,
    requireGstServer,
    startRTSPServer,
)
from tests.transparent.netns import (
    CLIENT4,
    GATEWAY_WAN4,
    INTERCEPTED_PORT,
    LISTEN_PORT,
    SERVER4,
    Namespaces,
    NetnsProcess,
    namespaces,
    twistd,
)

READY = "allowFutureConnect: nftables table"
URL = f"rtsp://{SERVER4}:{INTERCEPTED_PORT}/test"


@pytest.fixture(scope="module")
def ns() -> Iterator[Namespaces]:
    requirePeer("ffmpeg")
    requireGstServer()
    with namespaces("r") as made:
        yield made


@pytest.fixture(scope="module")
def server(ns: Namespaces) -> Iterator[RTSPServer]:
    with startRTSPServer(
        host=SERVER4,
        port=INTERCEPTED_PORT,
        lifetime=120,
        wrapper=["ip", "netns", "exec", ns.server],
    ) as running:
        yield running


@pytest.fixture(scope="module")
def gateway(ns: Namespaces, server: RTSPServer) -> Iterator[NetnsProcess]:
    argv = twistd("rtsp", "--listen", f"tcp6:{LISTEN_PORT}", "--transparent",
                  "--external-address", GATEWAY_WAN4)  # fmt: skip
    with NetnsProcess(ns.gateway, argv, "gateway").start() as process:
        process.waitFor(READY)
        yield process


def play(ns: Namespaces, transport: str | None) -> int:
    result = ffmpegPlay(URL, transport, seconds=2.0, wrapper=["ip", "netns", "exec", ns.client])
    assert result.returncode == 0, result.output[-3000:]
    return result.frames


def newSetups(server: RTSPServer, before: int) -> list[str]:
    """The lower transports of the SETUPs the server handled after the first C{before}."""
    return [str(event.get("lowerTransport")) for event in server.eventsNamed("setup")[before:]]


def test_interleaved_play(ns: Namespaces, server: RTSPServer, gateway: NetnsProcess) -> None:
    frames = play(ns, "tcp")
    assert frames > 10, gateway.log()
    peers = {tuple(event["peer"])[0] for event in server.eventsNamed("connected")}
    assert peers == {GATEWAY_WAN4}  # the gateway's, not the client's
    assert CLIENT4 not in {event["peer"][0] for event in server.eventsNamed("request")}


def test_default_transports_fall_back_to_interleaved(
    ns: Namespaces, server: RTSPServer, gateway: NetnsProcess
) -> None:
    before = len(server.eventsNamed("setup"))
    frames = play(ns, None)
    assert frames > 10, gateway.log()
    assert "SETUP refused: 461 only interleaved transports" in gateway.log()
    # The server saw only the interleaved SETUPs: the UDP one never left the gateway.
    assert newSetups(server, before) == ["tcp", "tcp"]


def test_gst_udp_then_tcp_falls_back(
    ns: Namespaces, server: RTSPServer, gateway: NetnsProcess
) -> None:
    requirePeer("gst-launch-1.0")
    before, refusals = len(server.eventsNamed("setup")), gateway.log().count(" 461 ")
    result = gstPlay(URL, "udp+tcp", 20, wrapper=["ip", "netns", "exec", ns.client])
    assert result.played, result.output[-3000:]
    assert gateway.log().count(" 461 ") == refusals + 1
    assert newSetups(server, before) == ["tcp", "tcp"]


def test_udp_only_player_gives_up(
    ns: Namespaces, server: RTSPServer, gateway: NetnsProcess
) -> None:
    before = len(server.eventsNamed("setup"))
    result = ffmpegPlay(URL, "udp", seconds=2.0, wrapper=["ip", "netns", "exec", ns.client])
    assert result.returncode != 0 and result.frames == 0
    assert "461 Unsupported transport" in result.output
    assert newSetups(server, before) == []
