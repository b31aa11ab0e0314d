"""Tests for fwxtwisted.filters.rtsp.urls: URL, RTP-Info and SDP rewriting."""

from __future__ import annotations

from fwxtwisted.filters.rtsp.urls import URLMap, rewriteRTPInfo, rewriteSDP

MAP = URLMap("gw.example.com", 554, "127.0.0.1", 8554)


def test_toServer() -> None:
    assert MAP.toServer("rtsp://gw.example.com/test") == "rtsp://127.0.0.1:8554/test"


def test_toClient() -> None:
    assert (
        MAP.toClient("rtsp://127.0.0.1:8554/test/stream=0") == "rtsp://gw.example.com/test/stream=0"
    )


def test_explicitDefaultPortMatches() -> None:
    assert MAP.toServer("rtsp://gw.example.com:554/test") == "rtsp://127.0.0.1:8554/test"


def test_hostCaseInsensitive() -> None:
    assert MAP.toServer("RTSP://GW.Example.COM/test") == "RTSP://127.0.0.1:8554/test"


def test_otherPortUntouched() -> None:
    assert MAP.toServer("rtsp://gw.example.com:8554/test") == "rtsp://gw.example.com:8554/test"


def test_otherHostUntouched() -> None:
    assert MAP.toServer("rtsp://evil.example.net/test") == "rtsp://evil.example.net/test"


def test_serverURLNotRewrittenTowardsServer() -> None:
    assert MAP.toServer("rtsp://127.0.0.1:8554/test") == "rtsp://127.0.0.1:8554/test"


def test_starUntouched() -> None:
    assert MAP.toServer("*") == "*"


def test_relativeUntouched() -> None:
    assert MAP.toClient("stream=0") == "stream=0"


def test_otherSchemeUntouched() -> None:
    assert MAP.toServer("http://gw.example.com/test") == "http://gw.example.com/test"


def test_userinfoKept() -> None:
    assert MAP.toServer("rtsp://admin:secret@gw.example.com/live?x=1#f") == (
        "rtsp://admin:secret@127.0.0.1:8554/live?x=1#f"
    )


def test_noPath() -> None:
    assert MAP.toServer("rtsp://gw.example.com") == "rtsp://127.0.0.1:8554"


def test_rtspuAndRtsps() -> None:
    assert MAP.toServer("rtspu://gw.example.com/a") == "rtspu://127.0.0.1:8554/a"
    tls = URLMap("gw", 322, "cam", 322)
    assert tls.toServer("rtsps://gw/a") == "rtsps://cam/a"


def test_targetDefaultPortOmitted() -> None:
    assert MAP.toClient("rtsp://127.0.0.1:8554/a") == "rtsp://gw.example.com/a"


def test_ipv6Brackets() -> None:
    urls = URLMap("2001:db8::1", 554, "fd00::5", 8554)
    assert urls.toServer("rtsp://[2001:DB8:0::1]/a") == "rtsp://[fd00::5]:8554/a"
    assert urls.toClient("rtsp://[fd00::5]:8554/a") == "rtsp://[2001:db8::1]/a"


def test_hostWithPortPrefixDoesNotMatch() -> None:
    assert MAP.toServer("rtsp://gw.example.com.evil.net/a") == "rtsp://gw.example.com.evil.net/a"


def test_userinfoNamingHostDoesNotMatch() -> None:
    url = "rtsp://gw.example.com@evil.net/a"
    assert MAP.toServer(url) == url


def test_malformedUntouched() -> None:
    for url in ["rtsp://[::1/a", "rtsp://gw.example.com:99999999/a", "rtsp:gw.example.com/a"]:
        assert MAP.toServer(url) == url


def test_rtpInfo() -> None:
    value = (
        "url=rtsp://127.0.0.1:8554/test/stream=0;seq=8234;rtptime=2519245627,"
        "url=rtsp://127.0.0.1:8554/test/stream=1;seq=1;rtptime=0"
    )
    assert rewriteRTPInfo(value, MAP.toClient) == (
        "url=rtsp://gw.example.com/test/stream=0;seq=8234;rtptime=2519245627,"
        "url=rtsp://gw.example.com/test/stream=1;seq=1;rtptime=0"
    )


def test_rtpInfoSpacingAndQuotesKept() -> None:
    value = 'url="rtsp://127.0.0.1:8554/a";seq=1, url=rtsp://other/b;rtptime=5'
    assert rewriteRTPInfo(value, MAP.toClient) == (
        'url="rtsp://gw.example.com/a";seq=1, url=rtsp://other/b;rtptime=5'
    )


def test_rtpInfoRelative() -> None:
    assert rewriteRTPInfo("url=trackID=1;seq=5", MAP.toClient) == "url=trackID=1;seq=5"


SDP = (
    b"v=0\r\n"
    b"o=- 1188340656180883 1 IN IP4 127.0.0.1\r\n"
    b"s=Session streamed with GStreamer\r\n"
    b"a=control:rtsp://127.0.0.1:8554/test\r\n"
    b"m=video 0 RTP/AVP 96\r\n"
    b"a=rtpmap:96 H264/90000\r\n"
    b"a=control:rtsp://127.0.0.1:8554/test/stream=0\r\n"
    b"m=audio 0 RTP/AVP 97\r\n"
    b"a=control:stream=1\r\n"
)


def test_sdpAbsoluteControlRewritten() -> None:
    rewritten = rewriteSDP(SDP, MAP.toClient)
    assert b"a=control:rtsp://gw.example.com/test\r\n" in rewritten
    assert b"a=control:rtsp://gw.example.com/test/stream=0\r\n" in rewritten


def test_sdpRelativeAndOtherLinesKept() -> None:
    rewritten = rewriteSDP(SDP, MAP.toClient)
    assert b"a=control:stream=1\r\n" in rewritten
    assert b"o=- 1188340656180883 1 IN IP4 127.0.0.1\r\n" in rewritten


def test_sdpContentBaseAndLF() -> None:
    body = b"v=0\na=content-base:rtsp://127.0.0.1:8554/test/\na=control:*\n"
    assert rewriteSDP(body, MAP.toClient) == (
        b"v=0\na=content-base:rtsp://gw.example.com/test/\na=control:*\n"
    )


def test_sdpUnchangedWhenNothingMatches() -> None:
    body = b"v=0\r\na=control:rtsp://elsewhere/x\r\nno newline at end"
    assert rewriteSDP(body, MAP.toClient) == body


def test_sdpNonUTF8Kept() -> None:
    body = b"s=caf\xe9\r\na=control:rtsp://127.0.0.1:8554/x\r\n"
    assert rewriteSDP(body, MAP.toClient) == b"s=caf\xe9\r\na=control:rtsp://gw.example.com/x\r\n"
