"""The protocols the RTSP filter registers: the control connection and its media."""

from __future__ import annotations

import uuid

from fwxtwisted.interfaces import ProtocolDefinition, Transport

RTSP_CONTROL = ProtocolDefinition(
    uuid.UUID("0b5c6f0e-7a43-4d2c-9d8e-3f1b2a6c4e71"), "rtsp", Transport.TCP, 554
)
#: An RTP/RTCP pair of one media track (two consecutive UDP ports, RTP on the even one).
RTP_MEDIA = ProtocolDefinition(
    uuid.UUID("5e2f8d1a-0c6b-4b7e-8f3a-9d4c1e2b7a60"), "rtp", Transport.UDP
)
