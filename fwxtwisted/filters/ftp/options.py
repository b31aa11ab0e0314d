"""FTPOptions: an FTP listener's settings, from TOML keys or the command line."""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fwxtwisted.address import Address
from fwxtwisted.checks import SECONDS_LIMIT, isSeconds, parsePortRange
from fwxtwisted.errors import ConfigError
from fwxtwisted.logs import Logger
from fwxtwisted.net.destinations import Destination, parseDestination
from fwxtwisted.net.tls import (
    DEFAULT_TLS_CIPHERS,
    DEFAULT_TLS_MIN_VERSION,
    ServerTLSSettings,
    TLSPolicy,
    UpstreamTLSSettings,
)

log = Logger()


class DataPolicy(enum.Enum):
    """How the gateway opens data channels toward the server."""

    #: The same mode as the client used.
    CLIENT = "client"
    #: Always PASV/EPSV toward the server (for servers behind a firewall of their own).
    PASSIVE = "passive"
    #: Always PORT/EPRT toward the server.
    ACTIVE = "active"


class TransparentData(enum.Enum):
    """Passive data connections of a transparent listener's sessions (its key
    C{transparent_data}; see filters/ftp/transparent.py)."""

    #: The server's 227/229 goes to the client unchanged; the client's one data
    #: connection to the server is let through (allowFutureConnect).
    PERMIT = "permit"
    #: Rewritten as in reverse-proxy mode: the client connects to a listener of the
    #: gateway's (its address toward the client), which connects to the server.
    RELAY = "relay"


class UpstreamTLS(enum.Enum):
    """When the gateway speaks TLS to the server."""

    #: As the client did with the gateway (AUTH TLS, or an implicit TLS listener).
    AUTO = "auto"
    ALWAYS = "always"
    NEVER = "never"


@dataclass(frozen=True)
class FTPOptions:
    """Everything an FTP listener can be told."""

    explicit: bool = False
    allowDestinations: tuple[Destination, ...] = ()
    dataPolicy: DataPolicy = DataPolicy.CLIENT
    #: The IP written into 227 replies instead of the client-facing one (behind NAT).
    advertiseAddress: str | None = None
    #: Ports for client-facing passive listeners; the gateway's range when None.
    passivePorts: tuple[int, int] | None = None
    #: Seconds without control traffic (and no transfer running) before closing.
    idleTimeout: float = 900.0
    #: Allow PORT/EPRT to name another host or a port below 1024 (FXP).
    allowFxp: bool = False
    #: Seconds a client has to log in (a 230 reply) before the session is closed.
    loginTimeout: float = 60.0
    #: The longest control line accepted from either side.
    maxLineLength: int = 2048
    #: The gateway's TLS server side toward clients (None: no FTPS toward clients).
    serverTLS: ServerTLSSettings | None = None
    #: Refuse USER/PASS before AUTH TLS.
    requireTLS: bool = False
    #: Protected data connections must resume the control connection's TLS session.
    requireTLSReuse: bool = False
    #: Under requireTLS, let clients choose clear data connections (PROT C).
    allowClearData: bool = False
    upstreamTLS: UpstreamTLS = UpstreamTLS.AUTO
    upstreamTLSSettings: UpstreamTLSSettings = field(default_factory=UpstreamTLSSettings)
    #: A transparent listener's passive data mode; None: not a transparent listener.
    transparentData: TransparentData | None = None
    #: Built once per listener from serverTLS: its one context keeps the session cache.
    serverTLSOptions: Any = field(default=None, compare=False, repr=False)

    def allows(self, address: Address) -> bool:
        """True when the explicit-proxy allow-list lets sessions reach C{address}."""
        return any(entry.allows(address) for entry in self.allowDestinations)


_KEYS = {
    "explicit",
    "allow_destinations",
    "data_policy",
    "advertise_address",
    "passive_ports",
    "idle_timeout",
    "login_timeout",
    "allow_fxp",
    "max_line_length",
    "tls_cert",
    "tls_key",
    "tls_chain",
    "client_ca",
    "require_tls",
    "require_tls_reuse",
    "upstream_tls",
    "upstream_ca",
    "upstream_insecure",
    "allow_clear_data",
    "tls_ciphers",
    "tls_min_version",
}


