"""Exceptions raised by fwxtwisted, each with a message fit to show a user."""

from __future__ import annotations


class FWXError(Exception):
    """Base of every fwxtwisted error."""


class ConfigError(FWXError):
    """A configuration value is wrong; the message names the file and key."""


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
