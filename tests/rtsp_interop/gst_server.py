"""A real RTSP server for the interop tests: gst-rtsp-server driven from Debian's python3.

Run it with ``/usr/bin/python3`` (the GObject bindings and gst-rtsp-server's typelib come
from Debian packages); it imports nothing of fwxtwisted so it runs outside the project's
environment. It always ends: after ``--lifetime`` seconds, on SIGTERM/SIGINT, exit code 0.

Modes:

- ``play``: a live stream, a JPEG video track (pt 26) and a PCMU audio track (pt 0), one
  media shared by every client of the mount;
- ``basic`` / ``digest``: the same behind RTSPAuth with that method, ``--user/--password``;
- ``record``: a RECORD media expecting a JPEG video and a PCMU audio stream (what
  ``ffmpeg -c:v mjpeg -c:a pcm_mulaw -f rtsp`` announces), received into fakesinks.

It prints one JSON object per line on stdout, flushed, so a test reads what the server saw:

- ``{"event": "ready", "port": N}`` once listening;
- ``{"event": "connected", "peer": [ip, port]}`` per control connection;
- ``{"event": "request", "method": M, "peer": ..., "headers": {...}}`` per request handled;
- ``{"event": "setup", ...}`` per SETUP: the Transport header the request carried, and what
  the server made of it (lower transport, client_port, destination, server_port,
  interleaved), i.e. where it sends RTP and RTCP;
- ``{"event": "sources", ...}`` whenever the RTP session of a stream first sees a remote
  source's RTP or RTCP address (``rtp-from``/``rtcp-from`` of rtpbin's source stats), so
  a test learns where the client's RTCP (play) or RTP (record) came from;
- ``{"event": "received", ...}`` in record mode at TEARDOWN and at exit: RTP packets per
  stream counted by the RTP session and buffers that reached each depayloader;
- ``{"event": "teardown", ...}``, ``{"event": "closed", ...}``, ``{"event": "exit"}``.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from typing import Any

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtsp", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import Gio, GLib, Gst, GstRtsp, GstRtspServer  # noqa: E402

VIDEO = (
    "videotestsrc is-live=true "
    "! video/x-raw,format=I420,width=320,height=240,framerate=15/1 "
    "! jpegenc ! rtpjpegpay name=pay0 pt=26"
)
AUDIO = (
    "audiotestsrc is-live=true ! audio/x-raw,rate=8000,channels=1 "
    "! mulawenc ! rtppcmupay name=pay1 pt=0"
)
PLAY_LAUNCH = f"( {VIDEO} {AUDIO} )"
# The depayloaders must be named depay%d: gst-rtsp-server maps the ANNOUNCEd SDP's media,
# in order, onto them. Explicit depayloaders (not decodebin) so the caps negotiated from
# the SDP must really be JPEG and PCMU.
RECORD_LAUNCH = (
    "( rtpjpegdepay name=depay0 ! fakesink name=sink0 sync=false async=false "
    "rtppcmudepay name=depay1 ! fakesink name=sink1 sync=false async=false )"
)
ROLE = "user"
POLL_MS = 100

_writeLock = threading.Lock()
_started = time.monotonic()


def emit(event: str, **fields: Any) -> None:
    """Write one JSON event line and flush, so the reader never waits for a buffer."""
    # "t": seconds since start, so a test can time what happened between events.
    stamp = round(time.monotonic() - _started, 4)
    line = json.dumps({"event": event, "t": stamp, **fields}, sort_keys=True)
    with _writeLock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def _peer(client: GstRtspServer.RTSPClient) -> list[Any] | None:
    """[ip, port] of the client's control connection, or None once it is gone."""
    connection = client.get_connection()
    if connection is None:
        return None
    sock = connection.get_read_socket()
    if sock is None:
        return [connection.get_ip(), None]
    try:
        remote = sock.get_remote_address()
    except GLib.Error:
        return [connection.get_ip(), None]
    return [remote.get_address().to_string(), remote.get_port()]


def _headers(message: GstRtsp.RTSPMessage) -> dict[str, list[str]]:
    """Every header of a request, by name (as GStreamer spells it), in order."""
    headers: dict[str, list[str]] = {}
    for field in GstRtsp.RTSPHeaderField.__enum_values__.values():
        if field in (GstRtsp.RTSPHeaderField.INVALID, GstRtsp.RTSPHeaderField.LAST):
            continue
        index = 0
        while True:
            result, value = message.get_header(field, index)
            if result != GstRtsp.RTSPResult.OK:
                break
            headers.setdefault(GstRtsp.rtsp_header_as_text(field), []).append(value)
            index += 1
    return headers


def _range(value: GstRtsp.RTSPRange) -> list[int] | None:
    """A Transport range (client_port, server_port, interleaved) as [min, max], or None."""
    if value.min < 0 and value.max < 0:
        return None
    return [value.min, value.max]


