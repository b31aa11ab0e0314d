"""Privileges: as root, `twistd --uid --gid fwx ftp --listen tcp:21:...` binds port 21
and then runs unprivileged, and downloads through it work.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.interop.support import curlDownload, gatewayLog, waitForLog
from tests.peers import PROJECT_ROOT, Gateway, isListening, sha256File, skipOrFail
from tests.reliability.conftest import Files, Upstream

pytestmark = pytest.mark.peers

PORT = 21
HOST = "127.0.0.1"
_TWISTD = "import sys; from twisted.scripts.twistd import run; sys.argv[0] = 'twistd'; run()"


def unprivileged() -> tuple[int, int]:
    """The uid of `nobody` and the gid of `nogroup` (or `nobody`)."""
    try:
        uid = pwd.getpwnam("nobody").pw_uid
    except KeyError:
        skipOrFail("no 'nobody' user to drop privileges to")
    for name in ("nogroup", "nobody"):
        with contextlib.suppress(KeyError):
            return uid, grp.getgrnam(name).gr_gid
    skipOrFail("no 'nogroup' or 'nobody' group to drop privileges to")


def port21Free() -> bool:
    if isListening(HOST, PORT):
        return False
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # As Twisted binds: connections of an earlier run in TIME_WAIT do not count.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((HOST, PORT))
        except OSError:
            return False
    return True


@contextlib.contextmanager
def privilegedGateway(uid: int, gid: int, options: list[str]) -> Iterator[Gateway]:
    """`twistd -n --uid UID --gid GID fwx ftp --listen tcp:21:interface=127.0.0.1 ...`,
    its log in a directory the unprivileged user owns; stopped at the end."""
    gateway = Gateway(["ftp", *options], (HOST, PORT), lifetime=120)
    logDir = gateway._makeLogDir()
    os.chown(logDir, uid, gid)
    gateway.logPath = logDir / "gateway.log"
    environment = dict(os.environ, PYTHONUNBUFFERED="1")
    environment["PYTHONPATH"] = os.pathsep.join(
        [str(PROJECT_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    command = [
        sys.executable,
        "-c",
        _TWISTD,
        "-n",
        f"--logfile={gateway.logPath}",
        "--pidfile=",
        "--uid",
        str(uid),
        "--gid",
        str(gid),
        "fwx",
        "ftp",
        "--listen",
        f"tcp:{PORT}:interface={HOST}",
        *options,
    ]
    try:
        process = gateway._spawn(command, env=environment, cwd=logDir)
        deadline = time.monotonic() + 15
        while not isListening(HOST, PORT):
            if process.poll() is not None:
                raise RuntimeError(f"gateway exited with {process.returncode}:\n{gateway.log()}")
            if time.monotonic() >= deadline:
                raise TimeoutError(f"nothing listens on port {PORT}:\n{gateway.log()}")
            time.sleep(0.05)
        yield gateway
    finally:
        gateway.stop()


def status(pid: int) -> dict[str, list[str]]:
    """/proc/PID/status as {field: values}."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.split()
    return fields


def test_bindsPort21ThenRunsUnprivileged(upstream: Upstream, files: Files, tmp_path: Path) -> None:
    if os.geteuid() != 0:
        skipOrFail("binding port 21, then dropping privileges, needs root")
    if not port21Free():
        pytest.skip(f"port {PORT} on {HOST} is taken by something else")
    uid, gid = unprivileged()
    options = ["--upstream", upstream.address, "--shutdown-grace", "1"]
    with privilegedGateway(uid, gid, options) as gateway:
        assert gateway.process is not None
        fields = status(gateway.process.pid)
        # Real, effective, saved and filesystem ids: all unprivileged, no way back.
        assert fields["Uid"] == [str(uid)] * 4, fields["Uid"]
        assert fields["Gid"] == [str(gid)] * 4, fields["Gid"]
        assert "0" not in fields.get("Groups", []), fields.get("Groups")
        assert int(fields["CapEff"][0], 16) == 0, fields["CapEff"]
        assert int(fields["CapPrm"][0], 16) == 0, fields["CapPrm"]

        out = tmp_path / "small.bin"
        curlDownload(f"ftp://{HOST}:{PORT}/{files.small.name}", out)
        assert sha256File(out) == files.small.sha256
        out.unlink()
        # Passive and active data channels both work unprivileged (ports >= 1024).
        curlDownload(f"ftp://{HOST}:{PORT}/{files.small.name}", out, ["-P", HOST, "--disable-eprt"])
        assert sha256File(out) == files.small.sha256
        # Summaries reach the log a moment after the session (fwxtwisted/logs.py).
        waitForLog(gateway, "ftp download 'small.bin'")
        log = gatewayLog(gateway)
        assert "Traceback" not in log, log
