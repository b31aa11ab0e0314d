"""GatewayMetrics: the hooks' observer that counts with prometheus_client.

Every metric is updated on the reactor thread as the event happens; a scrape only
reads them (see serve.py).  Bytes are counted when a connection ends (the relays'
own counts), so a long transfer shows up at its end, exactly.

Importing this module imports prometheus_client: in a process that shares its
metrics with others, C{PROMETHEUS_MULTIPROC_DIR} must be set before (serve.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, multiprocess

from fwxtwisted.interfaces import FirewallEvent, FirewallNotification, RedirectFlags, Transport
from fwxtwisted.metrics.hooks import NullObserver
from fwxtwisted.net.ports import ANY_IP, DEFAULT_RANGE

#: Labels of a session nobody opened (a session made outside a listener).
_UNKNOWN = ("-", "-")


def rangeLabel(portRange: tuple[int, int] | None) -> str:
    """The C{range} label of a port range: C{LOW-HIGH}, or C{exact} for a port a filter
    named itself."""
    if portRange is None:
        return "exact"
    return f"{portRange[0]}-{portRange[1]}"


def transferResult(result: object) -> str:
    """An FTP transfer's C{result} field as a label: completed (a 2xx final reply),
    aborted (no final reply: the session ended), failed (any other reply)."""
    text = str(result or "")
    if text[:1] == "2":
        return "completed"
    if text.startswith("aborted"):
        return "aborted"
    return "failed"


class _Permission:
    """What metrics keep about one live permission: its labels and its ports' ranges."""

    __slots__ = ("filter", "transport", "ranges", "used")

    def __init__(self, filterName: str, transport: str, ranges: list[str]) -> None:
        self.filter = filterName
        self.transport = transport
        #: The range label of each port still bound.
        self.ranges = ranges
        self.used = False


