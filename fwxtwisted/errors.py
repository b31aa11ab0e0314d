"""Exceptions raised by fwxtwisted, each with a message fit to show a user."""

from __future__ import annotations


class FWXError(Exception):
    """Base of every fwxtwisted error."""


def oneLine(text: str) -> str:
    """C{text} fit for one line of a terminal: control characters, line breaks and
    undecodable bytes (surrogates) written as Python escapes."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class ConfigError(FWXError):
    """A configuration value is wrong; the message names the file and key, on one line
    (whatever the mistaken value holds)."""

    def __init__(self, message: str) -> None:
        super().__init__(oneLine(message))


class PortRangeExhausted(FWXError):
    """No free run of consecutive ports is left in the range configured for an IP."""


class PortUnavailable(FWXError):
    """An explicitly requested port could not be bound."""


class TooManyPendingRedirects(FWXError):
    """A session asked for more unused permissions than it may hold at once."""


class SessionClosed(FWXError):
    """The session ended before the operation could finish."""


class UpstreamTimeout(FWXError):
    """Connecting to the upstream (or a redirect's connect address) took too long."""
