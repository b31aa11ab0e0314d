"""The rtsp filter on a transparent listener: interleaved SETUPs pass as in reverse mode,
UDP ones are answered 461 with nothing forwarded or opened; its options and command."""

from __future__ import annotations

import pytest
from twisted.python import usage

from fwxtwisted.app.build import buildService
from fwxtwisted.app.config import parseConfig
from fwxtwisted.errors import ConfigError
from fwxtwisted.filters.rtsp.filter import RTSPCommandOptions, rtspFilter
from fwxtwisted.filters.rtsp.message import InterleavedFrame
from fwxtwisted.filters.rtsp.options import RTSPOptions, TransportPolicy
from fwxtwisted.testing import DEFAULT_UPSTREAM, FakeSession
from tests.rtsp.gateway import request, response

#: The player believes it talks to the server: its URLs name the original destination.
SERVER_URL = f"rtsp://{DEFAULT_UPSTREAM.host}:{DEFAULT_UPSTREAM.port}/test"


def transparent(**options: object) -> FakeSession:
    """A transparent session, its server (the original destination) connected."""
    session = FakeSession.forFilter(rtspFilter, options, transparent=True, autoGrant=True)
    session.succeedUpstream()
    return session


def setup(session: FakeSession, transport: str, cseq: int = 1) -> None:
    session.clientSends(request("SETUP", f"{SERVER_URL}/stream=0", cseq, f"Transport: {transport}"))


@pytest.mark.parametrize("policy", ["client", "tcp"])
@pytest.mark.parametrize(
    "transport",
    [
        "RTP/AVP;unicast;client_port=5000-5001",
        "RTP/AVP/UDP;unicast;client_port=5000-5001",
        "RTP/AVP;multicast",
        "RTP/AVP;unicast;client_port=5000-5001,RTP/AVP;unicast;client_port=5002-5003",
    ],
)
def test_udp_setup_is_461_and_nothing_is_forwarded_or_opened(policy: str, transport: str) -> None:
    session = transparent(transport_policy=policy)
    setup(session, transport, cseq=3)
    assert session.toServer == b""
    head = session.toClient.decode()
    assert head.startswith("RTSP/1.0 461 Unsupported transport\r\n"), head
    assert "CSeq: 3\r\n" in head
    assert "X-Gateway-Reason: only interleaved transports (RTP/AVP/TCP)" in head
    assert session.datagramPorts == []
    assert session.redirectCalls == [] and session.joinCalls == []
    assert session.allowCalls == []
    assert not session.closed  # the player may retry interleaved on the same connection


def test_interleaved_setup_passes_and_frames_flow() -> None:
    session = transparent()
    setup(session, "RTP/AVP/TCP;unicast;interleaved=0-1")
    assert session.toServer == request(
        "SETUP", f"{SERVER_URL}/stream=0", 1, "Transport: RTP/AVP/TCP;unicast;interleaved=0-1"
    )
    reply = response(1, "Transport: RTP/AVP/TCP;unicast;interleaved=0-1", "Session: abc")
    session.serverSends(reply)
    assert session.toClient == reply
    session.serverSends(InterleavedFrame(0, b"rtp").serialize())
    assert session.toClient.endswith(InterleavedFrame(0, b"rtp").serialize())
    session.clientSends(InterleavedFrame(1, b"rtcp").serialize())
    assert session.toServer.endswith(InterleavedFrame(1, b"rtcp").serialize())
    assert session.datagramPorts == [] and session.redirectCalls == []


def test_the_interleaved_offer_is_relayed_when_udp_comes_first() -> None:
    session = transparent()
    setup(session, "RTP/AVP;unicast;client_port=5000-5001,RTP/AVP/TCP;unicast;interleaved=0-1")
    assert b"Transport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n" in session.toServer
    assert b"client_port" not in session.toServer
    assert session.datagramPorts == []


def test_a_retry_after_461_passes() -> None:
    """What ffmpeg does with its default transports: UDP, 461, then interleaved."""
    session = transparent()
    setup(session, "RTP/AVP/UDP;unicast;client_port=5000-5001", cseq=3)
    setup(session, "RTP/AVP/TCP;unicast;interleaved=0-1", cseq=4)
    assert session.toServer.startswith(b"SETUP ")
    assert b"CSeq: 4\r\n" in session.toServer and b"CSeq: 3" not in session.toServer


def test_urls_naming_the_server_are_unchanged_both_ways() -> None:
    session = transparent()
    describe = request("DESCRIBE", SERVER_URL, 2, "Accept: application/sdp")
    session.clientSends(describe)
    assert session.toServer == describe
    sdp = f"v=0\r\na=control:{SERVER_URL}/\r\nm=video 0 RTP/AVP 26\r\na=control:stream=0\r\n"
    reply = response(
        2,
        "Content-Type: application/sdp",
        f"Content-Base: {SERVER_URL}/",
        body=sdp.encode(),
    )
    session.serverSends(reply)
    assert session.toClient == reply


def test_transparent_options() -> None:
    options = rtspFilter.parseTransparentOptions({"transport_policy": "tcp"})
    assert isinstance(options, RTSPOptions)
    assert options.transparent and options.transportPolicy is TransportPolicy.TCP
    reverse = rtspFilter.parseOptions({}, DEFAULT_UPSTREAM)
    assert isinstance(reverse, RTSPOptions) and not reverse.transparent


@pytest.mark.parametrize(
    "keys,message",
    [
        ({"transport_policy": "udp"}, 'transport_policy: "udp" not on a transparent listener'),
        ({"allow_multicast": True}, "allow_multicast: not on a transparent listener"),
        ({"transport_policy": "sctp"}, "transport_policy: 'sctp' is not one of"),
        ({"transparent": True}, "transparent: not an option of the rtsp filter"),
    ],
)
def test_bad_transparent_options_are_config_errors(keys: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        rtspFilter.parseTransparentOptions(keys)


def test_without_an_upstream_no_session() -> None:
    options = rtspFilter.parseTransparentOptions({})
    with pytest.raises(ConfigError, match="needs an upstream"):
        FakeSession(options=options, defaultUpstream=None).attachFilter(rtspFilter)


def test_command_transparent() -> None:
    command = RTSPCommandOptions()
    command.parseOptions(["--listen", "tcp6:8070", "--transparent",
                          "--allow-destination", "203.0.113.0/24:554"])  # fmt: skip
    table = command.listenerConfig()
    assert table["transparent"] is True
    assert table["allow_destinations"] == ["203.0.113.0/24:554"]
    assert "upstream" not in table


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--transparent", "--upstream", "203.0.113.2:554"], "not both"),
        ([], "--upstream HOST:PORT (or --transparent) is required"),
        (["--upstream", "203.0.113.2:554", "--allow-destination", "0.0.0.0/0"], "--transparent"),
    ],
)
def test_command_errors(argv: list[str], message: str) -> None:
    with pytest.raises(usage.UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        RTSPCommandOptions().parseOptions(["--listen", "tcp:8070", *argv])


def rtspListener(**keys: object) -> dict[str, object]:
    listener = {"filter": "rtsp", "listen": "tcp:0", "transparent": True, **keys}
    return {"listeners": [listener]}


def test_config_file_transparent_listener() -> None:
    buildService(parseConfig(rtspListener(transport_policy="tcp"), "t"), {"rtsp": rtspFilter})


def test_config_file_udp_policy_refused_with_the_listener_named() -> None:
    config = parseConfig(rtspListener(transport_policy="udp"), "t")
    with pytest.raises(ConfigError, match=r'listeners\[0\]\.transport_policy: "udp" not on'):
        buildService(config, {"rtsp": rtspFilter})
