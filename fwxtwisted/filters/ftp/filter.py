"""FTPFilter: the FTP gateway filter plugin and its twistd command."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from twisted.python import usage
from zope.interface import implementer

from fwxtwisted.address import Address
from fwxtwisted.errors import ConfigError
from fwxtwisted.filters.cli import REDIRECT_OPTIONS, GatewayCommandOptions, seconds
from fwxtwisted.filters.ftp.control import FTPSessionFilter
from fwxtwisted.filters.ftp.options import FTPOptions, parseFTPOptions
from fwxtwisted.filters.ftp.protocols import FTP_CONTROL, FTP_DATA
from fwxtwisted.filters.ftp.replies import formatReply
from fwxtwisted.filters.ftp.transparent import parseTransparentFTPOptions
from fwxtwisted.interfaces import (
    IConnectionRefuser,
    IFilter,
    ISession,
    ISessionFilter,
    ITransparentFilter,
)


class FTPCommandOptions(GatewayCommandOptions):
    """twistd fwx ftp --listen ENDPOINT (--upstream ENDPOINT | --explicit
    --allow-destination CIDR[:PORTS]... | --transparent [--allow-destination
    CIDR[:PORTS]]...) [options]"""

    filterName = "ftp"

    optParameters: list[list[Any]] = [
        *GatewayCommandOptions.optParameters,
        *REDIRECT_OPTIONS,
        ["passive-ports", None, None, "LOW-HIGH: ports for client-facing passive listeners."],
        [
            "data-policy",
            None,
            "client",
            "Data connections toward the server: client (as the client does), passive, active.",
        ],
        [
            "transparent-data",
            None,
            None,
            "With --transparent, passive data connections: permit (the server's reply "
            "unchanged, that one flow let through; default) or relay (via the gateway).",
        ],
        ["advertise-address", None, None, "IPv4 address to write in 227 replies (behind NAT)."],
        [
            "idle-timeout",
            None,
            900.0,
            "Seconds of control-channel silence before closing.",
            seconds,
        ],
        ["login-timeout", None, 60.0, "Seconds a client has to log in.", seconds],
        ["tls-cert", None, None, "PEM certificate the gateway shows FTPS clients."],
        ["tls-key", None, None, "PEM private key of --tls-cert."],
        ["tls-chain", None, None, "PEM intermediate certificates sent with --tls-cert."],
        ["client-ca", None, None, "PEM CAs: FTPS clients must present a certificate they sign."],
        [
            "upstream-tls",
            None,
            "auto",
            "TLS toward the server: auto (as the client), always, never.",
        ],
        ["upstream-ca", None, None, "PEM CAs to check the server's certificate (default: system)."],
        [
            "tls-ciphers",
            None,
            None,
            "OpenSSL cipher string for TLS 1.2, both sides (default: ECDHE/DHE with AES-GCM "
            "or ChaCha20 only).",
        ],
        ["tls-min-version", None, None, "Oldest TLS version accepted, both sides: 1.2 or 1.3."],
        [
            "data-connect-timeout",
            None,
            None,
            "Seconds an offered data port waits for its peer (alias of --redirect-timeout).",
            seconds,
        ],
    ]
    optFlags: list[list[str | None]] = [
        *GatewayCommandOptions.optFlags,
        ["explicit", None, "Explicit proxy: clients log in as USER name@host[:port]."],
        ["allow-fxp", None, "Let PORT/EPRT name other hosts and ports below 1024."],
        ["require-tls", None, "Refuse logins before AUTH TLS."],
        ["require-tls-reuse", None, "Protected data connections must resume the TLS session."],
        ["allow-clear-data", None, "With --require-tls, let clients choose PROT C (clear data)."],
        ["upstream-insecure", None, "Do not check the server's certificate (logged as a warning)."],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["allow-destination"] = []

    def opt_allow_destination(self, destination: str) -> None:
        """CIDR[:PORTS] an explicit-proxy session may reach (repeat; needed with --explicit)."""
        self["allow-destination"].append(destination)

    def postOptions(self) -> None:
        super().postOptions()
        if bool(self["upstream"]) + bool(self["explicit"]) + bool(self["transparent"]) != 1:
            raise usage.UsageError("give one of --upstream ENDPOINT, --explicit, --transparent")
        if self["allow-destination"] and not (self["explicit"] or self["transparent"]):
            raise usage.UsageError(
                "--allow-destination: only with --explicit or --transparent (a reverse "
                "proxy goes to --upstream)"
            )
        if self["transparent-data"] and not self["transparent"]:
            raise usage.UsageError("--transparent-data: only with --transparent")

    def gatewayTable(self) -> dict[str, object]:
        table = super().gatewayTable()
        if self["data-connect-timeout"] is not None:
            table["redirect_timeout"] = self["data-connect-timeout"]
        return table

    def filterOptions(self) -> dict[str, object]:
        options: dict[str, object] = {
            "data_policy": self["data-policy"],
            "idle_timeout": self["idle-timeout"],
            "login_timeout": self["login-timeout"],
            "allow_fxp": bool(self["allow-fxp"]),
        }
        if self["explicit"]:
            options["explicit"] = True
            options["allow_destinations"] = list(self["allow-destination"])
        if self["transparent-data"]:
            options["transparent_data"] = self["transparent-data"]
        if self["passive-ports"]:
            options["passive_ports"] = self["passive-ports"]
        if self["advertise-address"]:
            options["advertise_address"] = self["advertise-address"]
        for flag in ("require-tls", "require-tls-reuse", "upstream-insecure", "allow-clear-data"):
            if self[flag]:
                options[flag.replace("-", "_")] = True
        for name in (
            "tls-cert",
            "tls-key",
            "tls-chain",
            "client-ca",
            "upstream-ca",
            "tls-ciphers",
            "tls-min-version",
        ):
            if self[name]:
                options[name.replace("-", "_")] = self[name]
        options["upstream_tls"] = self["upstream-tls"]
        return options


@implementer(IFilter, IConnectionRefuser, ITransparentFilter)
class FTPFilter:
    """FTP gateway: reverse, explicit or transparent proxy, every data-channel mode,
    IPv4 and IPv6."""

    name = "ftp"
    description = "FTP gateway (reverse, explicit USER name@host, or transparent proxy)."
    protocols = (FTP_CONTROL, FTP_DATA)

    def parseOptions(self, options: Mapping[str, object], upstream: Address | None) -> object:
        return parseFTPOptions(options, hasUpstream=upstream is not None)

    def parseTransparentOptions(self, options: Mapping[str, object]) -> object:
        return parseTransparentFTPOptions(options)

    def commandLineOptions(self) -> usage.Options:
        return FTPCommandOptions()

    def attachToSession(self, session: ISession) -> ISessionFilter:
        options = session.options
        if not isinstance(options, FTPOptions):
            raise ConfigError("the ftp filter was not configured")
        if not options.explicit and session.defaultUpstream is None:
            raise ConfigError("the ftp filter needs an upstream, or explicit = true")
        return FTPSessionFilter(session, options)

    def refusalMessage(self, reason: str) -> bytes:
        return formatReply(421, f"too many connections ({reason}); try again later")


ftpFilter = FTPFilter()
