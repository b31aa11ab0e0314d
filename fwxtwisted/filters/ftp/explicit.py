"""parseExplicitUser: the classic proxy login, USER name@host[:port]."""

from __future__ import annotations

from fwxtwisted.address import Address, parsePort

FTP_PORT = 21


def parseExplicitUser(argument: str) -> tuple[str, Address]:
    """Split ``name@host[:port]`` (``name@[v6]:port`` for IPv6) into name and destination.

    The last ``@`` separates them, so a name may hold ``@`` itself (e-mail logins).
    @raise ValueError: no host, or a bad port.
    """
    name, sep, destination = argument.rpartition("@")
    if not sep or not name or not destination:
        raise ValueError("log in as USER name@host[:port]")
    if destination.startswith("["):
        end = destination.find("]")
        if end < 0:
            raise ValueError(f"unclosed '[' in {destination!r}")
        host, rest = destination[1:end], destination[end + 1 :]
        if rest and not rest.startswith(":"):
            raise ValueError(f"junk after ']' in {destination!r}")
        port = parsePort(rest[1:]) if rest else FTP_PORT
    elif destination.count(":") == 1:
        host, _, portText = destination.partition(":")
        port = parsePort(portText)
    elif ":" in destination:
        raise ValueError("write an IPv6 destination as name@[address]:port")
    else:
        host, port = destination, FTP_PORT
    if not host or port == 0:
        raise ValueError(f"{destination!r} is not host[:port]")
    return name, Address(host, port)
