"""RTSPOptions: an RTSP listener's settings, from TOML keys or the command line."""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass, replace

from fwxtwisted.checks import parsePortRange
from fwxtwisted.errors import ConfigError


class TransportPolicy(enum.Enum):
    """How media travels between the gateway and the server."""

    #: As the client asked: UDP pairs for a UDP client, interleaved for a TCP one.
    CLIENT = "client"
    #: Always UDP toward the server; an interleaved client gets the media in its frames.
    UDP = "udp"
    #: Always interleaved toward the server; a UDP client gets the media as datagrams.
    TCP = "tcp"


#: Seconds without RTSP or RTCP activity when the server names no timeout.
DEFAULT_SESSION_TIMEOUT = 60.0

_KEYS = frozenset(
    {
        "rtp_ports",
        "transport_policy",
        "session_timeout",
        "allow_multicast",
        "max_line_length",
        "max_body_length",
    }
)


@dataclass(frozen=True)
class RTSPOptions:
    """What one RTSP listener does."""

    #: Inclusive range every RTP/RTCP pair is allocated from (None: the IP's range).
    rtpPorts: tuple[int, int] | None = None
    transportPolicy: TransportPolicy = TransportPolicy.CLIENT
    #: Seconds without activity before the session ends; None: the server's
    #: C{Session: ...;timeout=}, else L{DEFAULT_SESSION_TIMEOUT}.
    sessionTimeout: float | None = None
    #: Multicast transports are refused unless this is set (they are passed unchanged).
    allowMulticast: bool = False
    #: Longest request, status or header line.
    maxLineLength: int = 8192
    #: Largest message body (an SDP description, a SET_PARAMETER).
    maxBodyLength: int = 65536
    #: A transparent listener's: only interleaved transports are relayed (a player's
    #: own UDP would go to the server's address, which the gateway does not intercept).
    transparent: bool = False


def parseRTSPOptions(raw: Mapping[str, object]) -> RTSPOptions:
    """The options of an RTSP listener.  @raise ConfigError: starting with the key."""
    for key in raw:
        if key not in _KEYS:
            raise ConfigError(f"{key}: not an option of the rtsp filter")
    rtpPorts = None
    if raw.get("rtp_ports") is not None:
        text = raw["rtp_ports"]
        if not isinstance(text, str):
            raise ConfigError(f"rtp_ports: expected 'LOW-HIGH', got {text!r}")
        try:
            rtpPorts = parsePortRange(text)
        except ValueError as e:
            raise ConfigError(f"rtp_ports: {e}") from None
        if rtpPorts[1] - rtpPorts[0] < 3:
            raise ConfigError(f"rtp_ports: {text!r} holds no two even-based pairs")
    policyText = raw.get("transport_policy", "client")
    try:
        policy = TransportPolicy(policyText)
    except ValueError:
        known = ", ".join(p.value for p in TransportPolicy)
        raise ConfigError(f"transport_policy: {policyText!r} is not one of {known}") from None
    timeout = raw.get("session_timeout")
    if timeout is not None:
        timeout = _seconds("session_timeout", timeout)
    return RTSPOptions(
        rtpPorts=rtpPorts,
        transportPolicy=policy,
        sessionTimeout=timeout,
        allowMulticast=_flag("allow_multicast", raw.get("allow_multicast", False)),
        maxLineLength=_size("max_line_length", raw.get("max_line_length", 8192), 256),
        maxBodyLength=_size("max_body_length", raw.get("max_body_length", 65536), 1024),
    )


def parseTransparentRTSPOptions(raw: Mapping[str, object]) -> RTSPOptions:
    """The options of a transparent RTSP listener (no upstream: each session's server
    is its connection's original destination).  Its media is interleaved only, so no
    option may ask for UDP.  @raise ConfigError: starting with the key."""
    options = parseRTSPOptions(raw)
    if options.transportPolicy is TransportPolicy.UDP:
        raise ConfigError(
            'transport_policy: "udp" not on a transparent listener (its media is '
            "interleaved only: use client or tcp)"
        )
    if options.allowMulticast:
        raise ConfigError(
            "allow_multicast: not on a transparent listener (its media is interleaved only)"
        )
    return replace(options, transparent=True)


def _seconds(key: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{key}: expected seconds, got {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{key}: expected a positive number of seconds, got {value!r}")
    return float(value)


def _flag(key: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    return value


def _size(key: str, value: object, least: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{key}: expected a whole number of bytes, got {value!r}")
    if not least <= value <= 1 << 20:
        raise ConfigError(f"{key}: expected {least} to {1 << 20} bytes, got {value}")
    return value
