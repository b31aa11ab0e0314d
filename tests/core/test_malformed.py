"""Malformed values for every key and every option of every filter: a ConfigError (or
a usage error) of one line, exit status 1, never a traceback.

The keys and options are read from the code (the TOML key sets, each filter's
command-line Options), so a new one is swept without touching this file.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.testing import MemoryReactorClock

from fwxtwisted.app import config as configModule
from fwxtwisted.app import tap
from fwxtwisted.app.build import buildService
from fwxtwisted.app.config import parseConfig, readConfigTable
from fwxtwisted.app.registry import discoverFilters
from fwxtwisted.errors import ConfigError
from fwxtwisted.filters.ftp import options as ftpOptionsModule
from fwxtwisted.logs import logLevel, setLogLevel

FILTERS = discoverFilters()

#: A valid listener of each filter (and each FTP mode) a malformed key is put into.
LISTENERS: dict[str, dict[str, object]] = {
    "tcp": {"filter": "tcp", "listen": "tcp:0:interface=127.0.0.1", "upstream": "127.0.0.1:21"},
    "ftp": {"filter": "ftp", "listen": "tcp:0:interface=127.0.0.1", "upstream": "127.0.0.1:21"},
    "ftp-explicit": {
        "filter": "ftp",
        "listen": "tcp:0:interface=127.0.0.1",
        "explicit": True,
        "allow_destinations": ["127.0.0.0/8"],
    },
}

#: Every key each filter takes on a listener, besides the listener's own.
FILTER_KEYS = {"tcp": set(), "ftp": set(ftpOptionsModule._KEYS), "ftp-explicit": set()}
FILTER_KEYS["ftp-explicit"] = FILTER_KEYS["ftp"]

#: Text an option or a string key might be given by mistake.
MISTAKES = [
    "",
    " ",
    "abc",
    "-1",
    "0",
    "nan",
    "inf",
    "-inf",
    "1e400",
    "9" * 400,
    "1.5",
    "bogus:2130",
    "tcp:abc",
    "tcp:1:foo=bar",
    "ssl:990:privateKey=/nonexistent",
    "999.1.1.1",
    "::1",
    "[::1]:21",
    "5-1",
    "1-99999",
    "0-0",
    "/nonexistent/file.pem",
    "/",
    "\x00",
    "\udcff",
    "é:1",
    "a" * 5000,
]

mistakenText = st.one_of(st.sampled_from(MISTAKES), st.text(max_size=40))

#: Whatever tomllib can produce.
tomlScalars = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    mistakenText,
    st.datetimes(),
    st.dates(),
    st.times(),
    st.just(datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)),
)
tomlValues = st.recursive(
    tomlScalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=8,
)


def build(table: dict[str, object]) -> None:
    """What the gateway does with a table before it listens."""
    config = parseConfig(table, "gateway.toml")
    buildService(config, FILTERS, MemoryReactorClock())


def assertOneLine(error: ConfigError) -> None:
    message = str(error)
    assert message.startswith("gateway.toml: "), message
    assert message.isprintable() and "Traceback" not in message, message


@pytest.fixture(autouse=True)
def keepLogLevel() -> Iterator[None]:
    level = logLevel()
    yield
    setLogLevel(level)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    key=st.sampled_from(sorted(configModule._TOP_KEYS - {"listeners"})),
    value=tomlValues,
)
def test_any_top_level_value_is_accepted_or_one_line(key: str, value: object) -> None:
    try:
        build({key: value, "listeners": [dict(LISTENERS["tcp"])]})
    except ConfigError as e:
        assertOneLine(e)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), kind=st.sampled_from(sorted(LISTENERS)), value=tomlValues)
def test_any_listener_value_is_accepted_or_one_line(
    data: st.DataObject, kind: str, value: object
) -> None:
    keys = sorted(configModule._LISTENER_KEYS | FILTER_KEYS[kind] | {"no_such_key"})
    key = data.draw(st.sampled_from(keys), label="key")
    listener = dict(LISTENERS[kind])
    listener[key] = value
    try:
        build({"listeners": [listener]})
    except ConfigError as e:
        assertOneLine(e)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), kind=st.sampled_from(sorted(LISTENERS)))
def test_several_listener_values_at_once_are_accepted_or_one_line(
    data: st.DataObject, kind: str
) -> None:
    keys = sorted(FILTER_KEYS[kind] | {"upstream", "listen"})
    listener = dict(LISTENERS[kind])
    listener.update(
        data.draw(st.dictionaries(st.sampled_from(keys), tomlValues, max_size=6), label="keys")
    )
    try:
        build({"listeners": [listener]})
    except ConfigError as e:
        assertOneLine(e)


@settings(max_examples=200, deadline=None)
@given(value=tomlValues)
def test_any_listeners_value_is_accepted_or_one_line(value: object) -> None:
    try:
        build({"listeners": value})
    except ConfigError as e:
        assertOneLine(e)


@settings(max_examples=200, deadline=None)
@given(content=st.binary(max_size=200))
def test_any_file_content_is_a_table_or_one_line(tmp_path_factory: Any, content: bytes) -> None:
    path = tmp_path_factory.mktemp("config") / "gateway.toml"
    path.write_bytes(content)
    try:
        readConfigTable(path)
    except ConfigError as e:
        message = str(e)
        assert message.startswith(f"{path}: ") and message.isprintable(), message


def test_a_file_that_is_not_utf8_is_one_line(tmp_path: Any) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes('# café\n[[listeners]]\nfilter = "tcp"\n'.encode("latin-1"))
    with pytest.raises(ConfigError) as caught:
        readConfigTable(path)
    assert str(caught.value) == (f"{path}: not UTF-8 text (TOML must be): byte 0xe9 at offset 5")


@pytest.mark.parametrize(
    ("listen", "why"),
    [
        ("nope:2130", "'nope:2130' is not a server endpoint: Unknown endpoint type: 'nope'"),
        (
            "tcp:abc",
            "'tcp:abc' is not a server endpoint: invalid literal for int() with base 10: 'abc'",
        ),
        (
            "tcp:2121:foo=bar",
            "'tcp:2121:foo=bar' is not a server endpoint: got an unexpected keyword argument 'foo'",
        ),
        (
            "ssl:990:privateKey=/nonexistent/key.pem",
            "'ssl:990:privateKey=/nonexistent/key.pem': No such file or directory: "
            "/nonexistent/key.pem",
        ),
    ],
)
def test_a_listen_endpoint_that_cannot_be_parsed_is_one_line(listen: str, why: str) -> None:
    with pytest.raises(ConfigError) as caught:
        build({"listeners": [{**LISTENERS["tcp"], "listen": listen}]})
    assert str(caught.value) == f"gateway.toml: listeners[0].listen: {why}"


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, 2**70, 1e300])
@pytest.mark.parametrize("key", ["connect_timeout", "shutdown_grace"])
def test_seconds_must_be_finite_and_sane(key: str, value: float) -> None:
    with pytest.raises(ConfigError) as caught:
        build({key: value, "listeners": [dict(LISTENERS["tcp"])]})
    assert str(caught.value).startswith(f"gateway.toml: {key}: must be a number of seconds")


# The command line: every option of every filter's twistd command.


def commands() -> list[tuple[str, list[str], list[str], list[str]]]:
    """(command, the arguments of a valid run, its value options, its flags)."""
    result = []
    for name, _, makeOptions, _ in tap.Options().subCommands:
        options = makeOptions()
        parameters = sorted(o[:-1] for o in options.longOpt if o.endswith("="))
        flags = sorted(o for o in options.longOpt if not o.endswith("="))
        flags = [f for f in flags if f not in ("help", "version")]
        base = ["--listen", "tcp:0:interface=127.0.0.1"]
        if name != "demo":
            base += ["--upstream", "127.0.0.1:21"]
        result.append((name, base, parameters, flags))
    return result


COMMANDS = commands()


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    """What twistd would do with C{twistd fwx ARGV} up to listening: (exit status,
    lines on stderr)."""
    capsys.readouterr()
    try:
        options = tap.Options()
        options.parseOptions(argv)
        tap.makeService(options)
    except SystemExit as e:
        status = e.code
    else:
        status = 0
    captured = capsys.readouterr()
    assert captured.out == ""
    assert isinstance(status, int)
    return status, captured.err.splitlines()


def assertFailedInOneLine(status: int, lines: list[str], argv: list[str]) -> None:
    assert status == 1, (argv, lines)
    assert lines and lines[0].startswith("fwx"), (argv, lines)
    # The error, and for a usage error a hint to --help.
    assert len(lines) == 1 or (len(lines) == 2 and "--help'" in lines[1]), (argv, lines)
    assert all(line.isprintable() for line in lines), (argv, lines)
    assert not any("Traceback" in line for line in lines), (argv, lines)


def test_every_filter_has_a_command() -> None:
    assert {name for name, *_ in COMMANDS} == {"demo", *FILTERS}
    assert all(parameters for _, _, parameters, _ in COMMANDS)


@settings(
    max_examples=600,
    deadline=None,
    # capsys is read before and after each example.
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(data=st.data(), value=mistakenText)
def test_any_option_value_runs_or_fails_in_one_line(
    capsys: pytest.CaptureFixture[str], data: st.DataObject, value: str
) -> None:
    name, base, parameters, flags = data.draw(st.sampled_from(COMMANDS), label="command")
    option = data.draw(st.sampled_from(parameters), label="option")
    flagLists = st.lists(st.sampled_from(flags), max_size=2, unique=True) if flags else st.just([])
    extra = data.draw(flagLists, label="flags")
    argv = [name, *base, *[f"--{flag}" for flag in extra], f"--{option}", value]
    status, lines = run(argv, capsys)
    if status != 0:
        assertFailedInOneLine(status, lines, argv)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (
            ["ftp", "--listen", "tcp:0", "--upstream", "127.0.0.1:21", "--idle-timeout", "abc"],
            ["fwx ftp: --idle-timeout: expected seconds, got 'abc'"],
        ),
        (
            ["tcp", "--listen", "tcp:0", "--upstream", "127.0.0.1:21", "--max-sessions", "x"],
            ["fwx tcp: --max-sessions: expected a whole number, got 'x'"],
        ),
        (
            ["ftp", "--listen", "tcp:0", "--upstream", "127.0.0.1:21", "--shutdown-grace", "nan"],
            ["fwx ftp: --shutdown-grace: expected seconds, got 'nan'"],
        ),
        (["tcp", "--listen", "tcp:0", "--bogus"], ["fwx tcp: option --bogus not recognized"]),
        (
            ["ftp", "--listen", "tcp:0", "--upstream", "127.0.0.1:21"]
            + ["--allow-destination", "10.0.0.0/8"],
            [
                "fwx ftp: --allow-destination: only with --explicit or --transparent "
                "(a reverse proxy goes to --upstream)"
            ],
        ),
        (
            ["tcp", "--listen", "tcp:0", "--upstream", "127.0.0.1:21", "--port-range", "1-2"],
            ["fwx tcp: option --port-range not recognized"],
        ),
        (
            ["ftp", "--listen", "tcp:0", "--upstream", "127.0.0.1:21"]
            + ["--udp-idle-timeout", "5"],
            ["fwx ftp: option --udp-idle-timeout not recognized"],
        ),
        (["--no-such-thing"], ["fwx: option --no-such-thing not recognized"]),
        (["gopher"], ["fwx: Unknown command: gopher"]),
    ],
)
def test_a_usage_error_is_one_line_and_a_hint(
    capsys: pytest.CaptureFixture[str], argv: list[str], expected: list[str]
) -> None:
    status, lines = run(argv, capsys)
    command = expected[0].split(":", 1)[0]
    assert status == 1
    assert lines == [*expected, f"{command}: try 'twistd {command} --help'"]


def test_an_unknown_listen_endpoint_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    status, lines = run(["tcp", "--listen", "bogus:2130", "--upstream", "127.0.0.1:21"], capsys)
    assert (status, lines) == (
        1,
        [
            "fwx: command line: listeners[0].listen: "
            "'bogus:2130' is not a server endpoint: Unknown endpoint type: 'bogus'"
        ],
    )


@pytest.mark.parametrize("ip", ["192.0.2.1", "2001:db8::1"])
def test_an_external_address_of_another_machine_is_refused(
    capsys: pytest.CaptureFixture[str], ip: str
) -> None:
    # Accepted, it failed every session later: "421 ... Couldn't bind: 99".
    argv = ["tcp", "--listen", "tcp:0", "--upstream", "127.0.0.1:21"]
    status, lines = run(
        [*argv, "--external-address", "127.0.0.2", "--external-address", ip], capsys
    )
    assert (status, lines) == (
        1,
        [
            f"fwx: command line: external_addresses: cannot send from {ip} "
            "(Cannot assign requested address): not an address of this machine?"
        ],
    )


def test_local_external_addresses_are_accepted(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["tcp", "--listen", "tcp:0", "--upstream", "127.0.0.1:21"]
    assert run([*argv, "--external-address", "127.0.0.2"], capsys) == (0, [])


def test_the_readme_names_every_key_and_every_option() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    keys = configModule._TOP_KEYS | configModule._LISTENER_KEYS | ftpOptionsModule._KEYS
    for key in sorted(keys):
        assert f"`{key}`" in readme or f"[{key}]" in readme, f"README misses the key {key}"
    for name, _, parameters, flags in COMMANDS:
        if name == "demo":
            continue
        for option in parameters + flags:
            assert f"--{option}" in readme, f"README misses {name} --{option}"
