"""RTSPFilter: the RTSP gateway filter plugin and its twistd command."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from twisted.python import usage
from zope.interface import implementer

from fwxtwisted.address import Address
from fwxtwisted.errors import ConfigError
from fwxtwisted.filters.cli import (
    REDIRECT_OPTIONS,
    UDP_FLAGS,
    UDP_OPTIONS,
    GatewayCommandOptions,
    seconds,
)
from fwxtwisted.filters.rtsp.control import RTSPSessionFilter
from fwxtwisted.filters.rtsp.options import (
    RTSPOptions,
    parseRTSPOptions,
    parseTransparentRTSPOptions,
)
from fwxtwisted.filters.rtsp.protocols import RTP_MEDIA, RTSP_CONTROL
from fwxtwisted.interfaces import IFilter, ISession, ISessionFilter, ITransparentFilter


class RTSPCommandOptions(GatewayCommandOptions):
    """twistd fwx rtsp --listen ENDPOINT (--upstream HOST:PORT | --transparent
    [--allow-destination CIDR[:PORTS]]...) [options]"""

    filterName = "rtsp"

    optParameters: list[list[Any]] = [
        *GatewayCommandOptions.optParameters,
        # The pairs are used at once (no permission waits unused): no --redirect-timeout.
        *[option for option in REDIRECT_OPTIONS if option[0] == "port-range"],
        *UDP_OPTIONS,
        ["rtp-ports", None, None, "LOW-HIGH: ports for RTP/RTCP pairs (both sides)."],
        [
            "transport-policy",
            None,
            "client",
            "Media toward the server: client (as the client asks), udp, tcp (interleaved; "
            "with --transparent: client or tcp, media interleaved only).",
        ],
        [
            "session-timeout",
            None,
            None,
            "Seconds without RTSP or RTCP activity before a session ends "
            "(default: the server's Session timeout, else 60).",
            seconds,
        ],
    ]
    optFlags: list[list[str | None]] = [
        *GatewayCommandOptions.optFlags,
        *UDP_FLAGS,
        ["allow-multicast", None, "Pass multicast transports (refused by default)."],
    ]

    def postOptions(self) -> None:
        super().postOptions()
        if self["transparent"] and self["upstream"]:
            raise usage.UsageError("give either --upstream or --transparent, not both")
        if not self["upstream"] and not self["transparent"]:
            raise usage.UsageError("--upstream HOST:PORT (or --transparent) is required")
        if self["allow-destination"] and not self["transparent"]:
            raise usage.UsageError("--allow-destination is for --transparent")

    def filterOptions(self) -> dict[str, object]:
        options: dict[str, object] = {"transport_policy": self["transport-policy"]}
        if self["rtp-ports"]:
            options["rtp_ports"] = self["rtp-ports"]
        if self["session-timeout"] is not None:
            options["session_timeout"] = self["session-timeout"]
        if self["allow-multicast"]:
            options["allow_multicast"] = True
        return options


@implementer(IFilter, ITransparentFilter)
class RTSPFilter:
    """RTSP gateway: every method through, RTP/RTCP pairs over UDP or interleaved (on a
    transparent listener interleaved only: a UDP SETUP is answered 461)."""

    name = "rtsp"
    description = "RTSP gateway (RTP/RTCP over UDP pairs or interleaved, with translation)."
    protocols = (RTSP_CONTROL, RTP_MEDIA)

    def parseOptions(self, options: Mapping[str, object], upstream: Address | None) -> object:
        if upstream is None:
            raise ConfigError("upstream: the rtsp filter needs one (the RTSP server)")
        return parseRTSPOptions(options)

    def parseTransparentOptions(self, options: Mapping[str, object]) -> object:
        return parseTransparentRTSPOptions(options)

    def commandLineOptions(self) -> usage.Options:
        return RTSPCommandOptions()

    def attachToSession(self, session: ISession) -> ISessionFilter:
        options = session.options
        if not isinstance(options, RTSPOptions):
            raise ConfigError("the rtsp filter was not configured")
        if session.defaultUpstream is None:
            raise ConfigError("the rtsp filter needs an upstream")
        return RTSPSessionFilter(session, options)


rtspFilter = RTSPFilter()
