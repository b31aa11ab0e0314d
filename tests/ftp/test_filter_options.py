"""FTP filter, options: parseFTPOptions, the allow-list syntax, and attaching."""

from __future__ import annotations

import ipaddress

import pytest

from fwxtwisted.address import Address
from fwxtwisted.errors import ConfigError
from fwxtwisted.filters.ftp.filter import ftpFilter
from fwxtwisted.filters.ftp.options import DataPolicy, FTPOptions, parseFTPOptions
from fwxtwisted.net.destinations import Destination, parseDestination
from fwxtwisted.testing import FakeSession


def test_defaults() -> None:
    assert parseFTPOptions({}) == FTPOptions(
        explicit=False,
        allowDestinations=(),
        dataPolicy=DataPolicy.CLIENT,
        advertiseAddress=None,
        passivePorts=None,
        idleTimeout=900.0,
        allowFxp=False,
        maxLineLength=2048,
    )


def test_everyKey() -> None:
    options = parseFTPOptions(
        {
            "explicit": True,
            "allow_destinations": ["192.0.2.0/24:21"],
            "data_policy": "active",
            "advertise_address": "192.0.2.200",
            "passive_ports": "50000-50099",
            "idle_timeout": 30,
            "allow_fxp": True,
            "max_line_length": 4096,
        }
    )
    assert options == FTPOptions(
        explicit=True,
        allowDestinations=(Destination(ipaddress.ip_network("192.0.2.0/24"), ((21, 21),)),),
        dataPolicy=DataPolicy.ACTIVE,
        advertiseAddress="192.0.2.200",
        passivePorts=(50000, 50099),
        idleTimeout=30.0,
        allowFxp=True,
        maxLineLength=4096,
    )


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ({"explicit": True}, "allow_destinations"),
        ({"explicit": True, "allow_destinations": []}, "allow_destinations"),
        ({"bogus": 1}, "bogus"),
        ({"passive_port": "50000-50099"}, "passive_port"),
        ({"data_policy": "sideways"}, "data_policy"),
        ({"passive_ports": "50099-50000"}, "passive_ports"),
        ({"passive_ports": "fifty"}, "passive_ports"),
        ({"passive_ports": "50000-70000"}, "passive_ports"),
        ({"advertise_address": "2001:db8::1"}, "advertise_address"),
        ({"advertise_address": "gateway.example.org"}, "advertise_address"),
        ({"explicit": "yes", "allow_destinations": ["10.0.0.0/8"]}, "explicit"),
        ({"allow_destinations": ["10.0.0.0/8"]}, "allow_destinations"),
        ({"explicit": True, "allow_destinations": ["not-a-network"]}, "allow_destinations"),
        ({"explicit": True, "allow_destinations": "10.0.0.0/8"}, "allow_destinations"),
        ({"idle_timeout": 0}, "idle_timeout"),
        ({"idle_timeout": True}, "idle_timeout"),
        ({"idle_timeout": "60"}, "idle_timeout"),
        ({"allow_fxp": 1}, "allow_fxp"),
        ({"max_line_length": 100}, "max_line_length"),
        ({"max_line_length": 2048.0}, "max_line_length"),
    ],
)
def test_badOptionRaisesConfigErrorNamingTheKey(raw: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parseFTPOptions(raw)
    assert str(raised.value).startswith(key + ": ")


def test_upstreamAndExplicitBothRefused() -> None:
    raw = {"explicit": True, "allow_destinations": ["10.0.0.0/8"]}
    with pytest.raises(ConfigError, match=r"^upstream: .*not both"):
        parseFTPOptions(raw, hasUpstream=True)


def test_neitherUpstreamNorExplicitRefused() -> None:
    with pytest.raises(ConfigError, match=r"^upstream: .*neither"):
        parseFTPOptions({}, hasUpstream=False)


def test_filterParseOptionsIsParseFTPOptions() -> None:
    upstream = Address("192.0.2.1", 21)
    assert ftpFilter.parseOptions({"data_policy": "passive"}, upstream) == parseFTPOptions(
        {"data_policy": "passive"}
    )


def test_reverseListenerWithoutUpstreamIsAConfigError() -> None:
    with pytest.raises(ConfigError, match="^upstream: give either"):
        ftpFilter.parseOptions({}, None)


def test_explicitListenerWithAnUpstreamIsAConfigError() -> None:
    with pytest.raises(ConfigError, match="^upstream: give either"):
        ftpFilter.parseOptions(
            {"explicit": True, "allow_destinations": ["192.0.2.0/24"]}, Address("192.0.2.1", 21)
        )


@pytest.mark.parametrize(
    ("text", "network", "ports"),
    [
        ("10.0.0.0/8", "10.0.0.0/8", ()),
        ("10.1.2.3/8", "10.0.0.0/8", ()),
        ("192.0.2.7", "192.0.2.7/32", ()),
        ("192.0.2.7:21", "192.0.2.7/32", ((21, 21),)),
        ("10.0.0.0/8:21", "10.0.0.0/8", ((21, 21),)),
        ("10.0.0.0/8:21,2121", "10.0.0.0/8", ((21, 21), (2121, 2121))),
        ("10.0.0.0/8:2000-2100", "10.0.0.0/8", ((2000, 2100),)),
        ("10.0.0.0/8:21,2000-2100", "10.0.0.0/8", ((21, 21), (2000, 2100))),
        ("10.0.0.0/8:*", "10.0.0.0/8", ()),
        (" 10.0.0.0/8 ", "10.0.0.0/8", ()),
        ("2001:db8::1", "2001:db8::1/128", ()),
        ("::1/128:21,2121", "::1/128", ((21, 21), (2121, 2121))),
        ("[2001:db8::]/32", "2001:db8::/32", ()),
        ("[2001:db8::]/32:2000-2100", "2001:db8::/32", ((2000, 2100),)),
        ("[2001:db8::7]:21", "2001:db8::7/128", ((21, 21),)),
        ("[2001:db8::7]", "2001:db8::7/128", ()),
    ],
)
def test_parseDestination(text: str, network: str, ports: tuple[tuple[int, int], ...]) -> None:
    assert parseDestination(text) == Destination(ipaddress.ip_network(network), ports)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "nowhere",
        "10.0.0.0/33",
        "10.0.0.0/8:99999",
        "10.0.0.0/8:2100-2000",
        "10.0.0.0/8:ftp",
        "[2001:db8::",
        "[2001:db8::]x",
        "[2001:db8::]/32:70000",
    ],
)
def test_parseDestinationRejects(text: str) -> None:
    with pytest.raises(ValueError):
        parseDestination(text)


