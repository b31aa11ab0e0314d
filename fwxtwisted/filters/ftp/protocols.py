"""The protocols the FTP filter registers: its control connection and its data channels."""

import uuid

from fwxtwisted.interfaces import ProtocolDefinition, Transport

FTP_CONTROL = ProtocolDefinition(
    uuid.UUID("9a4c1f0e-6c2b-4d6a-8e1f-2b7d5c3a9e01"), "ftp", Transport.TCP, 21
)
FTP_DATA = ProtocolDefinition(uuid.UUID("9a4c1f0e-6c2b-4d6a-8e1f-2b7d5c3a9e02"), "ftp-data")
