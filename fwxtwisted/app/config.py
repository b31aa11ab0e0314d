"""Gateway configuration: TOML (or command-line) tables to validated dataclasses."""

from __future__ import annotations

import ipaddress
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from twisted.internet.endpoints import serverFromString

from fwxtwisted.address import Address, parsePort
from fwxtwisted.checks import SECONDS_LIMIT, isSeconds, parsePortRange
from fwxtwisted.errors import ConfigError
from fwxtwisted.logs import LEVEL_NAMES
from fwxtwisted.net.destinations import Destination, parseDestination
from fwxtwisted.net.ports import ANY_IP
from fwxtwisted.settings import GatewaySettings

_LISTENER_KEYS = {
    "name",
    "filter",
    "listen",
    "upstream",
    "max_sessions",
    "max_sessions_per_ip",
    "proxy_protocol",
    "transparent",
}

#: Listener endpoint kinds that cannot read a PROXY header first: TLS starts at once
#: (the header precedes it), and Twisted's own haproxy: wrapper would read it twice.
_NO_PROXY_HEADER_KINDS = ("ssl", "haproxy")
_TOP_KEYS = {
    "external_addresses",
    "connect_timeout",
    "redirect_timeout",
    "udp_idle_timeout",
    "fast_path",
    "kernel_udp",
    "port_ranges",
    "listeners",
    "shutdown_grace",
    "max_pending_redirects",
    "log_level",
    "workers",
    "worker_sockets",
    "metrics",
}

#: Listener endpoint kinds whose sockets worker processes can share.
_SHARABLE_KINDS = ("tcp", "tcp6")

#: How worker processes get their listening sockets (see workers.py).
WORKER_SOCKETS = ("shared", "reuseport")

#: More worker processes than this is a typo, not a machine.
MAX_WORKERS = 64


@dataclass(frozen=True)
class ListenerConfig:
    """One primary listener: which filter, where, and where its sessions go by default."""

    name: str
    filter: str
    listen: str
    upstream: Address | None = None
    maxSessions: int | None = None
    maxSessionsPerIP: int | None = None
    #: The filter's own keys, still raw: the filter's parseOptions validates them.
    options: Mapping[str, object] = field(default_factory=dict)
    #: Each connection starts with a PROXY protocol header (v1 or v2) naming the client.
    proxyProtocol: bool = False
    #: Transparent mode: each session's upstream is its connection's original
    #: destination (nftables redirect or tproxy); see docs/architecture.md.
    transparent: bool = False
    #: Transparent mode only: the original destinations allowed (empty: any but the
    #: gateway's own addresses).
    allowDestinations: tuple[Destination, ...] = ()


@dataclass(frozen=True)
class GatewayConfig:
    """A whole gateway: shared settings and its listeners."""

    settings: GatewaySettings
    listeners: tuple[ListenerConfig, ...]
    source: str = "<config>"
    #: The server endpoint serving /metrics, or None (no metrics).
    metrics: str | None = None


def loadConfig(path: str | Path) -> GatewayConfig:
    """Read and validate a TOML file. @raise ConfigError: one line naming file and key."""
    return parseConfig(readConfigTable(path), str(path))


def readConfigTable(path: str | Path) -> dict[str, object]:
    """A TOML file's table, not validated yet. @raise ConfigError: unreadable, not TOML."""
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(
            f"{path}: not UTF-8 text (TOML must be): byte 0x{e.object[e.start]:02x} "
            f"at offset {e.start}"
        ) from None


def parseConfig(data: Mapping[str, object], source: str) -> GatewayConfig:
    """Validate a configuration table (TOML's shape). @raise ConfigError."""
    unknown = sorted(set(data) - _TOP_KEYS)
    if unknown:
        raise ConfigError(f"{source}: unknown key {unknown[0]!r}")
    settings = GatewaySettings(
        connectTimeout=_positive(data, "connect_timeout", 10.0, source),
        redirectTimeout=_positive(data, "redirect_timeout", 60.0, source),
        udpIdleTimeout=_positive(data, "udp_idle_timeout", 60.0, source),
        fastPath=_bool(data, "fast_path", True, source),
        kernelUDP=_bool(data, "kernel_udp", False, source),
        portRanges=_portRanges(data.get("port_ranges", {}), source),
        externalAddresses=_ips(data.get("external_addresses", []), source),
        shutdownGrace=_nonNegative(data, "shutdown_grace", 30.0, source),
        maxPendingRedirects=_count(data, "max_pending_redirects", 16, f"{source}: ") or 16,
        logLevel=_logLevel(data, source),
        workers=_workers(data, source),
        workerSockets=_workerSockets(data, source),
    )
    rawListeners = data.get("listeners")
    if not isinstance(rawListeners, list) or not rawListeners:
        raise ConfigError(f"{source}: listeners: at least one [[listeners]] table is needed")
    listeners = tuple(
        _listener(raw, f"{source}: listeners[{i}]", i) for i, raw in enumerate(rawListeners)
    )
    if settings.workers > 1:
        _checkSharable(listeners, settings.workers, source)
        if any(listener.transparent for listener in listeners):
            raise ConfigError(f"{source}: workers: a transparent listener needs workers = 1")
    return GatewayConfig(settings, listeners, source, _metrics(data, source))


