"""Tests for fwxtwisted.filters.rtsp.transport: Transport and Session headers."""

from __future__ import annotations

import pytest

from fwxtwisted.filters.rtsp.errors import RTSPProtocolError
from fwxtwisted.filters.rtsp.transport import (
    TransportSpec,
    formatSession,
    formatTransport,
    parseSession,
    parseTransport,
)

REPLY = 'RTP/AVP;unicast;client_port=5000-5001;server_port=6970-6971;ssrc=1234;mode="PLAY"'


def test_parseSetupRequest() -> None:
    [spec] = parseTransport("RTP/AVP;unicast;client_port=5000-5001")
    assert spec.protocol == "RTP/AVP"
    assert spec.params == [("unicast", None), ("client_port", "5000-5001")]


def test_parseReplyPairs() -> None:
    [spec] = parseTransport(REPLY)
    assert spec.clientPorts == (5000, 5001)
    assert spec.serverPorts == (6970, 6971)
    assert spec.get("ssrc") == "1234"


def test_quotedModeKeptRaw() -> None:
    [spec] = parseTransport(REPLY)
    assert spec.get("mode") == '"PLAY"'


def test_formatRoundTrips() -> None:
    assert formatTransport(parseTransport(REPLY)) == REPLY


def test_unknownParamsKeptInOrder() -> None:
    value = 'RTP/AVP;x-vendor=1;unicast;x-flag;client_port=5000-5001;x-last="a;b"'
    assert formatTransport(parseTransport(value)) == value


def test_severalSpecs() -> None:
    specs = parseTransport(
        "RTP/AVP/TCP;unicast;interleaved=0-1, RTP/AVP;unicast;client_port=5000-5001"
    )
    assert [spec.lowerTransport for spec in specs] == ["TCP", "UDP"]
    assert formatTransport(specs) == (
        "RTP/AVP/TCP;unicast;interleaved=0-1,RTP/AVP;unicast;client_port=5000-5001"
    )


def test_commaInsideQuotesDoesNotSplit() -> None:
    [spec] = parseTransport('RTP/AVP;mode="PLAY,RECORD"')
    assert spec.get("mode") == '"PLAY,RECORD"'


def test_interleaved() -> None:
    [spec] = parseTransport("RTP/AVP/TCP;unicast;interleaved=0-1")
    assert spec.interleaved == (0, 1)
    assert spec.lowerTransport == "TCP"


def test_lowerTransportDefaultsToUDP() -> None:
    assert TransportSpec.parse("RTP/AVP;unicast").lowerTransport == "UDP"


def test_explicitUDP() -> None:
    assert TransportSpec.parse("RTP/AVP/udp;unicast").lowerTransport == "UDP"


def test_singlePort() -> None:
    assert TransportSpec.parse("RTP/AVP;client_port=5000").clientPorts == (5000, 5000)


def test_absentPair() -> None:
    assert TransportSpec.parse("RTP/AVP;unicast").serverPorts is None


def test_caseInsensitiveNames() -> None:
    assert TransportSpec.parse("RTP/AVP;Client_Port=5000-5001").clientPorts == (5000, 5001)


def test_setPairInPlace() -> None:
    spec = TransportSpec.parse("RTP/AVP;unicast;client_port=5000-5001;mode=PLAY")
    spec.setPair("client_port", (40000, 40001))
    assert spec.format() == "RTP/AVP;unicast;client_port=40000-40001;mode=PLAY"


def test_setAppends() -> None:
    spec = TransportSpec.parse("RTP/AVP;unicast")
    spec.setPair("server_port", (6970, 6971))
    assert spec.format() == "RTP/AVP;unicast;server_port=6970-6971"


def test_setRemovesDuplicates() -> None:
    spec = TransportSpec.parse("RTP/AVP;client_port=1-2;unicast;client_port=3-4")
    spec.setPair("client_port", (5000, 5001))
    assert spec.format() == "RTP/AVP;client_port=5000-5001;unicast"


def test_remove() -> None:
    spec = TransportSpec.parse("RTP/AVP;unicast;destination=10.0.0.9;client_port=5000-5001")
    spec.remove("destination")
    assert spec.format() == "RTP/AVP;unicast;client_port=5000-5001"


def test_multicastFlag() -> None:
    assert TransportSpec.parse("RTP/AVP;multicast;ttl=127").isMulticast
    assert not TransportSpec.parse("RTP/AVP;unicast").isMulticast


def test_trailingSemicolonAccepted() -> None:
    assert TransportSpec.parse("RTP/AVP;unicast;").format() == "RTP/AVP;unicast"


@pytest.mark.parametrize(
    "value",
    [
        "",
        " , ",
        ";unicast",
        "RTP",
        "RTP/AVP/UDP/X",
        "RTP/AVP;client_port=70000-70001",
        "RTP/AVP;client_port=5001-5000",
        "RTP/AVP;client_port=-1",
        "RTP/AVP;client_port=a-b",
        "RTP/AVP;client_port=5000-5001-5002",
        "RTP/AVP;client_port=" + "9" * 5000,
        "RTP/AVP/TCP;interleaved=0-256",
        'RTP/AVP;mode="PLAY',
        "RTP/AVP;bad name=1",
        "RTP/AVP;x=\x00",
        "RTP/AVP;x=\r\nInjected: 1",
    ],
)
def test_malformedRefused(value: str) -> None:
    with pytest.raises(RTSPProtocolError) as caught:
        parseTransport(value)
    assert caught.value.status == 400


def test_setRefusesInjection() -> None:
    spec = TransportSpec.parse("RTP/AVP;unicast")
    with pytest.raises(RTSPProtocolError):
        spec.set("destination", "1.2.3.4\r\nX: 1")


def test_sessionWithTimeout() -> None:
    assert parseSession("1Zr8XgNPi9rmzV4L;timeout=60") == ("1Zr8XgNPi9rmzV4L", 60)


def test_sessionWithoutTimeout() -> None:
    assert parseSession("47112344") == ("47112344", None)


def test_sessionUnknownParamIgnored() -> None:
    assert parseSession("abc ; x=1 ;timeout = 30") == ("abc", 30)


@pytest.mark.parametrize("value", ["", ";timeout=60", "a b", "abc;timeout=-1", "abc;timeout=x"])
def test_badSessionRefused(value: str) -> None:
    with pytest.raises(RTSPProtocolError):
        parseSession(value)


def test_formatSession() -> None:
    assert formatSession("abc", 60) == "abc;timeout=60"
    assert formatSession("abc") == "abc"
