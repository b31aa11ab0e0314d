"""The process-wide log level (what is dropped, what is kept, how it is set), the
rendering of kept events, and summaries held to the end of the reactor turn."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import reactor, task
from twisted.internet.task import deferLater
from twisted.logger import (
    LogEvent,
    LogLevel,
    eventAsJSON,
    eventFromJSON,
    formatEvent,
    formatEventAsClassicLogText,
)

from fwxtwisted import logs
from fwxtwisted.address import Address
from fwxtwisted.app.config import ListenerConfig, parseConfig
from fwxtwisted.app.primary import BoundListener
from fwxtwisted.app.service import FirewallService
from fwxtwisted.errors import ConfigError
from fwxtwisted.filters.tcp import TCPCommandOptions, tcpFilter
from fwxtwisted.logs import Logger, SummaryBuffer, logLevel, setLogLevel
from fwxtwisted.permissions.gateway import Gateway

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


def test_text_survives_the_json_a_worker_sends() -> None:
    event = emitted("{session}: {why}", session="s2", why="a {brace} and }{")
    copied = eventFromJSON(eventAsJSON(event))
    assert formatEvent(copied) == formatEvent(event) == "s2: a {brace} and }{"


def test_classic_line_names_namespace_and_level() -> None:
    events: list[LogEvent] = []
    Logger(namespace="fwxtwisted.permissions.session", observer=events.append).warn("{n} lost", n=3)
    [event] = events
    line = formatEventAsClassicLogText(event, formatTime=lambda when: "T")
    assert line == "T [fwxtwisted.permissions.session#warn] 3 lost\n"


def test_a_format_calling_a_field_is_left_to_twisted() -> None:
    event = emitted("{now()}", now=lambda: "called")
    assert formatEvent(event) == "called"
    assert "fwx_format" not in event


def test_a_format_naming_a_missing_field_is_left_to_twisted() -> None:
    event = emitted("{absent}")
    assert event["log_format"] == "{absent}"
    assert "fwx_format" not in event


# Summaries held a short while when a gateway runs.


@pytest.fixture
def held() -> Iterator[tuple[SummaryBuffer, task.Clock]]:
    """A buffer holding summaries, on a clock the test advances."""
    buffer, clock = SummaryBuffer(), task.Clock()
    buffer.start(clock)
    yield buffer, clock
    buffer.stop()


def logInto(
    buffer: SummaryBuffer, events: list[LogEvent], monkeypatch: pytest.MonkeyPatch
) -> Logger:
    monkeypatch.setattr(logs, "summaries", buffer)
    return Logger(observer=events.append)


def test_a_summary_is_published_after_the_delay_with_its_own_time(
    held: tuple[SummaryBuffer, task.Clock], monkeypatch: pytest.MonkeyPatch
) -> None:
    buffer, clock = held
    events: list[LogEvent] = []
    log = logInto(buffer, events, monkeypatch)
    before = time.time()
    log.info("{session}: closed", fwx_event="session.closed", session="s1")
    clock.advance(buffer.delay / 2)
    assert events == []
    clock.advance(buffer.delay / 2)
    [event] = events
    assert formatEvent(event) == "s1: closed"
    assert before <= event["log_time"] <= time.time()


def test_an_ordinary_event_publishes_held_summaries_first(
    held: tuple[SummaryBuffer, task.Clock], monkeypatch: pytest.MonkeyPatch
) -> None:
    buffer, clock = held
    events: list[LogEvent] = []
    log = logInto(buffer, events, monkeypatch)
    log.info("first", fwx_event="session.closed")
    log.info("second", fwx_event="ftp.transfer")
    log.warn("third")
    assert [formatEvent(e) for e in events] == ["first", "second", "third"]
    assert clock.getDelayedCalls() == []


def test_held_summaries_are_bounded(
    held: tuple[SummaryBuffer, task.Clock], monkeypatch: pytest.MonkeyPatch
) -> None:
    buffer, _ = held
    events: list[LogEvent] = []
    log = logInto(buffer, events, monkeypatch)
    for index in range(buffer.limit):
        log.info("{index}", fwx_event="session.closed", index=index)
    assert len(events) == buffer.limit


def test_stopping_publishes_what_is_held_and_ends_holding(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    buffer, clock = SummaryBuffer(), task.Clock()
    events: list[LogEvent] = []
    log = logInto(buffer, events, monkeypatch)
    buffer.start(clock)
    log.info("held", fwx_event="session.closed")
    buffer.stop()
    assert [formatEvent(e) for e in events] == ["held"]
    log.info("at once", fwx_event="session.closed")
    assert len(events) == 2


def test_without_a_running_gateway_summaries_are_published_at_once() -> None:
    events: list[LogEvent] = []
    Logger(observer=events.append).info("now", fwx_event="session.closed")
    assert [formatEvent(e) for e in events] == ["now"]


@pytest_twisted.ensureDeferred
async def test_a_running_service_holds_summaries_until_it_stops() -> None:
    config = ListenerConfig(
        "l", "tcp", "tcp:0:interface=127.0.0.1", upstream=Address("127.0.0.1", 9)
    )
    service = FirewallService(Gateway(reactor), [BoundListener(config, tcpFilter, None)])
    events: list[LogEvent] = []
    log = Logger(observer=events.append)
    service.startService()
    try:
        log.info("held", fwx_event="session.closed")
        assert events == []
        await deferLater(reactor, logs.summaries.delay, lambda: None)
        assert [formatEvent(e) for e in events] == ["held"]
    finally:
        await service.stopService()
    log.info("at once", fwx_event="session.closed")
    assert len(events) == 2
