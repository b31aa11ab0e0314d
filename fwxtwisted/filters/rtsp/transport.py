"""TransportSpec: the Transport header (RFC 2326 §12.39) parsed and formatted; Session too."""

from __future__ import annotations

import re

from fwxtwisted.filters.rtsp.errors import RTSPProtocolError

_PROTOCOL = re.compile(r"[A-Za-z0-9\-_.]+(/[A-Za-z0-9\-_.]+){1,2}\Z")
_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
_OWS = " \t"
# Values may be quoted (mode="PLAY"); a control character could end the header line, and
# only quoted text holds spaces.
_VALUE = re.compile(r'(?:[^\x00-\x20\x7f";,]|"[^\x00-\x08\x0a-\x1f\x7f"]*")*\Z')
_PAIR = re.compile(r"([0-9]{1,5})(?:-([0-9]{1,5}))?\Z")
# Session ids are 1*(ALPHA / DIGIT / safe) in RFC 2326 §3.4, but servers use wider sets
# (base64's "/" and "="): refuse only what could end the id or the header.
_SESSION_ID = re.compile(r'[^\x00-\x20\x7f;,"]+\Z')
_TIMEOUT = re.compile(r"[0-9]{1,9}\Z")

#: Parameters holding a pair of ports or channels, and the highest number each allows.
PAIR_LIMITS = {"client_port": 65535, "server_port": 65535, "port": 65535, "interleaved": 255}


def _split(text: str, separator: str) -> list[str]:
    """Split C{text} at C{separator}s outside double quotes."""
    parts: list[str] = []
    start = 0
    quoted = False
    for index, character in enumerate(text):
        if character == '"':
            quoted = not quoted
        elif character == separator and not quoted:
            parts.append(text[start:index])
            start = index + 1
    if quoted:
        raise RTSPProtocolError(400, f"unbalanced quote in {text[:60]!r}")
    parts.append(text[start:])
    return parts


