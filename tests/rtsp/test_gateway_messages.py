"""The rtsp filter on real sockets: methods, CSeq order, URLs both ways, hostile input."""

from __future__ import annotations

import pytest_twisted

from fwxtwisted.filters.rtsp.message import InterleavedFrame, Request
from fwxtwisted.filters.rtsp.parser import Role
from tests.core.support import Network, net, within
from tests.rtsp.gateway import asResponse, readMessages, request, response, scene

__all__ = ["net"]

SDP = (
    b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=test\r\nt=0 0\r\n"
    b"m=video 0 RTP/AVP 26\r\na=control:{server}/test/stream=0\r\n"
)

METHODS = (
    "OPTIONS",
    "DESCRIBE",
    "ANNOUNCE",
    "SETUP",
    "PLAY",
    "PAUSE",
    "RECORD",
    "TEARDOWN",
    "GET_PARAMETER",
    "SET_PARAMETER",
    "REDIRECT",
)


@pytest_twisted.ensureDeferred
async def test_the_request_uri_names_the_server(net: Network) -> None:
    s = await scene(net)
    s.client.send(request("OPTIONS", f"{s.gatewayURL}/test", 1))
    (forwarded,) = await readMessages(s.server, 1, Role.CLIENT)
    assert isinstance(forwarded, Request)
    assert forwarded.uri == f"{s.serverURL}/test"


@pytest_twisted.ensureDeferred
async def test_every_method_passes(net: Network) -> None:
    s = await scene(net)
    for cseq, method in enumerate(METHODS, 1):
        if method == "SETUP":
            continue  # its transport is the subject of other tests
        s.client.send(request(method, f"{s.gatewayURL}/test", cseq))
    events = await readMessages(s.server, len(METHODS) - 1, Role.CLIENT)
    assert [e.method for e in events] == [m for m in METHODS if m != "SETUP"]  # type: ignore[attr-defined]


@pytest_twisted.ensureDeferred
async def test_pipelined_responses_keep_request_order(net: Network) -> None:
    s = await scene(net)
    s.client.send(
        request("OPTIONS", f"{s.gatewayURL}/test", 1)
        + request(
            "SETUP",
            f"{s.gatewayURL}/test/stream=0",
            2,
            "Transport: RTP/AVP;unicast;client_port=5000-5001;destination=192.0.2.7",
        )
        + request("GET_PARAMETER", f"{s.gatewayURL}/test", 3)
    )
    forwarded = await readMessages(s.server, 2, Role.CLIENT)
    # The SETUP naming a foreign destination is refused by the gateway, never forwarded.
    assert [e.method for e in forwarded] == ["OPTIONS", "GET_PARAMETER"]  # type: ignore[attr-defined]
    s.server.send(response(3) + response(1))
    replies = [asResponse(e) for e in await readMessages(s.client, 3)]
    assert [r.headers.get("CSeq") for r in replies] == ["1", "2", "3"]
    assert [r.status for r in replies] == [200, 461, 200]


@pytest_twisted.ensureDeferred
async def test_urls_in_a_describe_response_name_the_gateway(net: Network) -> None:
    s = await scene(net)
    s.client.send(request("DESCRIBE", f"{s.gatewayURL}/test", 1))
    await readMessages(s.server, 1, Role.CLIENT)
    body = SDP.replace(b"{server}", s.serverURL.encode())
    s.server.send(
        response(
            1,
            f"Content-Base: {s.serverURL}/test/",
            f"Content-Location: {s.serverURL}/test/",
            "Content-Type: application/sdp",
            body=body,
        )
    )
    (reply,) = await readMessages(s.client, 1)
    reply = asResponse(reply)
    assert reply.headers.get("Content-Base") == f"{s.gatewayURL}/test/"
    assert reply.headers.get("Content-Location") == f"{s.gatewayURL}/test/"
    assert f"a=control:{s.gatewayURL}/test/stream=0".encode() in reply.body
    assert reply.headers.get("Content-Length") == str(len(reply.body))


@pytest_twisted.ensureDeferred
async def test_rtp_info_and_location_name_the_gateway(net: Network) -> None:
    s = await scene(net)
    s.client.send(request("PLAY", f"{s.gatewayURL}/test", 1))
    await readMessages(s.server, 1, Role.CLIENT)
    s.server.send(
        response(
            1,
            f"RTP-Info: url={s.serverURL}/test/stream=0;seq=1;rtptime=2,"
            f"url={s.serverURL}/test/stream=1;seq=3",
            f"Location: {s.serverURL}/elsewhere",
        )
    )
    reply = asResponse((await readMessages(s.client, 1))[0])
    assert reply.headers.get("RTP-Info") == (
        f"url={s.gatewayURL}/test/stream=0;seq=1;rtptime=2,url={s.gatewayURL}/test/stream=1;seq=3"
    )
    assert reply.headers.get("Location") == f"{s.gatewayURL}/elsewhere"


