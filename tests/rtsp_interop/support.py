"""Real RTSP peers for the interop tests: gst-rtsp-server, ffmpeg/ffprobe and gst-launch.

- startRTSPServer(): gst_server.py under Debian's /usr/bin/python3, its JSON events;
- ffmpegPlay()/ffmpegFrames(), ffprobeStreams(), gstPlay(), ffmpegPublish(): players with
  hard timeouts;
- RTSPRelay: a logging relay that records every RTSP message and can observe or swallow the
  UDP ports negotiated in SETUP (make_transcripts.py uses it for transcripts/*.txt).

How the players behave on the wire, measured here (ffmpeg 5.1, GStreamer 1.22, loopback,
against gst_server.py; times from the PLAY request; test_player_behaviour.py keeps them):

ffmpeg / ffprobe (Lavf59.27.100)
  - SETUP: ``Transport: RTP/AVP/UDP;unicast;client_port=N-N+1`` (N even, random in its
    default 5000-65000 range) or ``RTP/AVP/TCP;unicast;interleaved=0-1`` / ``2-3``;
    ANNOUNCE/RECORD adds ``;mode=record``. One connection for the whole session.
  - UDP hole punching: right after sending PLAY (before its reply), per stream, one
    12-byte empty RTP packet (``80 00 0000 00000000 00000000``: pt 0, seq 0, ssrc 0) from
    its RTP port to server_port and one 8-byte empty RTCP RR (``80 c9 0001 00000000``,
    ssrc 0) from its RTCP port. The RTCP goes to *the first server_port + 1*: ffmpeg
    ignores the second value of ``server_port=``, so a gateway must hand out even/odd pairs.
  - RTCP: RR+SDES (48 bytes) about every 2 s from client_port+1, starting ~2.2 s after
    PLAY, only for the streams it reads (with ``-map 0:v`` none for the audio stream).
  - No UDP arriving: with no ``-timeout`` option it waits forever (still running after
    60 s). With ``-timeout 3000000`` (µs) and its default transports it logs
    ``[rtsp @ ...] UDP timeout, retrying with TCP`` after 3.0 s and, on the same
    connection and session, sends PAUSE, then SETUP ``RTP/AVP/TCP;unicast;interleaved=0-1``
    (and ``2-3``), then PLAY. With ``-rtsp_transport udp -timeout 3000000`` it gives up
    (``Could not find codec parameters for stream 0 ...: unspecified size``, then
    ``rtsp://...: Connection timed out``), sends TEARDOWN and exits 1 after ~6 s.
  - 461 to its first UDP SETUP (a transparent gateway, tests/transparent/
    test_netns_rtsp.py): with its default transports it logs ``method SETUP failed: 461
    Unsupported transport`` and at once sends the SETUP again interleaved on the same
    connection, then plays; with ``-rtsp_transport udp``: ``Protocol not supported``,
    exit 1 within 0.1 s.
  - 401: ``method DESCRIBE failed: 401 Unauthorized`` and ``Server returned 401
    Unauthorized (authorization failed)``, exit 1. With user:password in the URL it
    first sends DESCRIBE without credentials, gets 401, then repeats it authorized.
  - Publishing (``-f rtsp``): OPTIONS, ANNOUNCE (SDP), SETUP x2, RECORD, TEARDOWN; over
    UDP RTP from client_port, RTCP SR from client_port+1.

gst-launch-1.0 rtspsrc (GStreamer/1.22.0)
  - SETUP: ``Transport: RTP/AVP;unicast;client_port=N-N+1`` (no ``/UDP``; N even, OS-picked),
    or ``RTP/AVP/TCP;unicast;interleaved=0-1``. Requests carry a ``Date`` header.
  - UDP hole punching: right after PLAY, per stream, 5 datagrams of 200 bytes of random
    filler (so only now and then looking like RTP version 2) from its RTP port to
    server_port; nothing to the RTCP port until its first RR+SDES (84 bytes) ~1.5-2.5 s
    after PLAY, then every ~5-6 s.
    It sends no RR while it receives nothing.
  - No UDP arriving: ``udp-timeout`` (default 5 s). With ``protocols=udp+tcp`` (the default
    includes tcp) it sends TEARDOWN 5.0 s after PLAY, opens a *new* connection and redoes
    OPTIONS, DESCRIBE, SETUP interleaved, PLAY. With ``protocols=udp`` only:
    ``Could not receive any UDP packets for 5.0000 seconds, maybe your firewall is
    blocking it. No other protocols to try.``, TEARDOWN, exit 1.
  - 461 to its first UDP SETUP: with ``protocols=udp+tcp`` it sends the SETUP again
    interleaved at once on the same connection (no 5 s wait) and plays; with
    ``protocols=udp`` it gets 461 for each stream's SETUP, then ``No supported stream
    was found``, exit 1.
  - At the end (num-buffers reached) it sends PAUSE then TEARDOWN.
  - 401: ``Unauthorized (401)`` error, ``pipeline doesn't want to preroll``, exit 1.

gst-rtsp-server (gst_server.py)
  - SETUP replies name ``server_port=S-S+1`` (S even) and ``ssrc=``; RTP leaves from S,
    RTCP SR from S+1 ~2 s after PLAY. The reply echoes ``client_port`` and sends there,
    to the control connection's address (``destination=`` in a request is ignored).
  - Over UDP it sees the player's RTCP (and ffmpeg's RTCP punch) as ``rtcp-from`` client
    address:client_port+1; over TCP, RTP/RTCP arrive interleaved on the RTSP connection.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import re
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from tests.peers import (
    ClientResult,
    Gateway,
    _deathSignalPrefix,
    freePort,
    requirePeer,
    runClient,
    runGateway,
    skipOrFail,
)

GST_PYTHON = "/usr/bin/python3"
"""Debian's interpreter: the one with python3-gi and gst-rtsp-server's typelib."""
SERVER_SCRIPT = Path(__file__).resolve().with_name("gst_server.py")
TRANSCRIPTS = Path(__file__).resolve().with_name("transcripts")
SERVER_LIFETIME = 30.0
"""Seconds after which gst_server.py quits by itself, whatever the test does."""
CLIENT_TIMEOUT = 15.0
"""Hard limit for one player run (it is killed after that)."""
GATEWAY_LIFETIME = 60.0
"""Seconds after which an RTSP gateway of these tests is stopped, whatever the test does."""
EXTERNAL = "127.0.0.2"
"""The gateway's external address: what the server sees as its peer."""


