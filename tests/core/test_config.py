"""TOML configuration: a valid file's values, and one clear line for every mistake."""

from __future__ import annotations

from pathlib import Path

import pytest
from twisted.internet import reactor

from fwxtwisted.address import Address
from fwxtwisted.app.build import buildService
from fwxtwisted.app.config import GatewayConfig, loadConfig, parseUpstream
from fwxtwisted.errors import ConfigError
from fwxtwisted.filters.tcp import tcpFilter
from fwxtwisted.net.ports import ANY_IP

EXAMPLE = Path(__file__).parents[2] / "examples" / "tcp-forward.toml"

LISTENER = """
[[listeners]]
filter = "tcp"
listen = "tcp:2100:interface=127.0.0.1"
upstream = "127.0.0.1:21"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(text)
    return path


def load(tmp_path: Path, text: str) -> GatewayConfig:
    return loadConfig(write(tmp_path, text))


def error(tmp_path: Path, text: str, build: bool = False) -> str:
    """The message of the ConfigError that loading (and building) C{text} raises."""
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        config = loadConfig(path)
        if build:
            buildService(config, {"tcp": tcpFilter}, reactor)
    message = str(caught.value)
    assert "\n" not in message
    prefix = f"{path}: "
    assert message.startswith(prefix)
    return message[len(prefix) :]


def test_valid_file_gives_its_settings_and_listeners(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """
external_addresses = ["127.0.0.2", "::1"]
connect_timeout = 3
redirect_timeout = 30.5
udp_idle_timeout = 7
fast_path = false
[port_ranges]
"127.0.0.1" = "30000-30099"
"*" = "31000-31999"
[[listeners]]
name = "front"
filter = "tcp"
listen = "tcp:2100:interface=127.0.0.1"
upstream = "tcp:host=127.0.0.1:port=21"
max_sessions = 5
""",
    )
    settings = config.settings
    assert settings.externalAddresses == ("127.0.0.2", "::1")
    assert (settings.connectTimeout, settings.redirectTimeout) == (3.0, 30.5)
    assert settings.udpIdleTimeout == 7.0
    assert settings.fastPath is False
    assert settings.portRanges == {"127.0.0.1": (30000, 30099), ANY_IP: (31000, 31999)}
    [listener] = config.listeners
    assert (listener.name, listener.filter) == ("front", "tcp")
    assert listener.listen == "tcp:2100:interface=127.0.0.1"
    assert listener.upstream == Address("127.0.0.1", 21)
    assert listener.maxSessions == 5


def test_defaults_fill_what_the_file_leaves_out(tmp_path: Path) -> None:
    config = load(tmp_path, LISTENER)
    settings = config.settings
    assert (settings.connectTimeout, settings.redirectTimeout) == (10.0, 60.0)
    assert settings.udpIdleTimeout == 60.0 and settings.fastPath is True
    assert settings.externalAddresses == () and settings.portRanges == {}
    assert config.listeners[0].name == "tcp-0"
    assert settings.workers == 1


def test_example_tcp_forward_config_is_valid() -> None:
    config = loadConfig(EXAMPLE)
    assert config.settings.externalAddresses == ("127.0.0.2", "127.0.0.3")
    [listener] = config.listeners
    assert listener.filter == "tcp"
    assert listener.upstream == Address("127.0.0.1", 38080)
    service = buildService(config, {"tcp": tcpFilter}, reactor)
    assert not service.running


def test_unknown_top_level_key(tmp_path: Path) -> None:
    assert error(tmp_path, "colour = 'blue'\n" + LISTENER) == "unknown key 'colour'"


def test_file_that_is_not_toml(tmp_path: Path) -> None:
    message = error(tmp_path, "[listeners\n")
    assert message.startswith("not valid TOML: ") and "line 1" in message


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"
    with pytest.raises(ConfigError) as caught:
        loadConfig(path)
    assert str(caught.value) == f"{path}: cannot read: No such file or directory"


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("30100-30000", "'30100-30000' is not a range of ports 1-65535 with LOW <= HIGH"),
        ("0-10", "'0-10' is not a range of ports 1-65535 with LOW <= HIGH"),
        ("30000", "'30000' is not LOW-HIGH"),
        ("30000-70000", "port 70000 is out of range 0-65535"),
        ("a-b", "port 'a' is not a number"),
    ],
)
def test_bad_port_range(tmp_path: Path, text: str, why: str) -> None:
    message = error(tmp_path, f'[port_ranges]\n"127.0.0.1" = "{text}"\n' + LISTENER)
    assert message == f"port_ranges.127.0.0.1: {why}"


def test_port_range_for_something_not_an_ip(tmp_path: Path) -> None:
    message = error(tmp_path, '[port_ranges]\n"gateway" = "30000-30100"\n' + LISTENER)
    assert message == "port_ranges.gateway: not an IP address"


def test_bad_external_address(tmp_path: Path) -> None:
    message = error(tmp_path, 'external_addresses = ["127.0.0.2", "127.0.0"]\n' + LISTENER)
    assert message == "external_addresses: '127.0.0' is not an IP address"


def test_external_addresses_not_a_list(tmp_path: Path) -> None:
    message = error(tmp_path, 'external_addresses = "127.0.0.2"\n' + LISTENER)
    assert message == "external_addresses: must be a list of IP addresses"


@pytest.mark.parametrize("key", ["connect_timeout", "redirect_timeout", "udp_idle_timeout"])
@pytest.mark.parametrize("value", ["0", "-1", '"10"', "true"])
def test_bad_timeout(tmp_path: Path, key: str, value: str) -> None:
    message = error(tmp_path, f"{key} = {value}\n" + LISTENER)
    assert message == f"{key}: must be a number of seconds > 0, at most 31536000 (a year)"


def test_fast_path_not_a_boolean(tmp_path: Path) -> None:
    assert error(tmp_path, 'fast_path = "yes"\n' + LISTENER) == "fast_path: must be true or false"


def test_workers_from_the_file(tmp_path: Path) -> None:
    assert load(tmp_path, "workers = 3\n" + LISTENER).settings.workers == 3


@pytest.mark.parametrize("value", ["0", "65", '"2"', "true", "1.5"])
def test_bad_worker_count(tmp_path: Path, value: str) -> None:
    message = error(tmp_path, f"workers = {value}\n" + LISTENER)
    assert message == "workers: must be a whole number from 1 to 64"


@pytest.mark.parametrize("value", ["shared", "reuseport"])
def test_worker_sockets_from_the_file(tmp_path: Path, value: str) -> None:
    text = f'workers = 2\nworker_sockets = "{value}"\n' + LISTENER
    assert load(tmp_path, text).settings.workerSockets == value


def test_worker_sockets_default_to_shared(tmp_path: Path) -> None:
    assert load(tmp_path, "workers = 2\n" + LISTENER).settings.workerSockets == "shared"


@pytest.mark.parametrize("value", ['"fork"', "true", "2", '""'])
def test_bad_worker_sockets(tmp_path: Path, value: str) -> None:
    message = error(tmp_path, f"worker_sockets = {value}\n" + LISTENER)
    assert message == 'worker_sockets: must be "shared" or "reuseport"'


def test_workers_share_only_tcp_listeners(tmp_path: Path) -> None:
    text = 'workers = 2\n[[listeners]]\nfilter = "tcp"\nlisten = "unix:/tmp/fwx.sock"\n'
    message = error(tmp_path, text)
    assert message == (
        "listeners[0].listen: 2 workers share tcp or tcp6 listeners only, not 'unix:/tmp/fwx.sock'"
    )


def test_one_worker_takes_any_listener(tmp_path: Path) -> None:
    text = 'workers = 1\n[[listeners]]\nfilter = "tcp"\nlisten = "unix:/tmp/fwx.sock"\n'
    assert load(tmp_path, text).listeners[0].listen == "unix:/tmp/fwx.sock"


def test_metrics_endpoint_from_the_file(tmp_path: Path) -> None:
    config = load(tmp_path, 'metrics = "tcp:9120:interface=127.0.0.1"\n' + LISTENER)
    assert config.metrics == "tcp:9120:interface=127.0.0.1"
    assert load(tmp_path, LISTENER).metrics is None


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ('"bogus:9120"', "'bogus:9120' is not a server endpoint (Unknown endpoint type: 'bogus')"),
        (
            '"tcp:port"',
            "'tcp:port' is not a server endpoint (invalid literal for int() with base 10: 'port')",
        ),
        ("9120", 'must be an endpoint, e.g. "tcp:9120"'),
        ('""', 'must be an endpoint, e.g. "tcp:9120"'),
    ],
)
def test_bad_metrics_endpoint(tmp_path: Path, value: str, why: str) -> None:
    assert error(tmp_path, f"metrics = {value}\n" + LISTENER) == f"metrics: {why}"


def test_no_listeners(tmp_path: Path) -> None:
    message = error(tmp_path, "connect_timeout = 5\n")
    assert message == "listeners: at least one [[listeners]] table is needed"


def test_listener_without_a_filter(tmp_path: Path) -> None:
    message = error(tmp_path, '[[listeners]]\nlisten = "tcp:2100"\n')
    assert message == 'listeners[0].filter: a filter name is needed (e.g. "tcp" or "ftp")'


def test_listener_without_an_endpoint(tmp_path: Path) -> None:
    message = error(tmp_path, LISTENER + '[[listeners]]\nfilter = "tcp"\n')
    assert message == 'listeners[1].listen: an endpoint is needed (e.g. "tcp:2121")'


@pytest.mark.parametrize(
    ("upstream", "why"),
    [
        ("127.0.0.1", "no port in address '127.0.0.1'"),
        ("127.0.0.1:99999", "port 99999 is out of range 0-65535"),
        ("tcp:host=127.0.0.1", "'tcp:host=127.0.0.1' needs a host and a port"),
        (
            "tcp:host=h:port=1:bindAddress=x",
            "unsupported endpoint argument 'bindAddress' in 'tcp:host=h:port=1:bindAddress=x'",
        ),
    ],
)
def test_bad_upstream(tmp_path: Path, upstream: str, why: str) -> None:
    text = f'[[listeners]]\nfilter = "tcp"\nlisten = "tcp:2100"\nupstream = "{upstream}"\n'
    assert error(tmp_path, text) == f"listeners[0].upstream: {why}"


def test_bad_max_sessions(tmp_path: Path) -> None:
    message = error(tmp_path, LISTENER + "max_sessions = 0\n")
    assert message == "listeners[0].max_sessions: must be a whole number >= 1"


def test_unknown_filter(tmp_path: Path) -> None:
    text = '[[listeners]]\nfilter = "gopher"\nlisten = "tcp:70"\n'
    message = error(tmp_path, text, build=True)
    assert message == "listeners[0].filter: unknown filter 'gopher' (known: tcp)"


def test_bad_filter_option(tmp_path: Path) -> None:
    message = error(tmp_path, LISTENER + "colour = 'blue'\n", build=True)
    assert message == "listeners[0].colour: not an option of the tcp filter"


@pytest.mark.parametrize(
    "text",
    ["127.0.0.1:21", "[::1]:21", "tcp:host=127.0.0.1:port=21", "tcp:127.0.0.1:21:timeout=5"],
)
def test_upstream_spellings(text: str) -> None:
    expected = Address("::1", 21) if "::1" in text else Address("127.0.0.1", 21)
    assert parseUpstream(text) == expected


def test_proxy_protocol_per_listener(tmp_path: Path) -> None:
    config = load(tmp_path, LISTENER + "proxy_protocol = true\n" + LISTENER)
    assert [listener.proxyProtocol for listener in config.listeners] == [True, False]
    assert "proxy_protocol" not in config.listeners[0].options


def test_proxy_protocol_not_a_boolean(tmp_path: Path) -> None:
    assert "proxy_protocol: must be true or false" in error(
        tmp_path, LISTENER + 'proxy_protocol = "yes"\n'
    )


def test_proxy_protocol_not_before_tls(tmp_path: Path) -> None:
    text = LISTENER.replace('"tcp:2100', '"ssl:2100') + "proxy_protocol = true\n"
    assert "listeners[0].proxy_protocol: not with a ssl: listener" in error(tmp_path, text)