def checkServerEndpoint(description: str) -> None:
    """Parse a server endpoint string as twistd will, without listening (an C{ssl:}
    endpoint reads its key and certificate files).

    @raise ValueError: one line saying why it is not a usable server endpoint.
    """
    try:
        # The endpoint objects only keep the reactor: none is needed to build them.
        serverFromString(None, description)
    except OSError as e:
        where = f": {e.filename}" if e.filename else ""
        raise ValueError(f"{description!r}: {e.strerror or e}{where}") from None
    except Exception as e:
        # The parsers of endpoint plugins raise whatever their arguments make them:
        # "_parseTCP() got an unexpected keyword argument 'x'" loses its function name.
        why = re.sub(r"^\w+\(\) ", "", str(e)) or type(e).__name__
        raise ValueError(f"{description!r} is not a server endpoint: {why}") from None


def parseUpstream(text: str) -> Address:
    """An upstream from ``host:port``, ``[v6]:port`` or a ``tcp:host=H:port=P`` endpoint.

    @raise ValueError: not a TCP client endpoint with a host and port.
    """
    kind, sep, rest = text.partition(":")
    if not sep or kind not in ("tcp", "tcp6"):
        return Address.parse(text)
    host: str | None = None
    port: str | None = None
    positional: list[str] = []
    for arg in _splitEndpoint(rest):
        key, eq, value = arg.partition("=")
        if eq and key == "host":
            host = value
        elif eq and key == "port":
            port = value
        elif eq and key == "timeout":
            continue
        elif eq:
            raise ValueError(f"unsupported endpoint argument {key!r} in {text!r}")
        else:
            positional.append(arg)
    if positional:
        host = host or positional[0]
        port = port or (positional[1] if len(positional) > 1 else None)
    if not host or port is None:
        raise ValueError(f"{text!r} needs a host and a port")
    return Address(host, parsePort(port))