@pytest.mark.parametrize(
    ("text", "address", "allowed"),
    [
        ("192.0.2.0/24", Address("192.0.2.10", 21), True),
        ("192.0.2.0/24", Address("192.0.2.10", 65535), True),
        ("192.0.2.0/24", Address("192.0.3.10", 21), False),
        ("192.0.2.0/24:21", Address("192.0.2.10", 2121), False),
        ("192.0.2.0/24:21,2000-2100", Address("192.0.2.10", 2100), True),
        ("192.0.2.0/24:21,2000-2100", Address("192.0.2.10", 2101), False),
        ("[2001:db8::]/32:21", Address("2001:db8::7", 21), True),
        ("[2001:db8::]/32", Address("192.0.2.10", 21), False),
        ("0.0.0.0/0", Address("2001:db8::7", 21), False),
        ("0.0.0.0/0", Address("ftp.example.org", 21), False),
    ],
)
def test_destinationAllows(text: str, address: Address, allowed: bool) -> None:
    assert parseDestination(text).allows(address) is allowed


def test_optionsAllowAnyEntry() -> None:
    options = parseFTPOptions(
        {"explicit": True, "allow_destinations": ["192.0.2.0/24:21", "198.51.100.7"]}
    )
    assert options.allows(Address("192.0.2.10", 21))
    assert options.allows(Address("198.51.100.7", 2121))
    assert not options.allows(Address("192.0.2.10", 2121))


def test_attachWithoutOptionsRefused() -> None:
    with pytest.raises(ConfigError):
        ftpFilter.attachToSession(FakeSession(options=None))


def test_attachReverseProxyWithoutUpstreamRefused() -> None:
    session = FakeSession(options=parseFTPOptions({}), defaultUpstream=None)
    with pytest.raises(ConfigError):
        ftpFilter.attachToSession(session)


def test_refusalMessageIs421() -> None:
    assert ftpFilter.refusalMessage("limit 10 per client") == (
        b"421 too many connections (limit 10 per client); try again later\r\n"
    )
