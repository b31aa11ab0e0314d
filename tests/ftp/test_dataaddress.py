"""Tests for fwxtwisted.filters.ftp.dataaddress: PORT, EPRT, 227 and 229 codecs."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fwxtwisted.address import Address
from fwxtwisted.filters.ftp.dataaddress import (
    DataAddressError,
    UnsupportedNetworkProtocolError,
    formatEprt,
    formatEpsvReply,
    formatPasvReply,
    formatPort,
    parseEprt,
    parseEpsvReply,
    parsePasvReply,
    parsePort,
)


def test_parsePort() -> None:
    assert parsePort("192,168,1,2,4,1") == Address("192.168.1.2", 1025)


def test_parsePortToleratesWhitespace() -> None:
    assert parsePort(" 10, 0 ,0,1 ,0,21 ") == Address("10.0.0.1", 21)


def test_parsePortLeadingZeros() -> None:
    assert parsePort("010,000,000,001,000,021") == Address("10.0.0.1", 21)


@pytest.mark.parametrize(
    "arg",
    [
        "1,2,3,4,5",
        "1,2,3,4,5,6,7",
        "1,2,3,256,5,6",
        "1,2,3,4,5,-6",
        "1,2,3,4,5,x",
        "",
        "1,,3,4,5,6",
    ],
)
def test_parsePortRejects(arg: str) -> None:
    with pytest.raises(DataAddressError):
        parsePort(arg)


def test_parsePortRejectsNonAsciiDigits() -> None:
    with pytest.raises(DataAddressError):
        parsePort("1,2,3,4,5,\u0663")


def test_formatPort() -> None:
    assert formatPort(Address("192.168.1.2", 1025)) == "192,168,1,2,4,1"


def test_formatPortFoldsMappedIPv6() -> None:
    assert formatPort(Address("::ffff:10.0.0.1", 21)) == "10,0,0,1,0,21"


@pytest.mark.parametrize(
    "address", [Address("::1", 21), Address("ftp.example.com", 21), Address("1.2.3.4", 65536)]
)
def test_formatPortRejects(address: Address) -> None:
    with pytest.raises(DataAddressError):
        formatPort(address)


def test_parseEprtIPv4() -> None:
    assert parseEprt("|1|132.235.1.2|6275|") == Address("132.235.1.2", 6275)


def test_parseEprtIPv6() -> None:
    assert parseEprt("|2|1080::8:800:200C:417A|5282|") == Address("1080::8:800:200c:417a", 5282)


def test_parseEprtOtherDelimiter() -> None:
    assert parseEprt("!1!10.0.0.1!21!") == Address("10.0.0.1", 21)


def test_parseEprtSurroundingWhitespace() -> None:
    assert parseEprt(" |1|10.0.0.1|21| ") == Address("10.0.0.1", 21)


def test_parseEprtFoldsMappedIPv6() -> None:
    assert parseEprt("|2|::ffff:10.0.0.1|21|") == Address("10.0.0.1", 21)


def test_parseEprtUnknownFamily() -> None:
    with pytest.raises(UnsupportedNetworkProtocolError):
        parseEprt("|3|10.0.0.1|21|")


@pytest.mark.parametrize(
    "arg",
    [
        "",
        "|1|10.0.0.1|21",
        "|1|10.0.0.1|21|x",
        "|1|10.0.0.1|21|22|",
        " 1 10.0.0.1 21 ",
        "\x7f1\x7f10.0.0.1\x7f21\x7f",
        "|1|::1|21|",
        "|2|10.0.0.1|21|",
        "|1|10.0.0.256|21|",
        "|1|010.0.0.1|21|",
        "|1|10.0.0.1|65536|",
        "|1|10.0.0.1||",
        "|1|10.0.0.1|+21|",
        "|2|fe80::1%eth0|21|",
        "|1|host.example|21|",
    ],
)
def test_parseEprtRejects(arg: str) -> None:
    with pytest.raises(DataAddressError):
        parseEprt(arg)


def test_formatEprtIPv4() -> None:
    assert formatEprt(Address("10.0.0.1", 21)) == "|1|10.0.0.1|21|"


def test_formatEprtIPv6() -> None:
    assert formatEprt(Address("2001:DB8::1", 21)) == "|2|2001:db8::1|21|"


@pytest.mark.parametrize(
    "address", [Address("ftp.example.com", 21), Address("::1", -1), Address("fe80::1%eth0", 21)]
)
def test_formatEprtRejects(address: Address) -> None:
    with pytest.raises(DataAddressError):
        formatEprt(address)


@pytest.mark.parametrize(
    "text",
    [
        "Entering Passive Mode (10,0,0,1,4,1)",
        "Entering Passive Mode (10,0,0,1,4,1).",
        "Entering Passive Mode 10,0,0,1,4,1",
        "=10,0,0,1,4,1",
        "Passive (10, 0, 0, 1, 4, 1) ok",
        "Mode 5 of 7: 10,0,0,1,4,1",
    ],
)
def test_parsePasvReply(text: str) -> None:
    assert parsePasvReply(text) == Address("10.0.0.1", 1025)


@pytest.mark.parametrize(
    "text",
    [
        "Entering Passive Mode",
        "Entering Passive Mode (10,0,0,1,4)",
        "Entering Passive Mode (10,0,0,1,4,256)",
        "Entering Passive Mode (1000,0,0,1,4,1)",
        "",
    ],
)
def test_parsePasvReplyRejects(text: str) -> None:
    with pytest.raises(DataAddressError):
        parsePasvReply(text)


def test_formatPasvReply() -> None:
    assert formatPasvReply(Address("10.0.0.1", 1025)) == "Entering Passive Mode (10,0,0,1,4,1)."


def test_formatPasvReplyRejectsIPv6() -> None:
    with pytest.raises(DataAddressError):
        formatPasvReply(Address("::1", 21))


@pytest.mark.parametrize(
    "text",
    [
        "Entering Extended Passive Mode (|||6446|)",
        "Entering Extended Passive Mode (!!!6446!)",
        "ok (|||6446|).",
    ],
)
def test_parseEpsvReply(text: str) -> None:
    assert parseEpsvReply(text) == 6446


@pytest.mark.parametrize(
    "text",
    [
        "Entering Extended Passive Mode",
        "Entering Extended Passive Mode |||6446|",
        "(||!6446|)",
        "(|||6446!)",
        "(|||65536|)",
        "(|||abc|)",
        "(||||)",
        "(   6446 )",
    ],
)
def test_parseEpsvReplyRejects(text: str) -> None:
    with pytest.raises(DataAddressError):
        parseEpsvReply(text)


def test_formatEpsvReply() -> None:
    assert formatEpsvReply(6446) == "Entering Extended Passive Mode (|||6446|)"


@pytest.mark.parametrize("port", [-1, 65536])
def test_formatEpsvReplyRejects(port: int) -> None:
    with pytest.raises(DataAddressError):
        formatEpsvReply(port)


ports = st.integers(0, 65535)
ipv4 = st.integers(0, 2**32 - 1).map(lambda n: str(ipaddress.IPv4Address(n)))
# Runs of zero groups exercise the "::" forms; mapped addresses fold to IPv4 by design
# and are tested above.
ipv6 = (
    st.lists(
        st.sampled_from([0, 0, 0, 1, 0xFFFF, 0x2001, 0xDB8]) | st.integers(0, 0xFFFF),
        min_size=8,
        max_size=8,
    )
    .map(lambda groups: ipaddress.IPv6Address(sum(g << (16 * i) for i, g in enumerate(groups))))
    .filter(lambda ip: ip.ipv4_mapped is None)
    .map(str)
)


@settings(max_examples=200)
@given(host=ipv4, port=ports)
def test_portRoundTrip(host: str, port: int) -> None:
    assert parsePort(formatPort(Address(host, port))) == Address(host, port)


@settings(max_examples=200)
@given(host=st.one_of(ipv4, ipv6), port=ports)
def test_eprtRoundTrip(host: str, port: int) -> None:
    assert parseEprt(formatEprt(Address(host, port))) == Address(host, port)


@settings(max_examples=200)
@given(host=ipv4, port=ports)
def test_pasvReplyRoundTrip(host: str, port: int) -> None:
    assert parsePasvReply(formatPasvReply(Address(host, port))) == Address(host, port)


@settings(max_examples=200)
@given(port=ports)
def test_epsvReplyRoundTrip(port: int) -> None:
    assert parseEpsvReply(formatEpsvReply(port)) == port


@settings(max_examples=200)
@given(
    delimiter=st.characters(min_codepoint=33, max_codepoint=126).filter(
        lambda c: not c.isalnum() and c not in ".:"
    ),
    host=st.one_of(ipv4, ipv6),
    port=ports,
)
def test_eprtAnyDelimiter(delimiter: str, host: str, port: int) -> None:
    family = "2" if ipaddress.ip_address(host).version == 6 else "1"
    arg = delimiter + delimiter.join([family, host, str(port)]) + delimiter
    assert parseEprt(arg) == Address(host, port)


@settings(max_examples=200)
@given(text=st.text(max_size=40))
def test_randomTextRaisesOnlyDataAddressError(text: str) -> None:
    for parse in (parsePort, parseEprt, parsePasvReply, parseEpsvReply):
        try:
            parse(text)
        except DataAddressError:
            pass
