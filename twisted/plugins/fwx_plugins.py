"""twisted plugins of fwxtwisted: the `fwx` twistd command and the built-in filters."""

from twisted.application.service import ServiceMaker

from fwxtwisted.filters.ftp.filter import ftpFilter
from fwxtwisted.filters.rtsp.filter import rtspFilter
from fwxtwisted.filters.tcp import tcpFilter

fwx = ServiceMaker(
    "fwxtwisted gateway",
    "fwxtwisted.app.tap",
    "Application-level gateway: filters that follow secondary connections (FTP, RTSP, ...).",
    "fwx",
)

__all__ = ["fwx", "ftpFilter", "rtspFilter", "tcpFilter"]
