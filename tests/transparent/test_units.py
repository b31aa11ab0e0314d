"""Transparent mode without namespaces: configuration, the command line, destination
allow-lists, original destinations on plain sockets, and the nft JSON the gateway sends."""

from __future__ import annotations

import json
import socket

import pytest
from twisted.python import usage

from fwxtwisted.address import Address
from fwxtwisted.app.build import buildService
from fwxtwisted.app.config import parseConfig
from fwxtwisted.app.transparent import refusal
from fwxtwisted.errors import ConfigError
from fwxtwisted.filters.tcp import TCPCommandOptions, tcpFilter
from fwxtwisted.net.destinations import parseDestination
from fwxtwisted.net.nft import FutureConnectTable, NftRunner
from fwxtwisted.net.origdst import isLocalAddress, originalDestination, parseTCPServerEndpoint


def table(**listener: object) -> dict[str, object]:
    return {"listeners": [{"filter": "tcp", "listen": "tcp:0", **listener}]}


def test_transparent_listener_config() -> None:
    config = parseConfig(
        table(transparent=True, allow_destinations=["203.0.113.0/24:7000-7001"]), "t"
    )
    listener = config.listeners[0]
    assert listener.transparent and listener.upstream is None
    assert [str(d) for d in listener.allowDestinations] == ["203.0.113.0/24:7000-7001"]
    assert listener.options == {}
    buildService(config, {"tcp": tcpFilter})


def test_transparent_with_upstream_refused() -> None:
    with pytest.raises(ConfigError, match="upstream: a transparent listener"):
        parseConfig(table(transparent=True, upstream="192.0.2.1:80"), "t")


def test_transparent_needs_one_worker() -> None:
    data = table(transparent=True)
    data["workers"] = 2
    with pytest.raises(ConfigError, match="workers = 1"):
        parseConfig(data, "t")


def test_filter_without_transparent_mode_refused() -> None:
    class Plain:
        name = "plain"
        protocols = ()

        def parseOptions(self, options: object, upstream: object) -> None:
            return None

    config = parseConfig(
        {"listeners": [{"filter": "plain", "listen": "tcp:0", "transparent": True}]}, "t"
    )
    with pytest.raises(ConfigError, match="plain filter has no transparent mode"):
        buildService(config, {"plain": Plain()})  # type: ignore[dict-item]


def test_allow_destinations_without_transparent_stays_the_filters() -> None:
    config = parseConfig(table(upstream="192.0.2.1:80", allow_destinations=["10.0.0.0/8"]), "t")
    assert config.listeners[0].options == {"allow_destinations": ["10.0.0.0/8"]}


def test_command_line() -> None:
    options = TCPCommandOptions()
    options.parseOptions(
        ["--listen", "tcp:7000", "--transparent", "--allow-destination", "2001:db8::/32"]
    )
    listener = options.listenerConfig()
    assert listener["transparent"] is True
    assert listener["allow_destinations"] == ["2001:db8::/32"]
    for argv in (
        ["--listen", "tcp:1", "--transparent", "--upstream", "192.0.2.1:1"],
        ["--listen", "tcp:1"],
        ["--listen", "tcp:1", "--upstream", "192.0.2.1:1", "--allow-destination", "::/0"],
    ):
        with pytest.raises(usage.UsageError):
            TCPCommandOptions().parseOptions(argv)


def test_refusal() -> None:
    allow = [parseDestination("203.0.113.0/24:7000")]
    assert refusal(Address("127.0.0.1", 80), []) == "its destination is the gateway itself"
    assert refusal(Address("203.0.113.9", 7000), allow) is None
    assert refusal(Address("203.0.113.9", 7001), allow) is not None
    assert refusal(Address("198.51.100.9", 7000), []) is None


def test_is_local_address() -> None:
    assert isLocalAddress("127.0.0.1")
    assert not isLocalAddress("192.0.2.77")


def test_endpoint_parse() -> None:
    assert parseTCPServerEndpoint("tcp:7000:interface=192.0.2.1:backlog=9") == (
        7000,
        "192.0.2.1",
        9,
    )
    assert parseTCPServerEndpoint("tcp6:port=7000") == (7000, "::", 50)
    with pytest.raises(ValueError):
        parseTCPServerEndpoint("ssl:443")


def test_original_destination_without_nat_is_the_local_address() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        with socket.create_connection(server.getsockname()):
            accepted, _ = server.accept()
            with accepted:
                assert originalDestination(accepted) == Address(*server.getsockname())


def test_nft_commands() -> None:
    nft = FutureConnectTable(NftRunner(), "fwxtest")
    setup = nft.setupCommands(4000, 4001)
    # Whatever a previous run left is deleted first, in the same transaction.
    assert setup[:3] == [
        {"add": {"table": {"family": "inet", "name": "fwxtest"}}},
        {"delete": {"table": {"family": "inet", "name": "fwxtest"}}},
        {"add": {"table": {"family": "inet", "name": "fwxtest"}}},
    ]
    sets = [c["add"]["set"]["name"] for c in setup if "set" in c.get("add", {})]
    assert sets == ["exact4", "any4", "exact6", "any6"]
    add = nft.addCommand(Address("192.0.2.10", 0), Address("203.0.113.20", 7001), 65.0)
    assert add[0]["add"]["element"]["name"] == "any4"
    assert add[0]["add"]["element"]["elem"] == [
        {"elem": {"val": {"concat": ["192.0.2.10", "203.0.113.20", 7001]}, "timeout": 65}}
    ]
    delete = nft.deleteCommand(Address("2001:db8::1", 5000), Address("2001:db8:2::5", 80))
    assert delete[0]["delete"]["element"]["name"] == "exact6"
    json.loads(NftRunner.encode(setup))


def test_external_pool_by_family() -> None:
    from fwxtwisted.net.externals import ExternalAddressPool

    pool = ExternalAddressPool(["203.0.113.1", "2001:db8:3::1", "203.0.113.9"])
    assert [pool.nextFor("192.0.2.5") for _ in range(3)] == [
        "203.0.113.1",
        "203.0.113.9",
        "203.0.113.1",
    ]
    assert pool.nextFor("2001:db8::5") == "2001:db8:3::1"
    assert ExternalAddressPool(["203.0.113.1"]).nextFor("2001:db8::5") is None
