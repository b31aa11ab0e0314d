"""SessionReport: what an RTSP session did, logged once at its end (rtsp.session)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, DeferredList

from fwxtwisted.filters.rtsp.message import Request
from fwxtwisted.filters.rtsp.tracks import Track
from fwxtwisted.interfaces import ISession
from fwxtwisted.logs import Logger

if TYPE_CHECKING:
    from fwxtwisted.filters.rtsp.setups import Setups

log = Logger()


class SessionReport:
    """The URL, the tracks and the media counts of one RTSP session."""

    def __init__(self, session: ISession) -> None:
        self._session = session
        self._started = session.clock.seconds()
        self.url: str | None = None
        self.reason: str | None = None
        #: Every track the session set up, torn down ones included.
        self._tracks: list[Track] = []
        self._logged = False
        #: Datagrams not made into frames because the connection did not drain.
        self.congestionDrops = 0

    def request(self, request: Request) -> None:
        """A request went to the server: the first presentation URL is the session's."""
        if self.url is None and request.method in ("DESCRIBE", "ANNOUNCE", "SETUP", "PLAY"):
            self.url = request.uri

    def track(self, track: Track) -> None:
        """A SETUP made C{track}."""
        self._tracks.append(track)

    def mediaActivity(self, setups: Setups) -> int:
        """A number that grows whenever a datagram or frame of the session moves."""
        return sum(
            stats["packets_to_client"] + stats["packets_to_server"]
            for stats in (trackStats(t) for t in setups.tracks)
        )

    def recount(self, setups: Setups) -> Deferred[None] | None:
        """Read the kernel's counters of the session's tracks now, when the kernel
        carries any (a Deferred firing once read); None otherwise."""
        for track in setups.tracks:
            for action in track.actions:
                kernel = _kernelOf(action)
                if kernel is not None and kernel.active:
                    recounting: Deferred[None] = kernel.recount()
                    return recounting
        return None

    def emitWhenSettled(self, setups: Setups) -> None:
        """End every track, then log the session once its counts are final: at once,
        or once the kernel has handed back the last counts of the flows it carried."""
        self._collect(setups)
        setups.closeAll()
        carried = [
            action.whenFinished()
            for track in self._tracks
            for action in track.actions
            if _kernelOf(action) is not None
        ]
        if not carried:
            self.emit(setups)
            return
        DeferredList(carried, consumeErrors=True).addBoth(lambda _: self.emit(setups))

    def _collect(self, setups: Setups) -> None:
        for track in setups.tracks:
            if track not in self._tracks:
                self._tracks.append(track)

    def emit(self, setups: Setups) -> None:
        """Log the session once, as one structured event."""
        if self._logged:
            return
        self._logged = True
        self._collect(setups)
        session = self._session
        tracks = [trackStats(track) for track in self._tracks]
        duration = max(0.0, session.clock.seconds() - self._started)
        log.info(
            "{session}: rtsp {url} {count} track(s) ({transports}) in {duration:.1f} s: "
            "{packets_to_client} packets to the client, {packets_to_server} to the server, "
            "{dropped} foreign dropped: {reason} (client {client}, server {server}, "
            "from {external})",
            fwx_event="rtsp.session",
            session=session.sessionId,
            client=str(session.clientAddress),
            server=str(session.serverAddress or session.defaultUpstream),
            external=session.externalAddress,
            url=self.url,
            count=len(tracks),
            transports=", ".join(_described(t) for t in tracks) or "none",
            tracks=tracks,
            packets_to_client=sum(t["packets_to_client"] for t in tracks),
            packets_to_server=sum(t["packets_to_server"] for t in tracks),
            dropped=sum(t["dropped"] for t in tracks),
            congestion_drops=self.congestionDrops,
            duration=duration,
            reason=self.reason or "closed",
        )


def trackStats(track: Track) -> dict[str, Any]:
    """Packets and bytes each way, and foreign datagrams dropped, for one track."""
    stats: dict[str, Any] = {
        "url": track.url,
        "transport": track.describe(),
        "packets_to_client": 0,
        "bytes_to_client": 0,
        "packets_to_server": 0,
        "bytes_to_server": 0,
        "dropped": 0,
        # "kernel" when the kernel carried the track's datagrams (kernel_udp).
        "path": "kernel" if any(_inKernel(a) for a in track.actions) else "gateway",
    }
    for action in track.actions:
        counts = getattr(action, "datagramCounts", None)
        if counts is None:
            continue
        stats["packets_to_server"] += counts.packetsFromPeer
        stats["bytes_to_server"] += counts.bytesFromPeer
        stats["packets_to_client"] += counts.packetsFromTarget
        stats["bytes_to_client"] += counts.bytesFromTarget
        stats["dropped"] += counts.dropped
    if not track.actions:
        for ports, inward in ((track.serverFacing, "client"), (track.clientFacing, "server")):
            if ports is None:
                continue
            for index in range(ports.count):
                counts = ports.countsOf(index)
                stats[f"packets_to_{inward}"] += counts.packetsIn
                stats[f"bytes_to_{inward}"] += counts.bytesIn
                stats["dropped"] += counts.dropped
    stats["packets_to_client"] += track.framesToClient
    stats["bytes_to_client"] += track.frameBytesToClient
    stats["packets_to_server"] += track.framesToServer
    stats["bytes_to_server"] += track.frameBytesToServer
    return stats


def _kernelOf(action: object) -> Any:
    """The kernel path of a UDP redirect that has one (permissions/kernelflow.py)."""
    return getattr(action, "kernel", None)


def _inKernel(action: object) -> bool:
    kernel = _kernelOf(action)
    return bool(kernel is not None and kernel.installed)


def _described(stats: dict[str, Any]) -> str:
    transport: str = stats["transport"]
    return transport + " in the kernel" if stats["path"] == "kernel" else transport