def _splitEndpoint(text: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    escaped = False
    for char in text:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ":":
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def _listener(raw: object, where: str, index: int) -> ListenerConfig:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: must be a table")
    filterName = raw.get("filter")
    if not isinstance(filterName, str) or not filterName:
        raise ConfigError(f'{where}.filter: a filter name is needed (e.g. "tcp" or "ftp")')
    listen = raw.get("listen")
    if not isinstance(listen, str) or not listen:
        raise ConfigError(f'{where}.listen: an endpoint is needed (e.g. "tcp:2121")')
    # Before the endpoint is checked: an ssl: endpoint reads its key files then.
    proxyProtocol = _bool(raw, "proxy_protocol", False, where)
    if proxyProtocol and listen.split(":", 1)[0] in _NO_PROXY_HEADER_KINDS:
        raise ConfigError(
            f"{where}.proxy_protocol: not with a {listen.split(':', 1)[0]}: listener "
            "(the header comes first; use tcp: and AUTH TLS, or the plain endpoint)"
        )
    try:
        checkServerEndpoint(listen)
    except ValueError as e:
        raise ConfigError(f"{where}.listen: {e}") from None
    upstream: Address | None = None
    if "upstream" in raw:
        if not isinstance(raw["upstream"], str):
            raise ConfigError(f"{where}.upstream: must be a string")
        try:
            upstream = parseUpstream(raw["upstream"])
        except ValueError as e:
            raise ConfigError(f"{where}.upstream: {e}") from None
    maxSessions = _count(raw, "max_sessions", None, f"{where}.")
    maxPerIP = _count(raw, "max_sessions_per_ip", None, f"{where}.")
    name = raw.get("name", f"{filterName}-{index}")
    if not isinstance(name, str):
        raise ConfigError(f"{where}.name: must be a string")
    options = {k: v for k, v in raw.items() if k not in _LISTENER_KEYS}
    transparent = raw.get("transparent", False)
    if not isinstance(transparent, bool):
        raise ConfigError(f"{where}.transparent: must be true or false")
    if not transparent:
        return ListenerConfig(
            name,
            filterName,
            listen,
            upstream,
            maxSessions,
            maxPerIP,
            options,
            proxyProtocol=proxyProtocol,
        )
    if proxyProtocol:
        raise ConfigError(
            f"{where}.proxy_protocol: not with transparent (the kernel, not a balancer, "
            "hands the gateway its connections)"
        )
    if upstream is not None:
        raise ConfigError(
            f"{where}.upstream: a transparent listener's upstream is each connection's "
            "original destination"
        )
    # Taken from the filter's keys only here: without transparent, the key stays the
    # filter's own (the FTP filter's explicit mode).
    allow = _destinations(options.pop("allow_destinations", []), f"{where}.allow_destinations")
    return ListenerConfig(
        name,
        filterName,
        listen,
        None,
        maxSessions,
        maxPerIP,
        options,
        proxyProtocol=proxyProtocol,
        transparent=True,
        allowDestinations=allow,
    )


def _destinations(value: object, where: str) -> tuple[Destination, ...]:
    if not isinstance(value, list) or not all(isinstance(d, str) for d in value):
        raise ConfigError(f'{where}: must be a list of "CIDR[:PORTS]" strings')
    try:
        return tuple(parseDestination(d) for d in value)
    except ValueError as e:
        raise ConfigError(f"{where}: {e}") from None


def _count(data: Mapping[str, object], key: str, default: int | None, prefix: str) -> int | None:
    value = data.get(key, default)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{prefix}{key}: must be a whole number >= 1")
    return value


def _workers(data: Mapping[str, object], source: str) -> int:
    value = data.get("workers", 1)
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_WORKERS:
        raise ConfigError(f"{source}: workers: must be a whole number from 1 to {MAX_WORKERS}")
    return value


def _workerSockets(data: Mapping[str, object], source: str) -> str:
    value = data.get("worker_sockets", WORKER_SOCKETS[0])
    if value not in WORKER_SOCKETS:
        choices = " or ".join(f'"{choice}"' for choice in WORKER_SOCKETS)
        raise ConfigError(f"{source}: worker_sockets: must be {choices}")
    return str(value)


def _checkSharable(listeners: tuple[ListenerConfig, ...], workers: int, source: str) -> None:
    for index, listener in enumerate(listeners):
        kind = listener.listen.split(":", 1)[0]
        if kind not in _SHARABLE_KINDS:
            raise ConfigError(
                f"{source}: listeners[{index}].listen: {workers} workers share tcp or tcp6 "
                f"listeners only, not {listener.listen!r}"
            )


def _metrics(data: Mapping[str, object], source: str) -> str | None:
    value = data.get("metrics")
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ConfigError(f'{source}: metrics: must be an endpoint, e.g. "tcp:9120"')
    try:
        # Only parsed here (no reactor is used until it listens).
        serverFromString(None, value)
    except Exception as e:  # Twisted raises ValueError, KeyError, TypeError...
        raise ConfigError(
            f"{source}: metrics: {value!r} is not a server endpoint ({e or type(e).__name__})"
        ) from None
    return value


def _nonNegative(data: Mapping[str, object], key: str, default: float, source: str) -> float:
    value = data.get(key, default)
    if not isSeconds(value) or value < 0:
        raise ConfigError(f"{source}: {key}: must be a number of seconds >= 0, {SECONDS_LIMIT}")
    return float(value)


def _positive(data: Mapping[str, object], key: str, default: float, source: str) -> float:
    value = data.get(key, default)
    if not isSeconds(value) or value <= 0:
        raise ConfigError(f"{source}: {key}: must be a number of seconds > 0, {SECONDS_LIMIT}")
    return float(value)


def _bool(data: Mapping[str, object], key: str, default: bool, source: str) -> bool:
    value = data.get(key, default)
    if not isinstance(value, bool):
        raise ConfigError(f"{source}: {key}: must be true or false")
    return value


def _logLevel(data: Mapping[str, object], source: str) -> str:
    value = data.get("log_level", "info")
    if value not in LEVEL_NAMES:
        raise ConfigError(f"{source}: log_level: must be one of {', '.join(LEVEL_NAMES)}")
    assert isinstance(value, str)
    return value


def _ips(value: object, source: str) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise ConfigError(f"{source}: external_addresses: must be a list of IP addresses")
    result = []
    for item in value:
        try:
            result.append(str(ipaddress.ip_address(str(item))))
        except ValueError:
            raise ConfigError(
                f"{source}: external_addresses: {item!r} is not an IP address"
            ) from None
    return tuple(result)


def _portRanges(value: object, source: str) -> dict[str, tuple[int, int]]:
    if not isinstance(value, dict):
        raise ConfigError(f'{source}: port_ranges: must be a table of IP = "LOW-HIGH"')
    ranges: dict[str, tuple[int, int]] = {}
    for ip, text in value.items():
        key = ANY_IP if ip in (ANY_IP, "default") else ip
        if key != ANY_IP:
            try:
                key = str(ipaddress.ip_address(ip))
            except ValueError:
                raise ConfigError(f"{source}: port_ranges.{ip}: not an IP address") from None
        if not isinstance(text, str):
            raise ConfigError(f'{source}: port_ranges.{ip}: must be a string "LOW-HIGH"')
        try:
            ranges[key] = parsePortRange(text)
        except ValueError as e:
            raise ConfigError(f"{source}: port_ranges.{ip}: {e}") from None
    return ranges