def _lower(transport: GstRtsp.RTSPTransport) -> str:
    lower = transport.lower_transport
    if lower & GstRtsp.RTSPLowerTrans.TCP:
        return "tcp"
    if lower & GstRtsp.RTSPLowerTrans.UDP_MCAST:
        return "udp-mcast"
    if lower & GstRtsp.RTSPLowerTrans.UDP:
        return "udp"
    return str(int(lower))


def _sessionStats(stream: GstRtspServer.RTSPStream) -> list[dict[str, Any]]:
    """Stats of the remote sources rtpbin's session for `stream` knows (not our own)."""
    session = stream.get_rtpsession()
    if session is None:
        return []
    found: list[dict[str, Any]] = []
    for source in session.get_property("sources"):
        stats = source.get_property("stats")
        if stats is None or stats.get_value("internal"):
            continue
        entry: dict[str, Any] = {"ssrc": stats.get_value("ssrc")}
        for key in ("rtp-from", "rtcp-from", "packets-received", "octets-received"):
            if stats.has_field(key):
                entry[key] = stats.get_value(key)
        found.append(entry)
    return found


class Server:
    """The RTSP server, its media and what it reports."""

    def __init__(self, options: argparse.Namespace) -> None:
        self.options = options
        self.loop = GLib.MainLoop()
        self.server = GstRtspServer.RTSPServer()
        self.server.set_address(options.address)
        self.server.set_service(str(options.port))
        # Every media made so far, in order: a RECORD media is made anew per session.
        self.medias: list[GstRtspServer.RTSPMedia] = []
        # Buffers seen entering each depayloader, by (media number, stream index).
        self.depayBuffers: dict[tuple[int, int], int] = {}
        # (media number, stream index, ssrc, key) already reported, so each address once.
        self.reported: set[tuple[int, int, int, str]] = set()
        factory = GstRtspServer.RTSPMediaFactory()
        if options.mode == "record":
            factory.set_transport_mode(GstRtspServer.RTSPTransportMode.RECORD)
            factory.set_launch(RECORD_LAUNCH)
        else:
            factory.set_launch(PLAY_LAUNCH)
        factory.set_shared(True)
        factory.connect("media-configure", self._mediaConfigure)
        if options.mode in ("basic", "digest"):
            self._protect(factory)
        self.server.get_mount_points().add_factory(options.mount, factory)
        self.server.connect("client-connected", self._clientConnected)

    def _protect(self, factory: GstRtspServer.RTSPMediaFactory) -> None:
        auth = GstRtspServer.RTSPAuth()
        token = GstRtspServer.RTSPToken()
        token.set_string("media.factory.role", ROLE)
        if self.options.mode == "basic":
            auth.set_supported_methods(GstRtsp.RTSPAuthMethod.BASIC)
            basic = GstRtspServer.RTSPAuth.make_basic(self.options.user, self.options.password)
            auth.add_basic(basic, token)
        else:
            auth.set_supported_methods(GstRtsp.RTSPAuthMethod.DIGEST)
            auth.add_digest(self.options.user, self.options.password, token)
        auth.set_realm("fwx-test")
        self.server.set_auth(auth)
        permissions = GstRtspServer.RTSPPermissions()
        permissions.add_role_from_structure(
            Gst.Structure.new_from_string(
                f"{ROLE}, media.factory.access=(boolean)true, media.factory.construct=(boolean)true"
            )
        )
        factory.set_permissions(permissions)

    # -- events --------------------------------------------------------------------------

    def _clientConnected(
        self, server: GstRtspServer.RTSPServer, client: GstRtspServer.RTSPClient
    ) -> None:
        peer = _peer(client)
        emit("connected", peer=peer)
        for method in (
            "options",
            "describe",
            "setup",
            "play",
            "pause",
            "teardown",
            "announce",
            "record",
            "get-parameter",
            "set-parameter",
        ):
            client.connect(f"{method}-request", self._request, method, peer)
        client.connect("closed", lambda _client: emit("closed", peer=peer))

    def _request(
        self,
        client: GstRtspServer.RTSPClient,
        context: GstRtspServer.RTSPContext,
        method: str,
        peer: list[Any] | None,
    ) -> None:
        request = context.request
        headers = _headers(request) if request is not None else {}
        emit("request", method=method.upper().replace("-", "_"), peer=peer, headers=headers)
        if method == "setup":
            self._setup(context, peer, headers)
        elif method == "teardown":
            self._poll()
            emit("teardown", peer=peer)
            if self.options.mode == "record":
                medias = context.session.filter(None) if context.session is not None else []
                for sessionMedia in medias:
                    self._emitReceived("teardown", sessionMedia.get_media())

    def _setup(
        self,
        context: GstRtspServer.RTSPContext,
        peer: list[Any] | None,
        headers: dict[str, list[str]],
    ) -> None:
        # Emitted after the server chose the transport: context.trans is the stream's
        # transport as the reply states it (client_port is where RTP and RTCP go).
        details: dict[str, Any] = {
            "peer": peer,
            "requestTransport": headers.get("Transport", [None])[0],
            "uri": context.uri.abspath if context.uri is not None else None,
        }
        if context.stream is not None:
            details["stream"] = context.stream.get_index()
        if context.trans is not None:
            transport = context.trans.get_transport()
            udp = _lower(transport) != "tcp"
            details.update(
                lowerTransport=_lower(transport),
                # Over TCP the struct holds the control connection's ports: not ours to report.
                clientPort=_range(transport.client_port) if udp else None,
                serverPort=None,
                interleaved=_range(transport.interleaved),
                destination=transport.destination,
                source=transport.source,
                transport=transport.as_text(),
            )
        if context.stream is not None and details.get("lowerTransport") == "udp":
            # The reply's server_port (not yet in context.trans when the signal fires):
            # where the server's RTP and RTCP leave from and where it receives them.
            serverPort = context.stream.get_server_port(Gio.SocketFamily.IPV4)
            if serverPort is not None:
                details["serverPort"] = _range(serverPort)
        emit("setup", **details)

    def _mediaConfigure(
        self, factory: GstRtspServer.RTSPMediaFactory, media: GstRtspServer.RTSPMedia
    ) -> None:
        number = len(self.medias)
        self.medias.append(media)
        if self.options.mode != "record":
            return
        element = media.get_element()
        for index in range(2):
            depay = element.get_by_name(f"depay{index}") if element is not None else None
            if depay is None:
                continue
            self.depayBuffers[number, index] = 0
            depay.get_static_pad("sink").add_probe(
                Gst.PadProbeType.BUFFER | Gst.PadProbeType.BUFFER_LIST,
                self._countBuffers,
                (number, index),
            )

    def _countBuffers(
        self, pad: Gst.Pad, info: Gst.PadProbeInfo, key: tuple[int, int]
    ) -> Gst.PadProbeReturn:
        if info.type & Gst.PadProbeType.BUFFER_LIST:
            count = info.get_buffer_list().length()
        else:
            count = 1
        with _writeLock:
            self.depayBuffers[key] = self.depayBuffers.get(key, 0) + count
        return Gst.PadProbeReturn.OK

    def _poll(self) -> bool:
        """Report remote RTP/RTCP source addresses seen for the first time."""
        for number, media in enumerate(self.medias):
            for index in range(media.n_streams()):
                stream = media.get_stream(index)
                for source in _sessionStats(stream):
                    for key in ("rtp-from", "rtcp-from"):
                        where = source.get(key)
                        mark = (number, index, source["ssrc"], key)
                        if where and mark not in self.reported:
                            self.reported.add(mark)
                            emit(
                                "sources",
                                media=number,
                                stream=index,
                                key=key,
                                address=where,
                                **source,
                            )
        return True

    def _emitReceived(self, why: str, only: GstRtspServer.RTSPMedia | None = None) -> None:
        """Report RTP packets and depayloaded buffers per stream of each media (or `only`).

        The RTP session counts packets as they arrive, before the jitterbuffer delays
        them, so its count is complete at TEARDOWN; the depayloader's may lag behind.
        """
        streams: list[dict[str, Any]] = []
        for number, media in enumerate(self.medias):
            if only is not None and media != only:
                continue
            for index in range(media.n_streams()):
                sources = _sessionStats(media.get_stream(index))
                streams.append(
                    {
                        "media": number,
                        "stream": index,
                        "rtpPackets": sum(s.get("packets-received", 0) for s in sources),
                        "depayBuffers": self.depayBuffers.get((number, index), 0),
                    }
                )
        emit("received", why=why, streams=streams)

    # -- running -------------------------------------------------------------------------

    def run(self) -> None:
        if self.server.attach(None) == 0:
            emit("error", message="cannot listen")
            return
        GLib.timeout_add(int(self.options.lifetime * 1000), self._quit, "lifetime")
        GLib.timeout_add(POLL_MS, self._poll)
        for signum in (signal.SIGTERM, signal.SIGINT):
            GLib.unix_signal_add(GLib.PRIORITY_HIGH, signum, self._quit, signum.name)
        emit("ready", port=self.server.get_bound_port(), mode=self.options.mode)
        self.loop.run()
        if self.options.mode == "record":
            self._emitReceived("exit")
        emit("exit")

    def _quit(self, why: str) -> bool:
        emit("stopping", why=why)
        self._poll()
        self.loop.quit()
        return False


def parseArguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: pick a free one, reported")
    parser.add_argument("--mode", choices=("play", "basic", "digest", "record"), default="play")
    parser.add_argument("--mount", default="/test")
    parser.add_argument("--lifetime", type=float, default=60.0)
    parser.add_argument("--user", default="user")
    parser.add_argument("--password", default="secret")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    options = parseArguments(argv)
    Gst.init(None)
    Server(options).run()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
