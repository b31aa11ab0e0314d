"""Tests for fwxtwisted.filters.rtsp.parser and message: framing, limits, errors, splits."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fwxtwisted.filters.rtsp.errors import RTSPProtocolError
from fwxtwisted.filters.rtsp.message import (
    Event,
    Headers,
    InterleavedFrame,
    Request,
    Response,
)
from fwxtwisted.filters.rtsp.parser import MessageParser, Role

SDP = (
    b"v=0\r\n"
    b"o=- 1188340656180883 1 IN IP4 127.0.0.1\r\n"
    b"s=Session streamed with GStreamer\r\n"
    b"t=0 0\r\n"
    b"a=control:rtsp://127.0.0.1:8554/test\r\n"
    b"m=video 0 RTP/AVP 96\r\n"
    b"a=rtpmap:96 H264/90000\r\n"
    b"a=control:rtsp://127.0.0.1:8554/test/stream=0\r\n"
)

DESCRIBE = (
    b"DESCRIBE rtsp://127.0.0.1:8554/test RTSP/1.0\r\n"
    b"CSeq: 2\r\n"
    b"User-Agent: LibVLC/3.0.18 (LIVE555 Streaming Media v2016.11.28)\r\n"
    b"Accept: application/sdp\r\n"
    b"\r\n"
)

DESCRIBE_REPLY = (
    b"RTSP/1.0 200 OK\r\n"
    b"CSeq: 2\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Base: rtsp://127.0.0.1:8554/test/\r\n"
    b"Server: GStreamer RTSP server\r\n"
    b"Date: Mon, 05 Feb 2024 10:00:00 GMT\r\n"
    b"Content-Length: " + str(len(SDP)).encode() + b"\r\n"
    b"\r\n" + SDP
)

SETUP = (
    b"SETUP rtsp://127.0.0.1:8554/test/stream=0 RTSP/1.0\r\n"
    b"CSeq: 3\r\n"
    b"Transport: RTP/AVP;unicast;client_port=5000-5001\r\n"
    b"\r\n"
)

SETUP_REPLY = (
    b"RTSP/1.0 200 OK\r\n"
    b"CSeq: 3\r\n"
    b"Transport: RTP/AVP;unicast;client_port=5000-5001;server_port=6970-6971;"
    b'ssrc=1234;mode="PLAY"\r\n'
    b"Session: 1Zr8XgNPi9rmzV4L;timeout=60\r\n"
    b"\r\n"
)

FRAME = b"$\x00\x00\x04\x80\x60\x00\x01"


def parseAll(data: bytes, role: Role = Role.SERVER) -> list[Event]:
    return MessageParser(role).feed(data)


def test_requestWithoutBody() -> None:
    [request] = parseAll(DESCRIBE, Role.CLIENT)
    assert isinstance(request, Request)
    assert (request.method, request.uri, request.version) == (
        "DESCRIBE",
        "rtsp://127.0.0.1:8554/test",
        "RTSP/1.0",
    )
    assert request.headers.get("cseq") == "2"
    assert request.body == b""


def test_responseWithSDPBody() -> None:
    [response] = parseAll(DESCRIBE_REPLY)
    assert isinstance(response, Response)
    assert (response.status, response.reason) == (200, "OK")
    assert response.body == SDP


def test_headersKeepCaseAndOrder() -> None:
    [request] = parseAll(DESCRIBE, Role.CLIENT)
    assert [name for name, _ in request.headers] == ["CSeq", "User-Agent", "Accept"]


def test_serializeRoundTrips() -> None:
    for data in (DESCRIBE, DESCRIBE_REPLY, SETUP, SETUP_REPLY):
        [message] = parseAll(data)
        assert isinstance(message, Request | Response)
        assert message.serialize() == data


def test_interleavedFrame() -> None:
    assert parseAll(FRAME) == [InterleavedFrame(0, b"\x80\x60\x00\x01")]


def test_interleavedFrameSerializes() -> None:
    assert InterleavedFrame(0, b"\x80\x60\x00\x01").serialize() == FRAME


def test_framesBetweenMessages() -> None:
    events = parseAll(FRAME + SETUP_REPLY + FRAME + FRAME + DESCRIBE_REPLY + FRAME)
    kinds = [type(event).__name__ for event in events]
    assert kinds == [
        "InterleavedFrame",
        "Response",
        "InterleavedFrame",
        "InterleavedFrame",
        "Response",
        "InterleavedFrame",
    ]


def test_emptyFrame() -> None:
    assert parseAll(b"$\x01\x00\x00") == [InterleavedFrame(1, b"")]


def test_serverRequestOnServerSide() -> None:
    data = (
        b"SET_PARAMETER rtsp://127.0.0.1:8554/test RTSP/1.0\r\n"
        b"CSeq: 1\r\nContent-Type: text/parameters\r\nContent-Length: 9\r\n\r\n"
        b"barparam\n"
    )
    [request] = parseAll(data, Role.SERVER)
    assert isinstance(request, Request)
    assert request.method == "SET_PARAMETER"
    assert request.body == b"barparam\n"


def test_clientResponseOnClientSide() -> None:
    [response] = parseAll(b"RTSP/1.0 200 OK\r\nCSeq: 1\r\n\r\n", Role.CLIENT)
    assert isinstance(response, Response)


def test_lfOnlyLineEndings() -> None:
    [request] = parseAll(SETUP.replace(b"\r\n", b"\n"), Role.CLIENT)
    assert isinstance(request, Request)
    assert request.headers.get("Transport") == "RTP/AVP;unicast;client_port=5000-5001"


def test_blankLinesBetweenMessages() -> None:
    events = parseAll(b"\r\n\r\n" + SETUP + b"\r\n\n" + SETUP)
    assert len(events) == 2


def test_statusWithoutReason() -> None:
    [response] = parseAll(b"RTSP/1.0 454\r\nCSeq: 4\r\n\r\n")
    assert isinstance(response, Response)
    assert (response.status, response.reason) == (454, "")


def test_reasonWithSpaces() -> None:
    [response] = parseAll(b"RTSP/1.0 455 Method Not Valid in This State\r\n\r\n")
    assert isinstance(response, Response)
    assert response.reason == "Method Not Valid in This State"


def test_headerValueWhitespaceStripped() -> None:
    [request] = parseAll(b"OPTIONS * RTSP/1.0\r\nCSeq:   7 \t\r\n\r\n")
    assert isinstance(request, Request)
    assert request.headers.get("CSeq") == "7"


def test_foldedHeaderJoined() -> None:
    [request] = parseAll(b"OPTIONS * RTSP/1.0\r\nX-Long: a\r\n  b\r\nCSeq: 1\r\n\r\n")
    assert isinstance(request, Request)
    assert request.headers.get("X-Long") == "a b"


def test_incompleteMessageGivesNothingYet() -> None:
    parser = MessageParser(Role.SERVER)
    assert parser.feed(DESCRIBE_REPLY[:-1]) == []
    assert len(parser.feed(DESCRIBE_REPLY[-1:])) == 1


def test_idleBetweenMessages() -> None:
    parser = MessageParser(Role.SERVER)
    parser.feed(SETUP + b"\r\n")
    assert parser.idle
    parser.feed(b"OPTIONS")
    assert not parser.idle


def test_eofInsideMessage() -> None:
    parser = MessageParser(Role.SERVER)
    parser.feed(SETUP[:10])
    with pytest.raises(RTSPProtocolError) as caught:
        parser.eof()
    assert caught.value.status == 400


def test_eofBetweenMessages() -> None:
    parser = MessageParser(Role.SERVER)
    parser.feed(SETUP)
    parser.eof()


def raised(data: bytes, **limits: int) -> RTSPProtocolError:
    with pytest.raises(RTSPProtocolError) as caught:
        MessageParser(Role.CLIENT, **limits).feed(data)
    return caught.value


@pytest.mark.parametrize(
    "data",
    [
        b"GARBAGE\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n",
        b"DESCRIBE  rtsp://h/ RTSP/1.0\r\n\r\n",
        b"DESCRIBE rtsp://h/ HTTP/1.1\r\n\r\n",
        b"RTSP/1.0 2000 OK\r\n\r\n",
        b"RTSP/1.0 OK\r\n\r\n",
        b"OPTIONS * RTSP/1.0\r\nCSeq 1\r\n\r\n",
        b"OPTIONS * RTSP/1.0\r\nCSeq : 1\r\n\r\n",
        b"OPTIONS * RTSP/1.0\r\n CSeq: 1\r\n\r\n",
        b"OPTIONS * RTSP/1.0\r\nCSeq: 1\rX-Smuggled: 1\r\n\r\n",
        b"OPTIONS * RTSP/1.0\r\nCSeq: 1\x00\r\n\r\n",
        b"\rOPTIONS * RTSP/1.0\r\n\r\n",
    ],
)
def test_malformedIs400(data: bytes) -> None:
    assert raised(data).status == 400


@pytest.mark.parametrize("value", [b"-1", b"+5", b"5 5", b"0x10", b"", b"\xb2", b"1e3"])
def test_badContentLength(value: bytes) -> None:
    assert raised(b"ANNOUNCE * RTSP/1.0\r\nContent-Length: " + value + b"\r\n\r\n").status == 400


def test_conflictingContentLengths() -> None:
    data = b"ANNOUNCE * RTSP/1.0\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxy"
    assert raised(data).status == 400


def test_repeatedEqualContentLength() -> None:
    data = b"ANNOUNCE * RTSP/1.0\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nxy"
    [request] = parseAll(data)
    assert isinstance(request, Request)
    assert request.body == b"xy"


def test_otherVersionIs505() -> None:
    assert raised(b"OPTIONS * RTSP/2.0\r\n\r\n").status == 505


def test_bodyOverLimitIs413() -> None:
    data = b"ANNOUNCE * RTSP/1.0\r\nContent-Length: 65537\r\n\r\n"
    assert raised(data).status == 413


def test_bodyAtLimit() -> None:
    body = b"x" * 65536
    data = b"ANNOUNCE * RTSP/1.0\r\nContent-Length: 65536\r\n\r\n" + body
    [request] = parseAll(data)
    assert isinstance(request, Request)
    assert request.body == body


def test_hugeContentLengthIs413() -> None:
    data = b"ANNOUNCE * RTSP/1.0\r\nContent-Length: " + b"9" * 5000 + b"\r\n\r\n"
    assert raised(data).status == 413


def test_leadingZerosContentLength() -> None:
    [request] = parseAll(b"ANNOUNCE * RTSP/1.0\r\nContent-Length: 0002\r\n\r\nab")
    assert isinstance(request, Request)
    assert request.body == b"ab"


def test_contentLengthNormalized() -> None:
    data = b"ANNOUNCE * RTSP/1.0\r\nContent-Length: 02\r\nCSeq: 1\r\ncontent-length: 02\r\n\r\nab"
    [request] = parseAll(data)
    assert isinstance(request, Request)
    assert list(request.headers) == [("Content-Length", "2"), ("CSeq", "1")]


def test_lineAtLimit() -> None:
    data = b"OPTIONS * RTSP/1.0\r\nX: " + b"a" * (8192 - 3) + b"\r\n\r\n"
    assert len(parseAll(data)) == 1


def test_lineOverLimit() -> None:
    data = b"OPTIONS * RTSP/1.0\r\nX: " + b"a" * (8192 - 2) + b"\r\n\r\n"
    assert raised(data).status == 400


def test_unterminatedLongLineRefusedEarly() -> None:
    parser = MessageParser(Role.CLIENT)
    parser.feed(b"a" * 8193)
    with pytest.raises(RTSPProtocolError):
        parser.feed(b"a")


def test_tooManyHeaders() -> None:
    data = b"OPTIONS * RTSP/1.0\r\n" + b"X: 1\r\n" * 65 + b"\r\n"
    assert raised(data).status == 400


def test_headersAtLimit() -> None:
    data = b"OPTIONS * RTSP/1.0\r\n" + b"X: 1\r\n" * 64 + b"\r\n"
    assert len(parseAll(data)) == 1


def test_frameOverConfiguredLimit() -> None:
    assert raised(b"$\x00\x01\x00" + b"x" * 256, maxFrameLength=255).status == 400


def test_errorKeepsEarlierEvents() -> None:
    error = raised(SETUP + FRAME + b"GARBAGE\r\n")
    assert [type(event) for event in error.events] == [Request, InterleavedFrame]


def test_refusesInputAfterError() -> None:
    parser = MessageParser(Role.CLIENT)
    with pytest.raises(RTSPProtocolError):
        parser.feed(b"GARBAGE\r\n")
    with pytest.raises(RTSPProtocolError) as caught:
        parser.feed(SETUP)
    assert caught.value.status == 400
    assert caught.value.events == []


def test_bodySetterUpdatesContentLength() -> None:
    [response] = parseAll(DESCRIBE_REPLY)
    assert isinstance(response, Response)
    response.body = b"v=0\r\n"
    assert response.headers.get("Content-Length") == "5"
    assert response.serialize().endswith(b"Content-Length: 5\r\n\r\nv=0\r\n")


def test_emptyBodyAddsNoContentLength() -> None:
    request = Request("OPTIONS", "*", headers=Headers([("CSeq", "1")]))
    assert request.serialize() == b"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\n\r\n"


def test_responseDefaultReason() -> None:
    assert Response(status=461).serialize() == b"RTSP/1.0 461 Unsupported transport\r\n\r\n"


def test_headersCaseInsensitive() -> None:
    headers = Headers([("CSeq", "1"), ("Transport", "a"), ("transport", "b")])
    assert headers.getAll("TRANSPORT") == ["a", "b"]
    headers.set("TRANSPORT", "c")
    assert list(headers) == [("CSeq", "1"), ("Transport", "c")]
    headers.remove("cseq")
    assert list(headers) == [("Transport", "c")]


def test_headersSetAppendsNew() -> None:
    headers = Headers([("CSeq", "1")])
    headers.set("Session", "abc")
    assert list(headers) == [("CSeq", "1"), ("Session", "abc")]


@pytest.mark.parametrize("value", ["a\r\nX-Injected: 1", "a\nb", "a\x00"])
def test_headersRefuseLineBreaks(value: str) -> None:
    with pytest.raises(ValueError):
        Headers().set("X", value)


def test_headersRefuseBadName() -> None:
    with pytest.raises(ValueError):
        Headers().add("X Y", "1")


def test_serializeRefusesInjectedURI() -> None:
    with pytest.raises(ValueError):
        Request("PLAY", "rtsp://h/ RTSP/1.0\r\nX: 1").serialize()


STREAM = FRAME + SETUP + b"\r\n" + DESCRIBE_REPLY + FRAME + SETUP_REPLY + DESCRIBE


def feedSplit(data: bytes, cuts: list[int]) -> tuple[list[Event], int | None]:
    """The events of C{data} fed in pieces cut at C{cuts}, and any error's status."""
    parser = MessageParser(Role.SERVER, maxLineLength=200, maxBodyLength=300)
    events: list[Event] = []
    bounds = [0, *sorted(cuts), len(data)]
    try:
        for start, end in zip(bounds, bounds[1:], strict=False):
            events += parser.feed(data[start:end])
    except RTSPProtocolError as error:
        return events + error.events, error.status
    return events, None


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, len(STREAM)), max_size=12))
def test_anySplitSameEvents(cuts: list[int]) -> None:
    assert feedSplit(STREAM, cuts) == feedSplit(STREAM, [])
    assert len(feedSplit(STREAM, [])[0]) == 6


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            [FRAME, SETUP, SETUP_REPLY, b"\r\n", b"\n", b"$", b"\r", b"x" * 150, b"RTSP/1.0 "]
        ),
        max_size=8,
    ),
    st.lists(st.integers(0, 2000), max_size=10),
)
def test_anySplitSameEventsOrError(pieces: list[bytes], cuts: list[int]) -> None:
    data = b"".join(pieces)
    cuts = [cut for cut in cuts if cut <= len(data)]
    assert feedSplit(data, cuts) == feedSplit(data, [])


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600), st.lists(st.integers(0, 600), max_size=6))
def test_randomBytesOnlyRaiseProtocolError(data: bytes, cuts: list[int]) -> None:
    cuts = [cut for cut in cuts if cut <= len(data)]
    assert feedSplit(data, cuts) == feedSplit(data, [])
