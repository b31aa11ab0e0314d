"""The path of a server's 227 back to the client, as docs/architecture.md writes it down:
the filter's modules it passes, and control.py entered once."""

from __future__ import annotations

import sys
from types import FrameType
from typing import Any

from fwxtwisted.filters.ftp.filter import ftpFilter
from fwxtwisted.filters.ftp.options import parseFTPOptions
from fwxtwisted.testing import FakeSession

FTP = "fwxtwisted/filters/ftp/"

#: The order docs/architecture.md gives (first entered).
DOCUMENTED = [
    "control.py",
    "conversation.py",
    "lines.py",
    "replies.py",
    "channel.py",
    "datachannels.py",
    "dataaddress.py",
    "security.py",
]


def _module(frame: FrameType | None) -> str | None:
    """The FTP filter module of the nearest fwxtwisted frame, else that frame's path."""
    while frame is not None:
        name = frame.f_code.co_filename.replace("\\", "/")
        if "/fwxtwisted/" in name:
            return "fwxtwisted/" + name.split("/fwxtwisted/", 1)[1]
        frame = frame.f_back
    return None


def test_a227PassesEightModulesAndEntersControlOnce() -> None:
    session = FakeSession(options=parseFTPOptions({}), autoGrant=True)
    session.attachFilter(ftpFilter)
    session.succeedUpstream()
    session.serverSends(b"220 hi\r\n")
    session.clientSends(b"PASV\r\n")
    session.toClient = b""
    entered: list[str] = []
    controlEntries: list[str | None] = []

    def profile(frame: FrameType, event: str, arg: Any) -> None:
        if event != "call":
            return
        module = _module(frame)
        if module is None or not module.startswith(FTP):
            return
        name = module[len(FTP) :]
        if name not in entered:
            entered.append(name)
        caller = _module(frame.f_back)
        if name == "control.py" and caller != module:
            controlEntries.append(caller)

    previous = sys.getprofile()
    sys.setprofile(profile)
    try:
        session.serverSends(b"227 Entering Passive Mode (203,0,113,50,156,64).\r\n")
    finally:
        sys.setprofile(previous)
    assert session.toClient == b"227 Entering Passive Mode (198,51,100,1,156,64).\r\n"
    assert entered == DOCUMENTED
    assert controlEntries == ["fwxtwisted/relay/filterchain.py"]