class TransportSpec:
    """One transport of a Transport header: C{RTP/AVP[/UDP|/TCP]} and its parameters.

    Parameters keep their order and spelling, including those this module does not know,
    so that formatting gives back what was parsed.  A parameter's value is None for a
    flag (C{unicast}, C{append}) and the raw text otherwise (quotes kept).
    """

    __slots__ = ("protocol", "params")

    def __init__(self, protocol: str, params: list[tuple[str, str | None]] | None = None) -> None:
        if _PROTOCOL.match(protocol) is None:
            raise RTSPProtocolError(400, f"bad transport protocol {protocol[:60]!r}")
        self.protocol = protocol
        self.params: list[tuple[str, str | None]] = []
        for name, value in params or []:
            self.set(name, value)

    @classmethod
    def parse(cls, text: str) -> TransportSpec:
        """Parse one transport spec (no commas outside quotes).

        @raise RTSPProtocolError: 400 when it is not a transport spec.
        """
        protocol, *rest = (part.strip(_OWS) for part in _split(text, ";"))
        spec = cls(protocol)
        for param in rest:
            if not param:
                continue  # "RTP/AVP;unicast;" is common enough to accept
            name, equals, value = param.partition("=")
            spec.params.append((name.strip(_OWS), value.strip(_OWS) if equals else None))
            spec._check(*spec.params[-1])
        return spec

    def format(self) -> str:
        """The spec as header text."""
        return ";".join(
            [self.protocol]
            + [name if value is None else f"{name}={value}" for name, value in self.params]
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TransportSpec):
            return NotImplemented
        return (self.protocol, self.params) == (other.protocol, other.params)

    def __repr__(self) -> str:
        return f"TransportSpec({self.format()!r})"

    @property
    def lowerTransport(self) -> str:
        """C{UDP} or C{TCP} (uppercased as given); UDP when the spec names none."""
        parts = self.protocol.split("/")
        return parts[2].upper() if len(parts) == 3 else "UDP"

    @property
    def isMulticast(self) -> bool:
        """Whether the C{multicast} flag is given.

        RFC 2326 makes multicast the default when neither flag is given, but clients
        that ask for unicast ports without saying so are common: callers decide.
        """
        return self.has("multicast")

    def _check(self, name: str, value: str | None) -> None:
        if _NAME.match(name) is None:
            raise RTSPProtocolError(400, f"bad transport parameter name {name[:60]!r}")
        if value is not None and _VALUE.match(value) is None:
            raise RTSPProtocolError(400, f"bad value for transport parameter {name!r}")
        if value is not None and name.lower() in PAIR_LIMITS:
            self._pair(name, value)

    def _find(self, name: str) -> int:
        lowered = name.lower()
        for index, (paramName, _) in enumerate(self.params):
            if paramName.lower() == lowered:
                return index
        return -1

    def has(self, name: str) -> bool:
        """Whether parameter C{name} (case-insensitive) is present, flag or not."""
        return self._find(name) >= 0

    def get(self, name: str) -> str | None:
        """The raw value of the first parameter C{name}; None if absent or a flag."""
        index = self._find(name)
        return None if index < 0 else self.params[index][1]

    def set(self, name: str, value: str | None) -> None:
        """Set parameter C{name}: in place if present (others of that name removed),
        appended otherwise.  C{None} makes it a flag.

        @raise RTSPProtocolError: 400 for a bad name or value.
        """
        self._check(name, value)
        index = self._find(name)
        if index < 0:
            self.params.append((name, value))
            return
        self.remove(name)
        self.params.insert(index, (name, value))

    def remove(self, name: str) -> None:
        """Remove every parameter called C{name}."""
        lowered = name.lower()
        self.params = [param for param in self.params if param[0].lower() != lowered]

    @staticmethod
    def _pair(name: str, value: str) -> tuple[int, int]:
        match = _PAIR.match(value)
        limit = PAIR_LIMITS[name.lower()]
        if match is None:
            raise RTSPProtocolError(400, f"bad {name} {value[:40]!r}")
        first = int(match.group(1))
        last = first if match.group(2) is None else int(match.group(2))
        if first > limit or last > limit or last < first:
            raise RTSPProtocolError(400, f"bad {name} {value[:40]!r}")
        return first, last

    def getPair(self, name: str) -> tuple[int, int] | None:
        """The C{(first, last)} of a port or channel parameter (C{client_port},
        C{server_port}, C{port}, C{interleaved}); a single number gives C{(n, n)}.
        None when absent.
        """
        value = self.get(name)
        return None if value is None else self._pair(name, value)

    def setPair(self, name: str, pair: tuple[int, int]) -> None:
        """Set a port or channel parameter to C{first-last}."""
        self.set(name, f"{pair[0]}-{pair[1]}")

    @property
    def clientPorts(self) -> tuple[int, int] | None:
        """C{client_port} as C{(rtp, rtcp)}, or None."""
        return self.getPair("client_port")

    @property
    def serverPorts(self) -> tuple[int, int] | None:
        """C{server_port} as C{(rtp, rtcp)}, or None."""
        return self.getPair("server_port")

    @property
    def interleaved(self) -> tuple[int, int] | None:
        """C{interleaved} as C{(rtpChannel, rtcpChannel)}, or None."""
        return self.getPair("interleaved")


def parseTransport(value: str) -> list[TransportSpec]:
    """Parse a Transport header value: one or more specs, comma-separated, in order.

    @raise RTSPProtocolError: 400 when a spec is malformed or there is none.
    """
    parts = [part.strip(_OWS) for part in _split(value, ",")]
    specs = [TransportSpec.parse(part) for part in parts if part]
    if not specs:
        raise RTSPProtocolError(400, "empty Transport header")
    return specs


def formatTransport(specs: list[TransportSpec]) -> str:
    """The Transport header value for C{specs}."""
    return ",".join(spec.format() for spec in specs)


def parseSession(value: str) -> tuple[str, int | None]:
    """Parse a Session header: C{id[;timeout=seconds]}.

    @return: the session id and the timeout in seconds (None when not given; RFC 2326
        then implies 60).  Unknown parameters are ignored.
    @raise RTSPProtocolError: 400 for a malformed id or timeout.
    """
    sessionId, *params = (part.strip(_OWS) for part in value.split(";"))
    if _SESSION_ID.match(sessionId) is None:
        raise RTSPProtocolError(400, f"bad session id {sessionId[:40]!r}")
    timeout: int | None = None
    for param in params:
        name, _, text = param.partition("=")
        if name.strip(_OWS).lower() == "timeout":
            text = text.strip(_OWS)
            if _TIMEOUT.match(text) is None:
                raise RTSPProtocolError(400, f"bad session timeout {text[:40]!r}")
            timeout = int(text)
    return sessionId, timeout


def formatSession(sessionId: str, timeout: int | None = None) -> str:
    """The Session header value for C{sessionId} and an optional timeout."""
    return sessionId if timeout is None else f"{sessionId};timeout={timeout}"
