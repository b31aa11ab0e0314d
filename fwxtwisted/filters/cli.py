"""GatewayCommandOptions: the command-line options every filter's twistd shortcut shares."""

from __future__ import annotations

import math
from typing import Any

from twisted.python import usage


def seconds(text: str) -> float:
    """A command-line time in seconds. @raise ValueError: not a finite number."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise ValueError(f"expected seconds, got {text!r}")
    return value


def wholeNumber(text: str) -> int:
    """A command-line count. @raise ValueError: not a whole number."""
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"expected a whole number, got {text!r}") from None


class _NamedCoercion(usage.CoerceParameter):
    """Reports a value its option cannot take as C{--name: why}, not as twisted's
    "Parameter type enforcement failed"."""

    def dispatch(self, parameterName: str, value: str | None) -> None:
        if value is None:
            raise usage.UsageError(f"--{parameterName}: a value is needed")
        try:
            self.options.opts[parameterName] = self.coerce(value)
        except ValueError as e:
            raise usage.UsageError(f"--{parameterName}: {e}") from None


class CommandOptions(usage.Options):
    """usage.Options whose value errors name the option (C{--idle-timeout: expected
    seconds, got 'abc'})."""

    def __init__(self) -> None:
        super().__init__()
        for name, handler in self._dispatch.items():
            if isinstance(handler, usage.CoerceParameter):
                self._dispatch[name] = _NamedCoercion(self, handler.coerce)


#: Options of a filter that opens secondary connections (redirectConnections): add
#: them to its optParameters.  A filter that opens none leaves them out of its --help.
REDIRECT_OPTIONS: list[list[Any]] = [
    ["redirect-timeout", None, 60.0, "Seconds an unused permission stays open.", seconds],
    ["port-range", None, None, "LOW-HIGH: ports for redirect listeners (default 20000-29999)."],
]

#: Options of a filter whose secondary channels may be UDP.
UDP_OPTIONS: list[list[Any]] = [
    ["udp-idle-timeout", None, 60.0, "Seconds a UDP mapping lives without traffic.", seconds],
]
UDP_FLAGS: list[list[str | None]] = [
    [
        "kernel-udp",
        None,
        "Let the kernel carry UDP media between known peers (nftables NAT; needs root "
        "or CAP_NET_ADMIN); without it, or where it cannot, Python relays it.",
    ],
]


class GatewayCommandOptions(CommandOptions):
    """Options of C{twistd fwx FILTER ...}; a filter subclasses it to add its own.

    The result is the same table a TOML file gives, so both paths share one validation.
    """

    filterName = ""

    optParameters: list[list[Any]] = [
        ["listen", "l", None, "Endpoint to listen on, e.g. tcp:8080:interface=127.0.0.1."],
        ["upstream", "u", None, "Where sessions go: HOST:PORT or tcp:host=HOST:port=PORT."],
        ["connect-timeout", None, 10.0, "Seconds an outbound connect may take.", seconds],
        ["max-sessions", None, None, "Refuse sessions beyond this many.", wholeNumber],
        [
            "max-sessions-per-ip",
            None,
            None,
            "Refuse a client IP's sessions beyond this many.",
            wholeNumber,
        ],
        ["shutdown-grace", None, 30.0, "Seconds running sessions get to finish at stop.", seconds],
        ["log-level", None, "info", "Lowest level logged: debug, info, warn, error, critical."],
        [
            "workers",
            None,
            1,
            "Processes sharing the listeners (limits count per process).",
            wholeNumber,
        ],
        [
            "worker-sockets",
            None,
            None,
            "shared (default): workers accept from one socket per listener; reuseport: each "
            "its own SO_REUSEPORT socket and port-range slice.",
        ],
        ["metrics", None, None, "Endpoint serving Prometheus /metrics, e.g. tcp:9120."],
    ]
    optFlags: list[list[str | None]] = [
        ["no-fast-path", None, "Never move bytes with splice(2); always relay in Python."],
        [
            "proxy-protocol",
            None,
            "Connections come from a balancer and start with a PROXY header (v1 or v2).",
        ],
        [
            "transparent",
            None,
            "Take connections the kernel redirects (nftables redirect or "
            "tproxy); each goes to its original destination, not to an upstream.",
        ],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["external-address"] = []
        self["allow-destination"] = []

    def opt_external_address(self, ip: str) -> None:
        """An IP outbound legs leave from (repeat for a pool; sessions take turns)."""
        self["external-address"].append(ip)

    def opt_allow_destination(self, destination: str) -> None:
        """CIDR[:PORTS] a transparent session may go to (repeat; default: anywhere but
        the gateway itself)."""
        self["allow-destination"].append(destination)

    def postOptions(self) -> None:
        if not self["listen"]:
            raise usage.UsageError("--listen ENDPOINT is required")

    def gatewayTable(self) -> dict[str, object]:
        """The gateway-wide keys, shaped as in TOML."""
        table: dict[str, object] = {
            "connect_timeout": self["connect-timeout"],
            "external_addresses": list(self["external-address"]),
            "fast_path": not self["no-fast-path"],
            "shutdown_grace": self["shutdown-grace"],
            "log_level": self["log-level"],
            "workers": self["workers"],
        }
        # Options only some filters take (REDIRECT_OPTIONS, UDP_OPTIONS).
        for option, key in (
            ("redirect-timeout", "redirect_timeout"),
            ("udp-idle-timeout", "udp_idle_timeout"),
        ):
            if option in self:
                table[key] = self[option]
        if self.get("kernel-udp"):
            table["kernel_udp"] = True
        if self.get("port-range"):
            table["port_ranges"] = {"*": self["port-range"]}
        if self["metrics"]:
            table["metrics"] = self["metrics"]
        if self["worker-sockets"]:
            table["worker_sockets"] = self["worker-sockets"]
        return table

    def listenerConfig(self) -> dict[str, object]:
        """The one listener of this command, shaped as a TOML [[listeners]] table."""
        table: dict[str, object] = {"filter": self.filterName, "listen": self["listen"]}
        if self["upstream"]:
            table["upstream"] = self["upstream"]
        if self["max-sessions"] is not None:
            table["max_sessions"] = self["max-sessions"]
        if self["max-sessions-per-ip"] is not None:
            table["max_sessions_per_ip"] = self["max-sessions-per-ip"]
        if self["proxy-protocol"]:
            table["proxy_protocol"] = True
        if self["transparent"]:
            table["transparent"] = True
            if self["allow-destination"]:
                table["allow_destinations"] = list(self["allow-destination"])
        table.update(self.filterOptions())
        return table

    def filterOptions(self) -> dict[str, object]:
        """The filter's own keys; subclasses override."""
        return {}
