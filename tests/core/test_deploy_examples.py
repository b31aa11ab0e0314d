"""examples/deploy and docs/deployment.md: files that cannot run here are parsed, and
every option they give twistd or `fwx ftp` exists (haproxy.cfg runs in test_scaleout)."""

from __future__ import annotations

import configparser
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from twisted.internet import reactor

from fwxtwisted.app.build import buildService
from fwxtwisted.app.config import loadConfig
from fwxtwisted.filters.ftp.filter import ftpFilter

ROOT = Path(__file__).parents[2]
DEPLOY = ROOT / "examples" / "deploy"
DOC = ROOT / "docs" / "deployment.md"
TWISTD = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]


def helpText(*args: str) -> str:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    result = subprocess.run(
        [*TWISTD, *args, "--help"], env=env, capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def knownOptions() -> tuple[set[str], set[str]]:
    """(twistd's own long options, `fwx ftp`'s), read from their --help."""

    def options(text: str) -> set[str]:
        return set(re.findall(r"^\s+(?:-\w, )?(--[a-z][a-z0-9-]*)", text, re.MULTILINE))

    return options(helpText()), options(helpText("fwx", "ftp"))


def split(argv: list[str]) -> tuple[list[str], list[str]]:
    """A twistd command line's (twistd options, fwx ftp options)."""
    fwx = argv.index("fwx")
    assert argv[fwx + 1] == "ftp", argv
    return argv[:fwx], argv[fwx + 2 :]


def check(argv: list[str], known: tuple[set[str], set[str]]) -> None:
    twistdPart, ftpPart = split(argv)
    for part, allowed, what in ((twistdPart, known[0], "twistd"), (ftpPart, known[1], "fwx ftp")):
        for token in part:
            if token.startswith("--"):
                name = token.split("=", 1)[0]
                assert name in allowed, f"{name} is not a {what} option ({argv})"


def shellCommands(text: str) -> list[list[str]]:
    """Every `... fwx ftp ...` command in shell-like text (comments, continuations)."""
    lines = [re.sub(r"^\s*#\s?", "", line) for line in text.splitlines()]
    joined = re.sub(r"\\\n\s*", " ", "\n".join(lines))
    commands = []
    for line in joined.splitlines():
        if "fwx ftp" in line:
            words = shlex.split(line[line.index("twistd") if "twistd" in line else 0 :])
            if "fwx" not in words:
                words = ["fwx", *words[words.index("ftp") :]]
            commands.append(words)
    return commands


def test_gateway_toml_is_a_valid_proxied_ftp_listener() -> None:
    config = loadConfig(DEPLOY / "gateway.toml")
    (listener,) = config.listeners
    assert listener.proxyProtocol and listener.filter == "ftp"
    service = buildService(config, {"ftp": ftpFilter}, reactor)
    assert service.listeners[0].options.advertiseAddress == "192.0.2.11"  # type: ignore[attr-defined]


def test_systemd_units(knownOptions: tuple[set[str], set[str]]) -> None:
    units = {}
    for name in ("fwx-ftp.socket", "fwx-ftp.service"):
        parser = configparser.ConfigParser(interpolation=None, strict=True)
        parser.optionxform = str  # type: ignore[assignment,method-assign]
        parser.read_string((DEPLOY / name).read_text())
        units[name] = parser
    assert units["fwx-ftp.socket"]["Socket"]["ListenStream"].endswith(":21")
    service = units["fwx-ftp.service"]["Service"]
    argv = shlex.split(service["ExecStart"].replace("\\\n", " "))
    assert argv[0] == "/usr/bin/twistd"
    twistdPart, ftpPart = split(argv[1:])
    assert {"--uid=fwx", "--gid=fwx", "--nodaemon"} <= set(twistdPart)
    assert ftpPart[ftpPart.index("--listen") + 1] == "systemd:domain=INET:index=0"
    assert "--proxy-protocol" in ftpPart
    check(argv[1:], knownOptions)
    assert units["fwx-ftp.service"]["Unit"]["Requires"] == "fwx-ftp.socket"


def test_containerfile(knownOptions: tuple[set[str], set[str]]) -> None:
    text = (DEPLOY / "Containerfile").read_text()
    instructions = {}
    for line in text.splitlines():
        if line and not line.startswith("#") and not line.startswith(" "):
            word, _, rest = line.partition(" ")
            instructions[word] = rest
    assert instructions["FROM"].startswith("docker.io/library/python:3.11")
    assert instructions["USER"] == "65534:65534"
    entrypoint = json.loads(instructions["ENTRYPOINT"])
    command = json.loads(instructions["CMD"])
    assert entrypoint[0] == "twistd"
    check(entrypoint[1:] + command, knownOptions)
    for source in re.findall(r"^COPY (.+) /src/?\S*$", text, re.MULTILINE):
        for path in source.split():
            assert (ROOT / path).exists(), path


def loadYaml(text: str) -> object:
    import yaml  # type: ignore[import-untyped]  # a test dependency (pyproject.toml)

    return yaml.safe_load(text)


def test_daemonset(knownOptions: tuple[set[str], set[str]]) -> None:
    text = (DEPLOY / "daemonset.yaml").read_text()
    assert "\t" not in text
    assert re.search(r"^kind: DaemonSet$", text, re.MULTILINE)
    document = loadYaml(text)
    assert isinstance(document, dict)
    assert document["apiVersion"] == "apps/v1" and document["kind"] == "DaemonSet"
    spec = document["spec"]["template"]["spec"]
    assert spec["hostNetwork"] is True
    assert document["spec"]["selector"]["matchLabels"].items() <= (
        document["spec"]["template"]["metadata"]["labels"].items()
    )
    (container,) = spec["containers"]
    env = {item["name"]: item for item in container["env"]}
    assert env["NODE_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.hostIP"
    args = container["args"]
    assert all(isinstance(arg, str) for arg in args)
    assert args[args.index("--advertise-address") + 1] == "$(NODE_IP)"
    assert re.fullmatch(r"\d+-\d+", args[args.index("--passive-ports") + 1])
    # The image's entry point (Containerfile) comes first.
    check(["twistd", "--nodaemon", "--pidfile=", "--logfile=-", "fwx", *args], knownOptions)
    assert spec["terminationGracePeriodSeconds"] > float(args[args.index("--shutdown-grace") + 1])


def test_ipvs_recipe_marks_control_and_data_ports_alike() -> None:
    nft = (DEPLOY / "ipvs-fwmark.nft").read_text()
    keepalived = (DEPLOY / "keepalived.conf").read_text()
    body = "\n".join(line.split("#", 1)[0] for line in keepalived.splitlines())
    assert body.count("{") == body.count("}")
    marked = re.search(r"tcp dport \{ (\d+), (\d+-\d+) \} meta mark set (\d+)", nft)
    assert marked, nft
    port, passive, mark = marked.groups()
    assert re.search(rf"^virtual_server fwmark {mark} \{{", body, re.MULTILINE)
    assert re.search(r"^\s+persistence_timeout [1-9]\d*$", body, re.MULTILINE)
    assert f"connect_port {port}" in body
    assert f"--passive-ports {passive}" in keepalived
    if shutil.which("nft") and os.geteuid() == 0:
        result = subprocess.run(
            ["nft", "-c", "-f", str(DEPLOY / "ipvs-fwmark.nft")],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert result.returncode == 0, result.stderr


def test_every_documented_command_uses_existing_options(
    knownOptions: tuple[set[str], set[str]],
) -> None:
    commands = []
    for path in [DOC, *sorted(DEPLOY.iterdir())]:
        commands += [(path.name, argv) for argv in shellCommands(path.read_text())]
    assert {name for name, _ in commands} >= {DOC.name, "fwx-ftp.service", "keepalived.conf"}
    for _, argv in commands:
        check(argv, knownOptions)


def test_an_unknown_option_is_caught(knownOptions: tuple[set[str], set[str]]) -> None:
    with pytest.raises(AssertionError, match="--passive-range is not a fwx ftp option"):
        check(["twistd", "-n", "fwx", "ftp", "--passive-range", "1-2"], knownOptions)
    with pytest.raises(AssertionError, match="--user is not a twistd option"):
        check(["twistd", "--user=fwx", "fwx", "ftp"], knownOptions)
