"""URLMap: RTSP URLs rewritten between the gateway's public address and the server's."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable

#: Default ports by scheme: 554 for RTSP over TCP or UDP (RFC 2326 §3.2), 322 for RTSP
#: over TLS (the IANA registration made by RFC 7826).
DEFAULT_PORTS = {"rtsp": 554, "rtspu": 554, "rtsps": 322}

_URL = re.compile(
    r"(?P<scheme>rtsps?|rtspu)://"
    r"(?P<userinfo>[^/?#@\[\]]*@)?"
    r"(?P<host>\[[0-9A-Fa-f:.]+\]|[^/?#@:\[\]]*)"
    r"(?::(?P<port>[0-9]{0,5}))?"
    r"(?P<rest>[/?#].*)?\Z",
    re.IGNORECASE | re.DOTALL,
)
_SDP_URL_LINE = re.compile(rb"\A(a=(?:control|content-base):)([ \t]*)(\S+)", re.IGNORECASE)


def _hostKey(host: str) -> str:
    """A host as compared: lowercased, IP literals in their canonical spelling."""
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        return str(ipaddress.ip_address(bare))
    except ValueError:
        return bare.lower().rstrip(".")


def _authority(host: str, port: int, scheme: str) -> str:
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return host if port == DEFAULT_PORTS[scheme] else f"{host}:{port}"


class URLMap:
    """Rewrite absolute RTSP URLs between the two sides of the gateway.

    Clients name the gateway (C{publicHost}, C{publicPort}); the server knows itself as
    C{serverHost}, C{serverPort}.  Only C{rtsp://}, C{rtsps://} and C{rtspu://} URLs
    whose host and port name the side being left are rewritten: the scheme, any
    userinfo, the path, query and fragment stay as they were.  Anything else (C{*},
    relative URLs, other hosts, other schemes) is returned unchanged.
    """

    def __init__(self, publicHost: str, publicPort: int, serverHost: str, serverPort: int) -> None:
        self.publicHost = publicHost
        self.publicPort = publicPort
        self.serverHost = serverHost
        self.serverPort = serverPort

    def toServer(self, url: str) -> str:
        """C{url} as the server must see it (request URIs, Content-Base of a request)."""
        return _rewrite(url, (self.publicHost, self.publicPort), (self.serverHost, self.serverPort))

    def toClient(self, url: str) -> str:
        """C{url} as the client must see it (Content-Base, Location, RTP-Info, SDP)."""
        return _rewrite(url, (self.serverHost, self.serverPort), (self.publicHost, self.publicPort))


def _rewrite(url: str, source: tuple[str, int], target: tuple[str, int]) -> str:
    match = _URL.match(url)
    if match is None:
        return url
    scheme = match.group("scheme").lower()
    portText = match.group("port")
    port = int(portText) if portText else DEFAULT_PORTS[scheme]
    if port != source[1] or _hostKey(match.group("host")) != _hostKey(source[0]):
        return url
    return (
        f"{match.group('scheme')}://{match.group('userinfo') or ''}"
        f"{_authority(target[0], target[1], scheme)}{match.group('rest') or ''}"
    )


def _splitOutsideQuotes(text: str, separator: str) -> list[str]:
    parts: list[str] = []
    start = 0
    quoted = False
    for index, character in enumerate(text):
        if character == '"':
            quoted = not quoted
        elif character == separator and not quoted:
            parts.append(text[start:index])
            start = index + 1
    parts.append(text[start:])
    return parts


def rewriteRTPInfo(value: str, fn: Callable[[str], str]) -> str:
    """Apply C{fn} to every C{url=} of an RTP-Info header value.

    Everything else (C{seq}, C{rtptime}, spacing, order, quotes around a URL) is kept.
    RFC 2326 does not quote these URLs, so one holding an unquoted comma or semicolon is
    cut there: the part after it is left as it was.
    """
    streams = []
    for stream in _splitOutsideQuotes(value, ","):
        params = []
        for param in _splitOutsideQuotes(stream, ";"):
            name, equals, url = param.partition("=")
            if equals and name.strip().lower() == "url":
                stripped = url.strip()
                if len(stripped) >= 2 and stripped[0] == stripped[-1] == '"':
                    rewritten = f'"{fn(stripped[1:-1])}"'
                else:
                    rewritten = fn(stripped)
                param = f"{name}={url.replace(stripped, rewritten, 1)}"
            params.append(param)
        streams.append(";".join(params))
    return ",".join(streams)


def rewriteSDP(body: bytes, fn: Callable[[str], str]) -> bytes:
    """Apply C{fn} to the absolute URLs of the C{a=control:} and C{a=content-base:}
    lines of an SDP body.

    Relative values (C{streamid=0}, C{*}) and every other line are kept byte for byte,
    line endings included.  The caller sets the new body on its message, which updates
    Content-Length.
    """

    def replace(match: re.Match[bytes]) -> bytes:
        url = match.group(3).decode("latin-1")
        if "://" not in url:
            return match.group(0)
        return match.group(1) + match.group(2) + fn(url).encode("latin-1")

    lines = body.splitlines(keepends=True)
    return b"".join(_SDP_URL_LINE.sub(replace, line, count=1) for line in lines)