def parseFTPOptions(raw: Mapping[str, object], hasUpstream: bool | None = None) -> FTPOptions:
    """Validate an FTP listener's keys.  @raise ConfigError: C{"key: why"}."""
    unknown = sorted(set(raw) - _KEYS)
    if unknown:
        raise ConfigError(f"{unknown[0]}: not an option of the ftp filter")
    explicit = raw.get("explicit", False)
    if not isinstance(explicit, bool):
        raise ConfigError("explicit: must be true or false")
    destinations = raw.get("allow_destinations", [])
    if not isinstance(destinations, list) or not all(isinstance(d, str) for d in destinations):
        raise ConfigError('allow_destinations: must be a list of "CIDR[:PORTS]" strings')
    try:
        allow = tuple(parseDestination(d) for d in destinations)
    except ValueError as e:
        raise ConfigError(f"allow_destinations: {e}") from None
    if explicit and not allow:
        raise ConfigError(
            "allow_destinations: explicit mode needs an allow-list of destination networks "
            "(refusing to run an open FTP proxy)"
        )
    if not explicit and allow:
        raise ConfigError("allow_destinations: only meaningful with explicit = true")
    if hasUpstream is not None and explicit == hasUpstream:
        raise ConfigError(
            "upstream: give either an upstream (reverse proxy) or explicit = true, not "
            + ("both" if explicit else "neither")
        )
    policyText = raw.get("data_policy", "client")
    try:
        policy = DataPolicy(policyText)
    except ValueError:
        raise ConfigError("data_policy: must be one of client, passive, active") from None
    advertise = raw.get("advertise_address")
    if advertise is not None:
        try:
            advertise = str(ipaddress.IPv4Address(str(advertise)))
        except ValueError:
            raise ConfigError("advertise_address: must be an IPv4 address") from None
    passive = raw.get("passive_ports")
    passivePorts = None
    if passive is not None:
        try:
            passivePorts = parsePortRange(str(passive))
        except ValueError as e:
            raise ConfigError(f"passive_ports: {e}") from None
    idle = raw.get("idle_timeout", 900.0)
    if not isSeconds(idle) or idle <= 0:
        raise ConfigError(f"idle_timeout: must be a number of seconds > 0, {SECONDS_LIMIT}")
    login = raw.get("login_timeout", 60.0)
    if not isSeconds(login) or login <= 0:
        raise ConfigError(f"login_timeout: must be a number of seconds > 0, {SECONDS_LIMIT}")
    fxp = raw.get("allow_fxp", False)
    if not isinstance(fxp, bool):
        raise ConfigError("allow_fxp: must be true or false")
    maxLine = raw.get("max_line_length", 2048)
    if isinstance(maxLine, bool) or not isinstance(maxLine, int) or not 512 <= maxLine <= 65536:
        raise ConfigError("max_line_length: must be a whole number from 512 to 65536")
    tls = _parseTLS(raw)
    return FTPOptions(
        **tls,
        explicit=explicit,
        allowDestinations=allow,
        dataPolicy=policy,
        advertiseAddress=advertise,
        passivePorts=passivePorts,
        idleTimeout=float(idle),
        loginTimeout=float(login),
        allowFxp=fxp,
        maxLineLength=maxLine,
    )


def _optionalPath(raw: Mapping[str, object], key: str) -> str | None:
    value = raw.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value or "\x00" in value:
        raise ConfigError(f"{key}: must be a file name")
    return value


def _flag(raw: Mapping[str, object], key: str) -> bool:
    value = raw.get(key, False)
    if not isinstance(value, bool):
        raise ConfigError(f"{key}: must be true or false")
    return value


def _parseTLS(raw: Mapping[str, object]) -> dict[str, Any]:
    cert, key = _optionalPath(raw, "tls_cert"), _optionalPath(raw, "tls_key")
    chain, clientCA = _optionalPath(raw, "tls_chain"), _optionalPath(raw, "client_ca")
    if (cert is None) != (key is None):
        raise ConfigError("tls_key: tls_cert and tls_key go together")
    if cert is None and (chain or clientCA):
        raise ConfigError(f"{'tls_chain' if chain else 'client_ca'}: needs tls_cert and tls_key")
    requireTLS, requireReuse = _flag(raw, "require_tls"), _flag(raw, "require_tls_reuse")
    if cert is None and (requireTLS or requireReuse):
        key_ = "require_tls" if requireTLS else "require_tls_reuse"
        raise ConfigError(f"{key_}: needs tls_cert and tls_key (the gateway's certificate)")
    if clientCA and not requireTLS:
        # A client certificate asked for on AUTH TLS means nothing if a client may log
        # in without AUTH TLS.
        requireTLS = True
        log.info("client_ca: implies require_tls (logins only after AUTH TLS)")
    minVersion = raw.get("tls_min_version", DEFAULT_TLS_MIN_VERSION)
    if isinstance(minVersion, int | float) and not isinstance(minVersion, bool):
        minVersion = f"{minVersion:.1f}"
    ciphers = raw.get("tls_ciphers", DEFAULT_TLS_CIPHERS)
    if not isinstance(ciphers, str):
        raise ConfigError("tls_ciphers: must be an OpenSSL cipher string")
    policy = TLSPolicy(ciphers, str(minVersion))
    serverTLS = ServerTLSSettings(cert, key, chain, clientCA, policy) if cert and key else None
    try:
        upstream = UpstreamTLS(raw.get("upstream_tls", "auto"))
    except ValueError:
        raise ConfigError("upstream_tls: must be one of auto, always, never") from None
    insecure = _flag(raw, "upstream_insecure")
    upstreamCA = _optionalPath(raw, "upstream_ca")
    if insecure and upstreamCA:
        raise ConfigError("upstream_insecure: a CA file and no checks contradict each other")
    if upstreamCA:
        try:
            open(upstreamCA, "rb").close()
        except OSError as e:
            raise ConfigError(f"upstream_ca: cannot read {upstreamCA}: {e.strerror}") from None
    if insecure and upstream is not UpstreamTLS.NEVER:
        log.warn(
            "upstream_insecure: the FTP servers' TLS certificates are NOT checked; "
            "anyone on the path can read and change the traffic"
        )
    return {
        "serverTLS": serverTLS,
        "serverTLSOptions": serverTLS.makeOptions() if serverTLS else None,
        "requireTLS": requireTLS,
        "requireTLSReuse": requireReuse,
        "allowClearData": _flag(raw, "allow_clear_data"),
        "upstreamTLS": upstream,
        "upstreamTLSSettings": UpstreamTLSSettings(upstreamCA, insecure, policy),
    }
