"""The rtsp filter's options: TOML keys and the command line, one clear line per mistake."""

from __future__ import annotations

from pathlib import Path

import pytest
from twisted.python import usage

from fwxtwisted.address import Address
from fwxtwisted.app.build import buildService
from fwxtwisted.app.config import parseConfig, readConfigTable
from fwxtwisted.errors import ConfigError
from fwxtwisted.filters.rtsp.filter import RTSPCommandOptions, rtspFilter
from fwxtwisted.filters.rtsp.options import RTSPOptions, TransportPolicy, parseRTSPOptions

EXAMPLE = Path(__file__).parents[2] / "examples" / "rtsp-reverse.toml"
UPSTREAM = Address("127.0.0.1", 554)


def test_the_example_configuration_builds_a_service() -> None:
    config = parseConfig(readConfigTable(str(EXAMPLE)), str(EXAMPLE))
    service = buildService(config, {"rtsp": rtspFilter})
    (listener,) = service.listeners  # type: ignore[attr-defined]
    assert listener.options == RTSPOptions(rtpPorts=(30000, 30999))


def test_defaults() -> None:
    options = rtspFilter.parseOptions({}, UPSTREAM)
    assert options == RTSPOptions()
    assert RTSPOptions().transportPolicy is TransportPolicy.CLIENT


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"transport_policy": "sctp"}, "transport_policy: 'sctp' is not one of client, udp, tcp"),
        ({"rtp_ports": "9-3"}, "rtp_ports: "),
        ({"rtp_ports": 3000}, "rtp_ports: expected 'LOW-HIGH', got 3000"),
        ({"rtp_ports": "3000-3001"}, "rtp_ports: '3000-3001' holds no two even-based pairs"),
        ({"session_timeout": "soon"}, "session_timeout: expected seconds, got 'soon'"),
        ({"session_timeout": -1}, "session_timeout: expected a positive number"),
        ({"allow_multicast": "yes"}, "allow_multicast: expected true or false"),
        ({"max_line_length": 10}, "max_line_length: expected 256 to"),
        ({"passive_ports": "1-2"}, "passive_ports: not an option of the rtsp filter"),
    ],
)
def test_a_bad_value_is_one_line_starting_with_its_key(
    raw: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        parseRTSPOptions(raw)
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)


def test_an_upstream_is_required() -> None:
    with pytest.raises(ConfigError, match="^upstream: "):
        rtspFilter.parseOptions({}, None)


def test_the_command_line_gives_the_same_table_as_toml() -> None:
    options = RTSPCommandOptions()
    options.parseOptions(
        [
            "--listen",
            "tcp:8554",
            "--upstream",
            "127.0.0.1:554",
            "--rtp-ports",
            "30000-30999",
            "--transport-policy",
            "tcp",
            "--session-timeout",
            "30",
            "--max-sessions",
            "5",
        ]
    )
    table = options.listenerConfig()
    assert table["filter"] == "rtsp"
    assert parseRTSPOptions(
        {
            k: v
            for k, v in table.items()
            if k not in ("filter", "listen", "upstream", "max_sessions")
        }
    ) == RTSPOptions(
        rtpPorts=(30000, 30999), transportPolicy=TransportPolicy.TCP, sessionTimeout=30.0
    )


def test_the_command_line_needs_an_upstream() -> None:
    with pytest.raises(usage.UsageError, match="--upstream"):
        RTSPCommandOptions().parseOptions(["--listen", "tcp:8554"])


def test_a_session_timeout_that_is_not_a_number_is_a_usage_error() -> None:
    with pytest.raises(usage.UsageError, match="--session-timeout: expected seconds, got 'x'"):
        RTSPCommandOptions().parseOptions(
            ["--listen", "tcp:8554", "--upstream", "h:554", "--session-timeout", "x"]
        )