# -- the server -----------------------------------------------------------------------------


@functools.cache
def _gstServerProblem() -> str | None:
    """Why gst_server.py cannot run here, or None (checked once per session)."""
    if not os.access(GST_PYTHON, os.X_OK):
        return f"{GST_PYTHON} missing (Debian's python3 drives gst-rtsp-server)"
    probe = 'import gi; gi.require_version("GstRtspServer", "1.0")'
    try:
        result = subprocess.run(
            [GST_PYTHON, "-c", probe], capture_output=True, text=True, timeout=30
        )
    except subprocess.TimeoutExpired:
        return f"{GST_PYTHON} -c {probe!r} did not finish in 30 s"
    if result.returncode != 0:
        return f"{GST_PYTHON} cannot load GstRtspServer: {result.stderr.strip()[-300:]}"
    return None


def requireGstServer() -> None:
    """Skip (or fail under CI=true) unless gst_server.py can run."""
    problem = _gstServerProblem()
    if problem is not None:
        skipOrFail(
            f"{problem}; install python3-gi gir1.2-gst-rtsp-server-1.0 "
            "gstreamer1.0-plugins-base gstreamer1.0-plugins-good (.ci/install-peers)"
        )


class RTSPServer:
    """A running gst_server.py: its address, and the JSON events it printed so far."""

    def __init__(
        self,
        process: subprocess.Popen[bytes],
        host: str,
        mode: str,
        mount: str,
        user: str,
        password: str,
    ) -> None:
        self.process = process
        self.host = host
        self.mode = mode
        self.mount = mount
        self.user = user
        self.password = password
        self.port = 0
        self.events: list[dict[str, Any]] = []
        self.stderr: list[str] = []
        self._changed = threading.Condition()
        self._readers = [
            threading.Thread(target=self._readEvents, daemon=True),
            threading.Thread(target=self._readStderr, daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def _readEvents(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            line = raw.decode(errors="replace").strip()
            try:
                event = json.loads(line)
            except ValueError:
                event = {"event": "garbage", "line": line}
            with self._changed:
                self.events.append(event)
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def _readStderr(self) -> None:
        assert self.process.stderr is not None
        for raw in self.process.stderr:
            self.stderr.append(raw.decode(errors="replace"))

    def url(self, user: str | None = None, password: str | None = None) -> str:
        """rtsp://[user:password@]host:port/mount."""
        credentials = ""
        if user is not None:
            credentials = f"{user}:{password or ''}@"
        return f"rtsp://{credentials}{self.host}:{self.port}{self.mount}"

    def eventsNamed(self, name: str) -> list[dict[str, Any]]:
        """Events of one kind, in order."""
        with self._changed:
            return [event for event in self.events if event.get("event") == name]

    def waitFor(
        self,
        name: str,
        predicate: Callable[[dict[str, Any]], bool] = lambda _event: True,
        timeout: float = 10.0,
    ) -> dict[str, Any]:
        """The first event `name` matching `predicate`; TimeoutError after `timeout` s."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for event in self.events:
                    if event.get("event") == name and predicate(event):
                        return event
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (self.process.poll() is not None and not self._alive()):
                    raise TimeoutError(
                        f"no {name!r} event from gst_server.py after {timeout} s; "
                        f"events: {self.events}\nstderr: {''.join(self.stderr)[-2000:]}"
                    )
                self._changed.wait(min(remaining, 0.5))

    def _alive(self) -> bool:
        return self._readers[0].is_alive()

    def stop(self) -> None:
        """SIGTERM (the server reports and exits 0), 5 s, then SIGKILL; by pid only."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        for reader in self._readers:
            reader.join(5)


@contextlib.contextmanager
def startRTSPServer(
    mode: str = "play",
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    mount: str = "/test",
    user: str = "user",
    password: str = "secret",
    lifetime: float = SERVER_LIFETIME,
    readyTimeout: float = 10.0,
    wrapper: Sequence[str] = (),
) -> Iterator[RTSPServer]:
    """Run gst_server.py in `mode` (play, basic, digest, record) until the block ends.

    Waits for its ``ready`` event (port 0: the one it picked). The script quits by itself
    after `lifetime` s; leaving the block stops it (SIGTERM, then SIGKILL). `wrapper`
    goes before the command (``ip netns exec NS``).
    """
    requireGstServer()
    argv = [
        *wrapper,
        GST_PYTHON,
        str(SERVER_SCRIPT),
        f"--address={host}",
        f"--port={port}",
        f"--mode={mode}",
        f"--mount={mount}",
        f"--lifetime={lifetime}",
        f"--user={user}",
        f"--password={password}",
    ]
    process = subprocess.Popen(
        [*_deathSignalPrefix(), *argv],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        # Debian's python3 must not pick up the project's environment (PYTHONPATH etc.).
        env={k: v for k, v in os.environ.items() if not k.startswith("PYTHON")},
    )
    server = RTSPServer(process, host, mode, mount, user, password)
    try:
        server.port = int(server.waitFor("ready", timeout=readyTimeout)["port"])
        yield server
    finally:
        server.stop()


# -- the gateway -----------------------------------------------------------------------------


@contextlib.contextmanager
def rtspGateway(
    server: RTSPServer,
    options: Sequence[str] = (),
    *,
    host: str = "127.0.0.1",
    external: str | None = EXTERNAL,
    lifetime: float = GATEWAY_LIFETIME,
) -> Iterator[Gateway]:
    """`twistd -n fwx rtsp` in front of `server` until the block ends.

    Listens on `host` (a free port), sends upstream to the server from `external`, with
    `options` appended (--transport-policy, --rtp-ports, --max-sessions...). Stopped
    after `lifetime` s at the latest; gatewayLog() reads its log, during and after.
    """
    port = freePort(host)
    argv = [
        "rtsp",
        "--listen",
        f"tcp:{port}:interface={host}",
        "--upstream",
        f"{server.host}:{server.port}",
    ]
    if external is not None:
        argv += ["--external-address", external]
    with runGateway([*argv, *options], (host, port), lifetime=lifetime) as gateway:
        yield gateway


def gatewayUrl(
    gateway: Gateway, mount: str = "/test", user: str | None = None, password: str | None = None
) -> str:
    """rtsp://[user:password@]gateway/mount."""
    host, port = gateway.address
    credentials = "" if user is None else f"{user}:{password or ''}@"
    return f"rtsp://{credentials}{host}:{port}{mount}"


def gatewayLog(gateway: Gateway) -> str:
    """The gateway's log so far (and its output), still readable after it stopped."""
    return gateway.log()


SESSION_LINE = re.compile(
    r"(?P<session>s\d+): rtsp (?P<url>\S+) (?P<count>\d+) track\(s\) \((?P<transports>[^)]*)\) "
    r"in [\d.]+ s: (?P<toClient>\d+) packets to the client, (?P<toServer>\d+) to the server, "
    r"(?P<dropped>\d+) foreign dropped: (?P<reason>.*?) \(client (?P<client>\S+), "
    r"server (?P<server>\S+), from (?P<external>[^)]*)\)$",
    re.MULTILINE,
)
"""The rtsp.session line the report writes once per session (fwxtwisted.filters.rtsp.report)."""


@dataclasses.dataclass(frozen=True)
class SessionLine:
    """One rtsp.session line of the gateway log, parsed."""

    text: str
    session: str
    url: str
    tracks: int
    transports: list[str]
    packetsToClient: int
    packetsToServer: int
    dropped: int
    reason: str
    external: str


def sessionLines(gateway: Gateway) -> list[SessionLine]:
    """Every rtsp.session line logged so far, in order."""
    return [
        SessionLine(
            text=m.group(0),
            session=m["session"],
            url=m["url"],
            tracks=int(m["count"]),
            transports=m["transports"].split(", "),
            packetsToClient=int(m["toClient"]),
            packetsToServer=int(m["toServer"]),
            dropped=int(m["dropped"]),
            reason=m["reason"],
            external=m["external"],
        )
        for m in SESSION_LINE.finditer(gatewayLog(gateway))
    ]


def waitForSessionLines(gateway: Gateway, count: int, timeout: float = 10.0) -> list[SessionLine]:
    """The rtsp.session lines once there are at least `count` (AssertionError after `timeout`)."""
    deadline = time.monotonic() + timeout
    while True:
        lines = sessionLines(gateway)
        if len(lines) >= count:
            return lines
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"{len(lines)} of {count} rtsp.session lines after {timeout} s:\n"
                f"{gatewayLog(gateway)}"
            )
        time.sleep(0.1)


def assertCleanLog(gateway: Gateway) -> None:
    """No Traceback and no Unhandled Error in the gateway log."""
    text = gatewayLog(gateway)
    assert "Traceback" not in text and "Unhandled Error" not in text, text


# -- players --------------------------------------------------------------------------------


def _ffmpeg(name: str = "ffmpeg") -> str:
    return requirePeer(name)


@dataclasses.dataclass(frozen=True)
class FfmpegResult:
    """An ffmpeg run reading RTSP: the frames it wrote out, and its output."""

    client: ClientResult
    frames: int
    """Frames (video) or audio frames written, one ``framecrc`` line each."""
    progressFrames: int | None
    """The last ``frame=`` of ffmpeg's progress line (video only), or None."""
    perStream: dict[int, int] = dataclasses.field(default_factory=dict)
    """Frames written per output stream (index in the order of `stream`)."""

    @property
    def returncode(self) -> int:
        return self.client.returncode

    @property
    def output(self) -> str:
        return self.client.stderr


def ffmpegPlay(
    url: str,
    transport: str | None = "udp",
    seconds: float = 4.0,
    stream: str | Sequence[str] = "v",
    *,
    timeout: float = CLIENT_TIMEOUT,
    extra: Sequence[str] = (),
    wrapper: Sequence[str] = (),
) -> FfmpegResult:
    """Read `seconds` of one stream ('v' or 'a') of `url` with ffmpeg over `transport`.

    `transport` None leaves ffmpeg's default: UDP first, TCP if no UDP arrives.
    The decoded frames go to ``-f framecrc -``: one stdout line per frame, so audio
    frames count as precisely as video ones (the ``frame=`` progress line is video only).
    A sequence such as ``("v", "a")`` maps each in turn: `perStream` counts them apart.
    `wrapper` goes before the command (``ip netns exec NS``).
    """
    streams = [stream] if isinstance(stream, str) else list(stream)
    maps = [arg for name in streams for arg in ("-map", f"0:{name}")]
    argv = [
        *wrapper,
        _ffmpeg(),
        "-nostdin",
        "-hide_banner",
        *extra,
        *(["-rtsp_transport", transport] if transport else []),
        "-i",
        url,
        "-t",
        str(seconds),
        *maps,
        "-f",
        "framecrc",
        "-",
    ]
    client = runClient(argv, timeout)
    lines = [line for line in client.stdout.splitlines() if line and not line.startswith("#")]
    perStream: dict[int, int] = {}
    for line in lines:
        # framecrc: "stream_index, dts, pts, duration, size, 0xcrc"
        index = int(line.split(",", 1)[0])
        perStream[index] = perStream.get(index, 0) + 1
    progress = re.findall(r"frame=\s*(\d+)", client.stderr)
    return FfmpegResult(client, len(lines), int(progress[-1]) if progress else None, perStream)


def ffmpegFrames(url: str, transport: str = "udp", seconds: float = 4.0, stream: str = "v") -> int:
    """Frames ffmpeg decoded from `url` in `seconds` (AssertionError if it failed)."""
    result = ffmpegPlay(url, transport, seconds, stream)
    result.client.check()
    return result.frames


def ffprobeStreams(
    url: str, transport: str = "udp", timeout: float = CLIENT_TIMEOUT
) -> list[dict[str, Any]]:
    """The streams ffprobe finds at `url` (index, codec_type, codec_name, ...)."""
    argv = [
        _ffmpeg("ffprobe"),
        "-hide_banner",
        "-v",
        "error",
        "-rtsp_transport",
        transport,
        "-show_entries",
        "stream=index,codec_type,codec_name,sample_rate,width,height",
        "-of",
        "json",
        url,
    ]
    result = runClient(argv, timeout).check()
    streams: list[dict[str, Any]] = json.loads(result.stdout).get("streams", [])
    return streams


def ffmpegPublish(
    url: str,
    transport: str = "udp",
    seconds: float = 2.0,
    *,
    timeout: float = CLIENT_TIMEOUT,
) -> ClientResult:
    """Publish `seconds` of live test video (MJPEG) and audio (PCMU) to `url` (RECORD).

    ``-re`` paces it in real time. ``-huffman default``: RFC 2435 requires the standard
    Huffman tables, which ffmpeg's MJPEG encoder does not use by default.
    """
    argv = [
        _ffmpeg(),
        "-nostdin",
        "-hide_banner",
        "-loglevel",
        "error",
        "-re",
        "-f",
        "lavfi",
        "-i",
        "testsrc=size=320x240:rate=15",
        "-re",
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:sample_rate=8000",
        "-t",
        str(seconds),
        "-map",
        "0:v",
        "-map",
        "1:a",
        "-c:v",
        "mjpeg",
        "-huffman",
        "default",
        "-pix_fmt",
        "yuvj420p",
        "-c:a",
        "pcm_mulaw",
        "-ar",
        "8000",
        "-ac",
        "1",
        "-f",
        "rtsp",
        "-rtsp_transport",
        transport,
        url,
    ]
    return runClient(argv, timeout)


@dataclasses.dataclass(frozen=True)
class GstResult:
    """A gst-launch-1.0 rtspsrc run: how it ended, and the buffers its sinks saw."""

    client: ClientResult
    eos: bool
    """The pipeline ended by EOS: with num-buffers=N, every sink then got N buffers."""
    seen: dict[str, int]
    """Buffers per sink ('v', 'a') counted from -v's last-message notifications.

    Approximate: gst-launch drops the notifications still queued when EOS arrives (11 of
    20 seen over TCP), and now and then one more than num-buffers shows (21 of 20 seen
    once over UDP). `eos` with num-buffers is the exact count.
    """
    numBuffers: int

    @property
    def returncode(self) -> int:
        return self.client.returncode

    @property
    def output(self) -> str:
        return self.client.stdout + self.client.stderr

    @property
    def played(self) -> bool:
        """The pipeline reached EOS, and exited 0 or only failed to say goodbye.

        Measured against gst-rtsp-server directly, without the gateway (1 run in 25 over
        TCP on a loaded machine): after EOS, rtspsrc's shutdown requests hit a connection
        the server had already closed ("Could not send message. (Received end-of-file)")
        and gst-launch exits 1 though every buffer was decoded. Any other error counts.
        """
        if not self.eos:
            return False
        if self.returncode == 0:
            return True
        errors = re.findall(r"^ERROR: from element (.*)$", self.client.stderr, re.MULTILINE)
        return (
            bool(errors)
            and all(
                "GstRTSPSrc" in error and "Could not write to resource" in error for error in errors
            )
            and "Could not send message. (Received end-of-file)" in self.client.stderr
        )

    @property
    def buffers(self) -> dict[str, int]:
        """Decoded buffers per sink: exactly num-buffers after EOS, else the lower bound."""
        return {sink: self.numBuffers if self.eos else n for sink, n in self.seen.items()}


def gstPlay(
    url: str,
    protocols: str = "udp",
    buffers: int = 20,
    *,
    user: str | None = None,
    password: str | None = None,
    latency: int = 200,
    timeout: float = CLIENT_TIMEOUT,
    extra: Sequence[str] = (),
    wrapper: Sequence[str] = (),
) -> GstResult:
    """Play both tracks of `url` with rtspsrc until each sink got `buffers` decoded buffers.

    Each of rtspsrc's pads is linked (by caps) to depayloader, decoder and a fakesink with
    num-buffers: without both linked, or without num-buffers, the pipeline never ends.
    `wrapper` goes before the command (``ip netns exec NS``).
    """
    source = [
        "rtspsrc",
        f"location={url}",
        f"protocols={protocols}",
        f"latency={latency}",
        "name=src",
        *extra,
    ]
    if user is not None:
        source += [f"user-id={user}", f"user-pw={password or ''}"]
    sink = ["silent=false", f"num-buffers={buffers}", "sync=false"]
    argv = [
        *wrapper,
        requirePeer("gst-launch-1.0"),
        "-v",
        *source,
        "src.",
        "!",
        "application/x-rtp,media=video",
        "!",
        "rtpjpegdepay",
        "!",
        "jpegdec",
        "!",
        "fakesink",
        "name=v",
        *sink,
        "src.",
        "!",
        "application/x-rtp,media=audio",
        "!",
        "rtppcmudepay",
        "!",
        "mulawdec",
        "!",
        "fakesink",
        "name=a",
        *sink,
    ]
    client = runClient(argv, timeout)
    text = client.stdout + client.stderr
    seen = {
        name: len(re.findall(rf"GstFakeSink:{name}: last-message = chain", text))
        for name in ("v", "a")
    }
    eos = "Got EOS from element" in text
    return GstResult(client, eos, seen, buffers)


# -- a logging relay ------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class RelayedMessage:
    """One RTSP message through the relay, as its sender wrote it (before any rewrite)."""

    t: float
    connection: int
    direction: str
    """'C->S' (player to server) or 'S->C'."""
    data: bytes

    @property
    def firstLine(self) -> str:
        return self.data.split(b"\r\n", 1)[0].decode(errors="replace")


@dataclasses.dataclass(frozen=True)
class Datagram:
    """One UDP datagram a peer sent to one of the relay's own UDP ports."""

    t: float
    toward: str
    """'server' (the player sent it to the server_port we put in SETUP replies) or 'client'."""
    role: str
    """'rtp' or 'rtcp': which port of the pair it reached."""
    source: tuple[str, int]
    data: bytes

    @property
    def kind(self) -> str:
        """'rtcp-RR+SDES'... for RTCP (its packet types), 'rtp', 'rtp-empty' (header only),
        or 'not-rtp' (not RTP version 2, like most of gst rtspsrc's random punch filler)."""
        if not self.data or self.data[0] >> 6 != 2:
            return "not-rtp"
        if len(self.data) >= 2 and 200 <= self.data[1] <= 206:
            types: list[str] = []
            offset = 0
            while offset + 4 <= len(self.data):
                types.append(
                    {200: "SR", 201: "RR", 202: "SDES", 203: "BYE"}.get(
                        self.data[offset + 1], str(self.data[offset + 1])
                    )
                )
                offset += 4 * (int.from_bytes(self.data[offset + 2 : offset + 4], "big") + 1)
            return "rtcp-" + "+".join(types)
        return "rtp-empty" if len(self.data) <= 12 else "rtp"


def _bindUdpPair(host: str = "127.0.0.1") -> tuple[socket.socket, socket.socket]:
    """Two UDP sockets bound to an even port and the odd one after it."""
    for _ in range(100):
        rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rtp.bind((host, 0))
        port = rtp.getsockname()[1]
        if port % 2:
            rtp.close()
            continue
        rtcp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            rtcp.bind((host, port + 1))
        except OSError:
            rtp.close()
            rtcp.close()
            continue
        return rtp, rtcp
    raise RuntimeError("no free even/odd UDP port pair")


_TRANSPORT = re.compile(rb"^(Transport:[^\r\n]*)", re.IGNORECASE | re.MULTILINE)


class RTSPRelay:
    """A TCP relay in front of an RTSP server that records every message both ways.

    `udp` says what it does with the UDP ports negotiated in SETUP:

    - ``direct``: nothing, RTP and RTCP go straight between player and server;
    - ``observe``: SETUP replies name the relay's own server_port pair instead, so every
      datagram the player sends toward the server is recorded, then forwarded to it;
    - ``blackhole``: as observe without forwarding, and SETUP requests name the relay's own
      client_port pair too (replies get the player's back): no RTP reaches the player.

    Interleaved (``$``) frames are passed through and counted, not recorded.
    """

    def __init__(self, upstream: tuple[str, int], udp: str = "direct") -> None:
        assert udp in ("direct", "observe", "blackhole")
        self.upstream = upstream
        self.udp = udp
        self.began = time.monotonic()
        self.messages: list[RelayedMessage] = []
        self.datagrams: list[Datagram] = []
        self.interleaved: dict[str, int] = {"C->S": 0, "S->C": 0}
        self.connections: list[float] = []
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self.port: int = self.listener.getsockname()[1]
        self._start(self._accept)

    def _start(self, target: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def now(self) -> float:
        return time.monotonic() - self.began

    def url(self, mount: str = "/test") -> str:
        return f"rtsp://127.0.0.1:{self.port}{mount}"

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                downstream, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            upstream = socket.create_connection(self.upstream, timeout=5)
            for sock in (downstream, upstream):
                sock.settimeout(0.2)
                self._sockets.append(sock)
            with self._lock:
                number = len(self.connections)
                self.connections.append(self.now())
            state: dict[str, Any] = {"clientPorts": []}
            self._start(self._pump, number, "C->S", downstream, upstream, state)
            self._start(self._pump, number, "S->C", upstream, downstream, state)

    def _pump(
        self,
        number: int,
        direction: str,
        source: socket.socket,
        sink: socket.socket,
        state: dict[str, Any],
    ) -> None:
        buffer = b""
        while not self._closed.is_set():
            try:
                chunk = source.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                break
            if not chunk:
                break
            buffer += chunk
            out, buffer = self._messages(number, direction, buffer, state)
            try:
                sink.sendall(out)
            except OSError:
                break
        # Pass the half-close on: a player's EOF must reach the server, and back.
        with contextlib.suppress(OSError):
            sink.sendall(buffer)
            sink.shutdown(socket.SHUT_WR)

    def _messages(
        self, number: int, direction: str, buffer: bytes, state: dict[str, Any]
    ) -> tuple[bytes, bytes]:
        """Split complete messages and frames off `buffer`: (bytes to send, rest)."""
        out = b""
        while buffer:
            if buffer[:1] == b"$":
                if len(buffer) < 4:
                    break
                end = 4 + int.from_bytes(buffer[2:4], "big")
                if len(buffer) < end:
                    break
                out += buffer[:end]
                buffer = buffer[end:]
                with self._lock:
                    self.interleaved[direction] += 1
                continue
            head = buffer.find(b"\r\n\r\n")
            if head < 0:
                break
            length = re.search(rb"^Content-Length:\s*(\d+)", buffer[:head], re.I | re.M)
            end = head + 4 + (int(length.group(1)) if length else 0)
            if len(buffer) < end:
                break
            message = buffer[:end]
            buffer = buffer[end:]
            with self._lock:
                self.messages.append(RelayedMessage(self.now(), number, direction, message))
            out += self._rewrite(direction, message, state)
        return out, buffer

    def _rewrite(self, direction: str, message: bytes, state: dict[str, Any]) -> bytes:
        match = _TRANSPORT.search(message)
        if self.udp == "direct" or match is None:
            return message
        header = match.group(1)
        ports = re.search(rb"client_port=(\d+)-(\d+)", header)
        if direction == "C->S":
            if self.udp == "blackhole" and ports:
                mine = self._udpPair("client", None)
                state["clientPorts"].append((ports.group(0), b"client_port=%d-%d" % mine))
                header = header.replace(ports.group(0), b"client_port=%d-%d" % mine)
        else:
            server = re.search(rb"server_port=(\d+)-(\d+)", header)
            if server:
                target = (int(server.group(1)), int(server.group(2)))
                mine = self._udpPair("server", target)
                header = header.replace(server.group(0), b"server_port=%d-%d" % mine)
            if ports and state["clientPorts"]:
                original, replaced = state["clientPorts"].pop(0)
                header = header.replace(replaced, original)
        return message.replace(match.group(1), header, 1)

    def _udpPair(self, toward: str, target: tuple[int, int] | None) -> tuple[int, int]:
        # An even RTP port and the next one for RTCP, as RFC 3550 pairs them: ffmpeg sends
        # RTCP to server_port's first value + 1, whatever the second value says.
        pair = _bindUdpPair()
        for index, (role, sock) in enumerate(zip(("rtp", "rtcp"), pair, strict=True)):
            sock.settimeout(0.2)
            self._sockets.append(sock)
            forward = None
            if target is not None and self.udp == "observe":
                forward = (self.upstream[0], target[index])
            self._start(self._receive, sock, toward, role, forward)
        return pair[0].getsockname()[1], pair[1].getsockname()[1]

    def _receive(
        self, sock: socket.socket, toward: str, role: str, forward: tuple[str, int] | None
    ) -> None:
        while not self._closed.is_set():
            try:
                data, source = sock.recvfrom(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self.datagrams.append(Datagram(self.now(), toward, role, source, data))
            if forward is not None:
                with contextlib.suppress(OSError):
                    sock.sendto(data, forward)

    def transcript(self, title: str) -> str:
        """Every message, in order, each under a '### N C->S +t s' line, CRLFs kept."""
        with self._lock:
            messages = list(self.messages)
            interleaved = dict(self.interleaved)
        parts = [
            f"# {title}\r\n# {len(messages)} messages; interleaved frames passed through "
            f"(not shown): {interleaved}\r\n"
        ]
        for message in messages:
            parts.append(
                f"\r\n### connection {message.connection} {message.direction} +{message.t:.3f}s\r\n"
            )
            parts.append(message.data.decode("utf-8", errors="replace"))
        return "".join(parts)

    def close(self) -> None:
        self._closed.set()
        for sock in [self.listener, *self._sockets]:
            with contextlib.suppress(OSError):
                sock.close()
        for thread in self._threads:
            thread.join(2)

    def __enter__(self) -> RTSPRelay:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