class GatewayMetrics(NullObserver):
    """Every metric of the gateway, fed by the hooks (see L{NullObserver}).

    @param registry: where the metrics register; None in multiprocess mode, where a
        scrape reads every process's files instead (serve.py).
    @param directory: the multiprocess directory, in the process that serves it.
    """

    def __init__(self, registry: CollectorRegistry | None, directory: str | None = None) -> None:
        self._directory = directory

        def counter(name: str, doc: str, labels: Sequence[str]) -> Counter:
            return Counter(name, doc, labels, registry=registry)

        def gauge(name: str, doc: str, labels: Sequence[str], mode: Any) -> Gauge:
            return Gauge(name, doc, labels, registry=registry, multiprocess_mode=mode)

        session = ("listener", "filter")
        permission = ("filter", "transport")
        self.currentSessions = gauge(
            "fwx_current_sessions", "Sessions open now.", session, "livesum"
        )
        self.sessions = counter("fwx_sessions", "Sessions accepted.", session)
        self.sessionsRefused = counter(
            "fwx_sessions_refused",
            "Primary connections refused before a session started, by reason.",
            (*session, "reason"),
        )
        self.granted = counter(
            "fwx_permissions_granted", "Permissions (redirects, joins) granted.", permission
        )
        self.used = counter(
            "fwx_permissions_used", "Permissions whose expected peer came.", permission
        )
        self.expired = counter(
            "fwx_permissions_expired", "Permissions that expired unused.", permission
        )
        self.refused = counter(
            "fwx_permissions_refused",
            "Requests for permissions the gateway refused, by reason.",
            (*permission, "reason"),
        )
        self.foreignRefused = counter(
            "fwx_foreign_peers_refused",
            "Connections or datagrams to a permission's port from a peer other than the "
            "expected one (UDP: the first of each permission; the rest are only dropped).",
            permission,
        )
        self.secondary = counter(
            "fwx_secondary_connections",
            "Secondary channels relayed: TCP connections established, UDP mappings made.",
            permission,
        )
        traffic = ("filter", "channel", "transport", "path")
        self.bytesIn = counter(
            "fwx_bytes_in",
            "Bytes received from the peer that connected (primary: the client), counted "
            "when the connection ends.",
            traffic,
        )
        self.bytesOut = counter(
            "fwx_bytes_out",
            "Bytes received from the peer the gateway connected to (primary: the server) "
            "and sent on, counted when the connection ends.",
            traffic,
        )
        self.connectFailures = counter(
            "fwx_connect_failures", "Outbound connects that failed.", ("filter", "channel")
        )
        self.portsInUse = gauge(
            "fwx_port_pool_ports_in_use",
            "Ports of a range held by live permissions and datagram ports.",
            ("range",),
            "livesum",
        )
        self.portPoolSize = gauge("fwx_port_pool_size", "Ports in a range.", ("range",), "max")
        transfer = ("direction", "result")
        self.ftpTransfers = counter("fwx_ftp_transfers", "FTP transfers, by result.", transfer)
        self.ftpTransferBytes = counter(
            "fwx_ftp_transfer_bytes", "Bytes of FTP transfers' data.", transfer
        )
        self.rtspSessions = counter("fwx_rtsp_sessions", "RTSP sessions ended.", ())
        self.rtspTracks = counter(
            "fwx_rtsp_tracks",
            "RTSP tracks set up, by transport (player side<->server side).",
            ("transport",),
        )
        self.rtspPackets = counter(
            "fwx_rtsp_media_packets",
            "RTP/RTCP packets (datagrams or interleaved frames) of ended RTSP sessions.",
            ("direction",),
        )
        self.rtspBytes = counter("fwx_rtsp_media_bytes", "Bytes of those packets.", ("direction",))
        self.rtspDropped = counter(
            "fwx_rtsp_foreign_datagrams_dropped",
            "Datagrams to an RTSP session's ports from a peer other than the expected one.",
            (),
        )
        self._sessions: dict[Any, tuple[str, str]] = {}
        self._permissions: dict[Any, _Permission] = {}
        self._sizes: set[str] = set()

    def portRanges(self, ranges: Mapping[str, tuple[int, int]]) -> None:
        """Show the size of each configured range (and of the default one) before any
        port of it is used."""
        for portRange in {ANY_IP: DEFAULT_RANGE, **ranges}.values():
            self._rangeSeen(rangeLabel(portRange), portRange)

    def processEnded(self, pid: int) -> None:
        if self._directory is not None:
            # Its live gauges end with it; its counters stay in the sum.
            multiprocess.mark_process_dead(pid, self._directory)

    # Sessions.

    def sessionOpened(self, session: Any, listener: str, filterName: str) -> None:
        self._sessions[session] = (listener, filterName)
        self.currentSessions.labels(listener, filterName).inc()
        self.sessions.labels(listener, filterName).inc()

    def sessionClosed(self, session: Any) -> None:
        labels = self._sessions.pop(session, None)
        if labels is None:
            return
        self.currentSessions.labels(*labels).dec()
        relay = session.primary
        counts = relay.counts
        path = "fast" if relay.onFastPath else "user"
        self._bytes(labels[1], "primary", "tcp", path, counts.fromClient, counts.fromServer)

    def sessionRefused(self, listener: str, filterName: str, reason: str) -> None:
        self.sessionsRefused.labels(listener, filterName, reason).inc()

    # Permissions.

    def permissionsGranted(
        self, session: Any, actions: Sequence[Any], portRanges: Sequence[tuple[int, int] | None]
    ) -> None:
        filterName = self._filterOf(session)
        ranges = [rangeLabel(r) for r in portRanges]
        for name, portRange in zip(ranges, portRanges, strict=True):
            self._rangeSeen(name, portRange)
        # A redirect binds one port per action; a join, its listening sides.
        each = len(actions) == len(ranges)
        for index, action in enumerate(actions):
            transport = _transportOf(action)
            self.granted.labels(filterName, transport).inc()
            held = ranges[index : index + 1] if each else list(ranges)
            self._hold(action, _Permission(filterName, transport, held))

    def permissionRefused(self, session: Any, transport: str, reason: str) -> None:
        self.refused.labels(self._filterOf(session), transport, reason).inc()

    def datagramPortsOpened(self, session: Any, ports: Any, portRange: tuple[int, int]) -> None:
        name = rangeLabel(portRange)
        self._rangeSeen(name, portRange)
        held = _Permission(self._filterOf(session), "udp", [name] * ports.count)
        # Not a permission of its own: a redirect that adopts the sockets is.
        held.used = True
        self._hold(ports, held)

    def notification(self, session: Any, notification: FirewallNotification) -> None:
        event = notification.event
        action = notification.action
        if action is None:
            if event is FirewallEvent.CONNECT_FAILED:
                self.connectFailures.labels(self._filterOf(session), "primary").inc()
            return
        held = self._permissions.get(action)
        filterName = held.filter if held is not None else self._filterOf(session)
        transport = held.transport if held is not None else _transportOf(action)
        if event is FirewallEvent.CONNECTION_TERMINATING:
            counts = notification.counts
            path = "fast" if notification.fastPath else "user"
            self._bytes(
                filterName, "secondary", transport, path, counts.fromClient, counts.fromServer
            )
        elif event in (FirewallEvent.ESTABLISHED_CONNECTION, FirewallEvent.UDP_DESTINATION):
            self.secondary.labels(filterName, transport).inc()
            self._used(held)
        elif event is FirewallEvent.ACCEPTED_CONNECTION:
            self._used(held)
            flags = getattr(action, "flags", RedirectFlags.NONE)
            if transport == "tcp" and RedirectFlags.ALLOW_MULTIPLE not in flags:
                # A single-use TCP permission (or a join's leg) closes its listener
                # as it accepts.
                self._release(held)
        elif event is FirewallEvent.PERMISSION_EXPIRED:
            self.expired.labels(filterName, transport).inc()
        elif event is FirewallEvent.REFUSED_CONNECTION:
            self.foreignRefused.labels(filterName, transport).inc()
        elif event is FirewallEvent.CONNECT_FAILED:
            self.connectFailures.labels(filterName, "secondary").inc()

    # Summaries.

    def summary(self, event: Mapping[str, Any]) -> None:
        kind = event.get("fwx_event")
        if kind == "ftp.transfer":
            labels = (str(event.get("direction", "other")), transferResult(event.get("result")))
            self.ftpTransfers.labels(*labels).inc()
            self.ftpTransferBytes.labels(*labels).inc(_number(event.get("bytes")))
        elif kind == "rtsp.session":
            self.rtspSessions.inc()
            tracks = event.get("tracks") or ()
            for track in tracks:
                self.rtspTracks.labels(str(track.get("transport", "-"))).inc()
                for direction in ("to_client", "to_server"):
                    self.rtspPackets.labels(direction).inc(
                        _number(track.get(f"packets_{direction}"))
                    )
                    self.rtspBytes.labels(direction).inc(_number(track.get(f"bytes_{direction}")))
            self.rtspDropped.inc(_number(event.get("dropped")))

    # Internals.

    def _filterOf(self, session: Any) -> str:
        return self._sessions.get(session, _UNKNOWN)[1]

    def _bytes(
        self, filterName: str, channel: str, transport: str, path: str, into: int, out: int
    ) -> None:
        if into:
            self.bytesIn.labels(filterName, channel, transport, path).inc(into)
        if out:
            self.bytesOut.labels(filterName, channel, transport, path).inc(out)

    def _rangeSeen(self, rangeName: str, portRange: tuple[int, int] | None) -> None:
        if portRange is None or rangeName in self._sizes:
            return
        self._sizes.add(rangeName)
        self.portPoolSize.labels(rangeName).set(portRange[1] - portRange[0] + 1)
        self.portsInUse.labels(rangeName).inc(0)

    def _hold(self, action: Any, held: _Permission) -> None:
        self._permissions[action] = held
        for name in held.ranges:
            self.portsInUse.labels(name).inc()
        action.whenFinished().addCallback(lambda _: self._finished(action))

    def _used(self, held: _Permission | None) -> None:
        if held is not None and not held.used:
            held.used = True
            self.used.labels(held.filter, held.transport).inc()

    def _release(self, held: _Permission | None) -> None:
        """One listener of a live permission closed early: its port is free again."""
        if held is not None and held.ranges:
            self.portsInUse.labels(held.ranges.pop()).dec()

    def _finished(self, action: Any) -> None:
        held = self._permissions.pop(action, None)
        while held is not None and held.ranges:
            self._release(held)


def _transportOf(action: Any) -> str:
    transport = getattr(action, "transport", Transport.TCP)
    return transport.value if isinstance(transport, Transport) else str(transport)


def _number(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        return 0.0
    return float(value)