@pytest_twisted.ensureDeferred
async def test_interleaved_frames_pass_both_ways(net: Network) -> None:
    s = await scene(net)
    s.client.send(
        request(
            "SETUP",
            f"{s.gatewayURL}/test/stream=0",
            1,
            "Transport: RTP/AVP/TCP;unicast;interleaved=0-1",
        )
    )
    (setup,) = await readMessages(s.server, 1, Role.CLIENT)
    assert setup.headers.get("Transport") == "RTP/AVP/TCP;unicast;interleaved=0-1"  # type: ignore[attr-defined]
    s.server.send(
        response(1, "Transport: RTP/AVP/TCP;unicast;interleaved=0-1", "Session: abc;timeout=60")
        + InterleavedFrame(0, b"rtp-from-server").serialize()
    )
    events = await readMessages(s.client, 2)
    assert events[1] == InterleavedFrame(0, b"rtp-from-server")
    s.client.send(InterleavedFrame(1, b"rtcp-from-client").serialize())
    events = await readMessages(s.server, 2, Role.CLIENT)
    assert events[1] == InterleavedFrame(1, b"rtcp-from-client")


@pytest_twisted.ensureDeferred
async def test_interleaved_channels_of_two_tracks_never_collide(net: Network) -> None:
    s = await scene(net)
    for cseq, track in ((1, 0), (2, 1)):
        s.client.send(
            request(
                "SETUP",
                f"{s.gatewayURL}/test/stream={track}",
                cseq,
                "Transport: RTP/AVP/TCP;unicast;interleaved=0-1",
            )
        )
    await readMessages(s.server, 2, Role.CLIENT)
    # A server that puts the second track on the channels the client asked for again
    # gets it moved on the client's side.
    s.server.send(
        response(1, "Transport: RTP/AVP/TCP;unicast;interleaved=0-1")
        + response(2, "Transport: RTP/AVP/TCP;unicast;interleaved=2-3")
        + InterleavedFrame(2, b"second").serialize()
    )
    events = await readMessages(s.client, 3)
    second = asResponse(events[1]).headers.get("Transport")
    assert second is not None and "interleaved=0-1" not in second
    channel = int(second.split("interleaved=")[1].split("-")[0])
    assert events[2] == InterleavedFrame(channel, b"second")


@pytest_twisted.ensureDeferred
async def test_garbage_from_the_client_gets_400_and_ends_the_session(net: Network) -> None:
    s = await scene(net)
    s.client.send(b"\x16\x03\x01 hello\r\n\r\n")
    data = await within(s.client.eof)
    assert data.startswith(b"RTSP/1.0 400 ")
    await within(s.server.eof)


@pytest_twisted.ensureDeferred
async def test_an_over_long_line_gets_400(net: Network) -> None:
    s = await scene(net)
    s.client.send(b"OPTIONS rtsp://x/" + b"a" * 9000 + b" RTSP/1.0\r\n")
    data = await within(s.client.eof)
    assert data.startswith(b"RTSP/1.0 400 ")


@pytest_twisted.ensureDeferred
async def test_a_body_over_64k_gets_413(net: Network) -> None:
    s = await scene(net)
    s.client.send(b"ANNOUNCE rtsp://x/ RTSP/1.0\r\nCSeq: 1\r\nContent-Length: 70000\r\n\r\n")
    data = await within(s.client.eof)
    assert data.startswith(b"RTSP/1.0 413 ")


@pytest_twisted.ensureDeferred
async def test_a_server_that_sends_garbage_gets_its_client_a_502(net: Network) -> None:
    s = await scene(net)
    s.client.send(request("OPTIONS", f"{s.gatewayURL}/test", 1))
    await readMessages(s.server, 1, Role.CLIENT)
    s.server.send(b"HTTP/1.1 200 OK\r\n\r\n")
    data = await within(s.client.eof)
    assert data.startswith(b"RTSP/1.0 502 ")


@pytest_twisted.ensureDeferred
async def test_a_request_without_cseq_is_answered_400_and_not_forwarded(net: Network) -> None:
    s = await scene(net)
    s.client.send(b"OPTIONS * RTSP/1.0\r\n\r\n" + request("OPTIONS", "*", 2))
    (forwarded,) = await readMessages(s.server, 1, Role.CLIENT)
    assert forwarded.headers.get("CSeq") == "2"  # type: ignore[attr-defined]
    s.server.send(response(2))
    replies = [asResponse(e) for e in await readMessages(s.client, 2)]
    assert [r.status for r in replies] == [400, 200]


@pytest_twisted.ensureDeferred
async def test_a_session_holds_at_most_16_tracks(net: Network) -> None:
    s = await scene(net)
    for cseq in range(1, 18):
        s.client.send(
            request(
                "SETUP",
                f"{s.gatewayURL}/test/stream={cseq}",
                cseq,
                f"Transport: RTP/AVP;unicast;client_port={40000 + 2 * cseq}-{40001 + 2 * cseq}",
            )
        )
    forwarded = await readMessages(s.server, 16, Role.CLIENT)
    assert len(forwarded) == 16
    for cseq in range(1, 17):
        s.server.send(response(cseq, status="454 Session Not Found"))
    replies = [asResponse(e) for e in await readMessages(s.client, 17)]
    assert [r.status for r in replies] == [454] * 16 + [453]
