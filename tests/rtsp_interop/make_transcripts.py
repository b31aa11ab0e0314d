"""Write transcripts/*.txt: real RTSP exchanges between the players and gst_server.py.

Run from the project root: ``python3 -m tests.rtsp_interop.make_transcripts``. Each file
holds every message both ways, byte for byte (CRLF line ends kept), each under a
``### connection N C->S|S->C +seconds`` line; interleaved RTP/RTCP frames are only counted.
They are test vectors for the RTSP parser: regenerate them rather than edit them.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from tests.rtsp_interop.support import (
    TRANSCRIPTS,
    RTSPRelay,
    RTSPServer,
    ffmpegPlay,
    ffmpegPublish,
    gstPlay,
    startRTSPServer,
)

Run = Callable[[RTSPServer, RTSPRelay], object]

CASES: dict[str, tuple[str, str, str, Run]] = {
    "ffmpeg-play-udp": (
        "play",
        "direct",
        "ffmpeg -rtsp_transport udp, 2 s of video",
        lambda s, r: ffmpegPlay(r.url(), "udp", 2).client.check(),
    ),
    "ffmpeg-play-tcp": (
        "play",
        "direct",
        "ffmpeg -rtsp_transport tcp, 2 s of video",
        lambda s, r: ffmpegPlay(r.url(), "tcp", 2).client.check(),
    ),
    "gst-play-udp": (
        "play",
        "direct",
        "gst-launch-1.0 rtspsrc protocols=udp, 10 buffers per track",
        lambda s, r: gstPlay(r.url(), "udp", 10).client.check(),
    ),
    "gst-play-tcp": (
        "play",
        "direct",
        "gst-launch-1.0 rtspsrc protocols=tcp, 10 buffers per track",
        lambda s, r: gstPlay(r.url(), "tcp", 10).client.check(),
    ),
    "ffmpeg-record-udp": (
        "record",
        "direct",
        "ffmpeg -f rtsp -rtsp_transport udp publishing MJPEG + PCMU for 1 s",
        lambda s, r: ffmpegPublish(r.url(), "udp", 1).check(),
    ),
    "ffmpeg-record-tcp": (
        "record",
        "direct",
        "ffmpeg -f rtsp -rtsp_transport tcp publishing MJPEG + PCMU for 1 s",
        lambda s, r: ffmpegPublish(r.url(), "tcp", 1).check(),
    ),
    "ffmpeg-digest-tcp": (
        "digest",
        "direct",
        "ffmpeg -rtsp_transport tcp with user:secret against Digest auth (401, then again)",
        lambda s, r: ffmpegPlay(
            r.url().replace("rtsp://", "rtsp://user:secret@"), "tcp", 1
        ).client.check(),
    ),
    "ffmpeg-udp-fallback-tcp": (
        "play",
        "blackhole",
        "ffmpeg with its default transports and -timeout 3000000 when no UDP arrives "
        "(the relay swallows RTP/RTCP; server replies name the relay's client ports): "
        "PAUSE and SETUP interleaved on the same connection and session after 3 s",
        lambda s, r: ffmpegPlay(r.url(), None, 1, extra=["-timeout", "3000000"]).client.check(),
    ),
    "gst-udp-fallback-tcp": (
        "play",
        "blackhole",
        "gst-launch-1.0 rtspsrc protocols=udp+tcp when no UDP arrives (the relay swallows "
        "RTP/RTCP; server replies name the relay's client ports): TEARDOWN after 5 s, then "
        "a new connection with interleaved SETUPs",
        lambda s, r: gstPlay(r.url(), "udp+tcp", 5).client.check(),
    ),
}


def main() -> None:
    TRANSCRIPTS.mkdir(exist_ok=True)
    for name, (mode, udp, title, run) in CASES.items():
        with (
            startRTSPServer(mode, user="user", password="secret") as server,
            RTSPRelay(("127.0.0.1", server.port), udp=udp) as relay,
        ):
            run(server, relay)
            # Let the last reply (TEARDOWN's) through the relay before it is read.
            time.sleep(0.3)
            text = relay.transcript(f"{name}: {title}")
        (TRANSCRIPTS / f"{name}.txt").write_bytes(text.encode())
        print(name, len(relay.messages), "messages")


if __name__ == "__main__":
    main()
