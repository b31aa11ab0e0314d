"""GatewaySettings: the gateway-wide knobs every session reads."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class GatewaySettings:
    """Timeouts, port ranges, external addresses and switches shared by all listeners."""

    #: Seconds an outbound connect (upstream or redirect) may take.
    connectTimeout: float = 10.0
    #: Seconds an unused permission with RedirectFlags.TIMEOUT stays open (the SDK's minute).
    redirectTimeout: float = 60.0
    #: Seconds a UDP mapping lives without a datagram either way.
    udpIdleTimeout: float = 60.0
    #: Move unfiltered plain TCP relays with splice(2) where the OS allows.
    fastPath: bool = True
    #: Let the kernel carry UDP redirects with a known peer (nftables NAT maps; needs
    #: CAP_NET_ADMIN): see permissions/kerneludp.py.
    kernelUDP: bool = False
    #: Port ranges per local IP ("*" for the rest), inclusive.
    portRanges: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    #: The pool sessions take their external (source) IP from, round-robin.
    externalAddresses: tuple[str, ...] = ()
    #: Seconds running sessions may take to finish at shutdown before they are closed.
    shutdownGrace: float = 30.0
    #: Unused permissions one session may hold at once.
    maxPendingRedirects: int = 16
    #: Lowest level of log event written (debug, info, warn, error, critical).
    logLevel: str = "info"
    #: Processes serving the listeners: this one and C{workers - 1} more sharing its
    #: listening sockets (see workers.py).
    workers: int = 1
    #: How workers get their listening sockets: C{"shared"} (one socket per listener,
    #: every process accepts from it) or C{"reuseport"} (each process its own
    #: C{SO_REUSEPORT} socket and its own slice of every port range).  See workers.py.
    workerSockets: str = "shared"
