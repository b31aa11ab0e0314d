"""The demo: the FTP gateway in front of an embedded, read-only FTP server."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from twisted.application.service import MultiService
from twisted.cred.checkers import AllowAnonymousAccess
from twisted.cred.portal import Portal
from twisted.internet.interfaces import IListeningPort
from twisted.protocols import ftp
from twisted.protocols.ftp import FTP, FTPFactory, FTPRealm
from twisted.python import log as legacyLog
from twisted.python import usage
from twisted.python.filepath import FilePath

from fwxtwisted.app.build import buildService
from fwxtwisted.app.config import checkServerEndpoint, parseConfig
from fwxtwisted.app.service import FirewallService
from fwxtwisted.filters.cli import CommandOptions
from fwxtwisted.interfaces import IFilter
from fwxtwisted.net.quietport import listenQuietly

SAMPLE_FOLDER = Path(__file__).parent / "demodata"


class DemoOptions(CommandOptions):
    """twistd fwx demo [--listen ENDPOINT] [--folder DIR]"""

    optParameters: list[list[Any]] = [
        ["listen", "l", "tcp:2121:interface=127.0.0.1", "Where the gateway listens."],
        ["folder", None, str(SAMPLE_FOLDER), "Folder the embedded FTP server serves, read-only."],
    ]

    def postOptions(self) -> None:
        try:
            checkServerEndpoint(self["listen"])
        except ValueError as e:
            raise usage.UsageError(f"--listen: {e}") from None
        if not os.path.isdir(self["folder"]):
            raise usage.UsageError(f"--folder: {self['folder']!r} is not a directory")


class _EmbeddedServerLog:
    """C{twisted.protocols.ftp}'s log while the demo runs: the embedded server's
    errors still reach the log, its chatter (each data port's set-up, timeout and
    clean-up: two thirds of a demo's log) does not, so the gateway's lines stand out."""

    err = staticmethod(legacyLog.err)

    @staticmethod
    def msg(*message: Any, **kw: Any) -> None:
        if kw.get("isError"):
            legacyLog.msg(*message, **kw)


class _QuietFTP(FTP):
    """Twisted's FTP server protocol whose data ports log no start and close lines."""

    def listenFactory(self, port: int, factory: Any, interface: str = "") -> Any:  # type: ignore[override]
        from twisted.internet import reactor

        return listenQuietly(reactor, port, factory, interface)


class DemoService(MultiService):
    """Starts Twisted's FTP server on a free loopback port, then the gateway before it.

    Twisted's FTP server checks no data-connection peer; it is here only as something
    to talk to.  The gateway in front of it does check.
    """

    def __init__(self, options: DemoOptions, filters: dict[str, IFilter], reactor: Any) -> None:
        super().__init__()
        self._options = options
        self._filters = filters
        self._reactor = reactor
        self._embedded: IListeningPort | None = None
        self._loud: tuple[Any, bool] | None = None

    def privilegedStartService(self) -> None:
        folder = FilePath(self._options["folder"])
        factory = FTPFactory(Portal(FTPRealm(folder.path), [AllowAnonymousAccess()]))
        factory.protocol = _QuietFTP
        factory.allowAnonymous = True
        factory.noisy = False
        self._quieten()
        self._embedded = listenQuietly(self._reactor, 0, factory, "127.0.0.1")
        serverPort = self._embedded.getHost().port  # type: ignore[union-attr]
        config = parseConfig(
            {
                "listeners": [
                    {
                        "name": "demo",
                        "filter": "ftp",
                        "listen": self._options["listen"],
                        "upstream": f"127.0.0.1:{serverPort}",
                    }
                ]
            },
            "demo",
        )
        firewall: FirewallService = buildService(config, self._filters, self._reactor)
        firewall.setServiceParent(self)
        super().privilegedStartService()
        port = firewall.ports[0].getHost().port  # type: ignore[attr-defined]
        sys.stdout.write(
            f"fwx demo: FTP gateway on 127.0.0.1:{port}, in front of an FTP server on "
            f"127.0.0.1:{serverPort} serving {folder.path} (read-only, anonymous).\n"
            f"Try:\n"
            f"  curl ftp://127.0.0.1:{port}/\n"
            f"  curl ftp://127.0.0.1:{port}/hello.txt\n"
            f"  curl -P 127.0.0.1 ftp://127.0.0.1:{port}/hello.txt    # active mode\n"
        )
        sys.stdout.flush()

    def _quieten(self) -> None:
        # Twisted's FTP module logs through its module-level names: the demo's process
        # runs no other FTP server, and they are put back at stop.
        self._loud = (ftp.log, ftp.DTPFactory.noisy)  # type: ignore[attr-defined]
        ftp.log = _EmbeddedServerLog  # type: ignore[attr-defined,assignment]
        ftp.DTPFactory.noisy = False

    def stopService(self) -> Any:
        result = super().stopService()
        if self._embedded is not None:
            self._embedded.stopListening()
            self._embedded = None
        if self._loud is not None:
            ftp.log, ftp.DTPFactory.noisy = self._loud  # type: ignore[attr-defined]
            self._loud = None
        return result
