"""The process-wide log level: what is dropped, what is kept, and how it is set."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from twisted.logger import LogEvent, LogLevel, formatEvent

from fwxtwisted.config import parseConfig
from fwxtwisted.errors import ConfigError
from fwxtwisted.filters.tcp import TCPCommandOptions
from fwxtwisted.logs import Logger, logLevel, setLogLevel

LISTENERS = [{"filter": "tcp", "listen": "tcp:0", "upstream": "127.0.0.1:9"}]


@pytest.fixture(autouse=True)
def restoreLevel() -> Iterator[None]:
    before = logLevel()
    yield
    setLogLevel(before)


def heard(level: str) -> list[LogLevel]:
    """The levels a Logger passes on with the threshold at C{level}."""
    events: list[LogEvent] = []
    setLogLevel(level)
    log = Logger(observer=events.append)
    log.debug("d")
    log.info("i")
    log.warn("w")
    log.error("e")
    log.critical("c")
    return [event["log_level"] for event in events]


def test_default_drops_debug_only() -> None:
    assert logLevel() == "info"
    assert heard("info") == [LogLevel.info, LogLevel.warn, LogLevel.error, LogLevel.critical]


def test_debug_keeps_everything() -> None:
    assert heard("debug")[0] is LogLevel.debug
    assert len(heard("debug")) == 5


def test_warn_drops_info() -> None:
    assert heard("warn") == [LogLevel.warn, LogLevel.error, LogLevel.critical]


def test_failures_pass_any_threshold() -> None:
    events: list[LogEvent] = []
    setLogLevel("critical")
    try:
        raise ValueError("boom")
    except ValueError:
        Logger(observer=events.append).failure("it broke")
    assert [event["log_failure"].value.args for event in events] == [("boom",)]


def test_unknown_level_names_the_choices() -> None:
    with pytest.raises(ValueError, match="'loud' is not one of debug, info, warn"):
        setLogLevel("loud")
    assert logLevel() == "info"


def test_namespace_is_the_calling_module() -> None:
    assert Logger().namespace == __name__


def test_config_key_sets_the_level() -> None:
    config = parseConfig({"log_level": "warn", "listeners": LISTENERS}, "gw.toml")
    assert config.settings.logLevel == "warn"


def test_config_key_defaults_to_info() -> None:
    assert parseConfig({"listeners": LISTENERS}, "gw.toml").settings.logLevel == "info"


def test_bad_config_level_is_one_line_naming_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        parseConfig({"log_level": "verbose", "listeners": LISTENERS}, "gw.toml")
    assert str(caught.value) == (
        "gw.toml: log_level: must be one of debug, info, warn, error, critical"
    )


def test_command_line_option_reaches_the_table() -> None:
    options = TCPCommandOptions()
    options.parseOptions(["--listen", "tcp:0", "--upstream", "127.0.0.1:9", "--log-level", "debug"])
    assert options.gatewayTable()["log_level"] == "debug"


def emitted(format: str, **fields: object) -> LogEvent:
    events: list[LogEvent] = []
    Logger(observer=events.append).info(format, **fields)
    [event] = events
    return event


def test_text_is_what_twisted_would_render() -> None:
    format = "{session}: {client} sent {count} bytes in {duration:.3f} s ({why!r})"
    fields = {"session": "s1", "client": "127.0.0.1:4000", "count": 7, "duration": 0.25}
    event = emitted(format, why="a {brace}", **fields)
    assert formatEvent(event) == "s1: 127.0.0.1:4000 sent 7 bytes in 0.250 s ('a {brace}')"
    assert event["fwx_format"] == format
    assert event["count"] == 7 and event["why"] == "a {brace}"


def test_a_format_calling_a_field_is_left_to_twisted() -> None:
    event = emitted("{now()}", now=lambda: "called")
    assert formatEvent(event) == "called"
    assert "fwx_format" not in event


def test_a_format_naming_a_missing_field_is_left_to_twisted() -> None:
    event = emitted("{absent}")
    assert event["log_format"] == "{absent}"
    assert "fwx_format" not in event
