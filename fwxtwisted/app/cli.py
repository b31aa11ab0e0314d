"""GatewayCommandOptions: the command-line options every filter's twistd shortcut shares."""

from __future__ import annotations

from typing import Any

from twisted.python import usage


class GatewayCommandOptions(usage.Options):
    """Options of C{twistd fwx FILTER ...}; a filter subclasses it to add its own.

    The result is the same table a TOML file gives, so both paths share one validation.
    """

    filterName = ""

    optParameters: list[list[Any]] = [
        ["listen", "l", None, "Endpoint to listen on, e.g. tcp:8080:interface=127.0.0.1."],
        ["upstream", "u", None, "Where sessions go: HOST:PORT or tcp:host=HOST:port=PORT."],
        ["connect-timeout", None, 10.0, "Seconds an outbound connect may take.", float],
        ["redirect-timeout", None, 60.0, "Seconds an unused permission stays open.", float],
        ["udp-idle-timeout", None, 60.0, "Seconds a UDP mapping lives without traffic.", float],
        ["port-range", None, None, "LOW-HIGH: ports for redirect listeners (default 20000-29999)."],
        ["max-sessions", None, None, "Refuse sessions beyond this many.", int],
        ["max-sessions-per-ip", None, None, "Refuse a client IP's sessions beyond this many.", int],
        ["shutdown-grace", None, 30.0, "Seconds running sessions get to finish at stop.", float],
        ["log-level", None, "info", "Lowest level logged: debug, info, warn, error, critical."],
        ["workers", None, 1, "Processes sharing the listeners (limits count per process).", int],
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
            "redirect_timeout": self["redirect-timeout"],
            "udp_idle_timeout": self["udp-idle-timeout"],
            "external_addresses": list(self["external-address"]),
            "fast_path": not self["no-fast-path"],
            "shutdown_grace": self["shutdown-grace"],
            "log_level": self["log-level"],
            "workers": self["workers"],
        }
        if self["port-range"]:
            table["port_ranges"] = {"*": self["port-range"]}
        if self["metrics"]:
            table["metrics"] = self["metrics"]
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
