"""The gateway's Logger: Twisted's, with one level threshold for the whole process.

twistd's observers write every event they are given, debug included, and formatting
one costs about 70 µs: more than a short session's relaying.  Events below the
threshold are dropped before an event dictionary is even built.
"""

from __future__ import annotations

from twisted.logger import Logger as _TwistedLogger
from twisted.logger import LogLevel

#: Names accepted by --log-level and the log_level key, lowest first.
LEVEL_NAMES = ("debug", "info", "warn", "error", "critical")

_RANK = {LogLevel.levelWithName(name): rank for rank, name in enumerate(LEVEL_NAMES)}
_threshold = _RANK[LogLevel.info]


def setLogLevel(name: str) -> None:
    """Emit only events at C{name} or above from now on (the default is info).

    @raise ValueError: not one of L{LEVEL_NAMES}.
    """
    global _threshold
    if name not in LEVEL_NAMES:
        raise ValueError(f"log level {name!r} is not one of {', '.join(LEVEL_NAMES)}")
    _threshold = _RANK[LogLevel.levelWithName(name)]


def logLevel() -> str:
    """The name of the current threshold."""
    return LEVEL_NAMES[_threshold]


class Logger(_TwistedLogger):
    """A Twisted Logger that drops events below the process's threshold, and renders
    the text of the events it keeps once, with str.format.

    Twisted's observers render the format with string.Formatter, in Python: half the
    cost of a session's one log line.  The event keeps every field and its original
    format (as C{fwx_format}); its C{log_format} becomes the rendered text, braces
    escaped.  A format str.format cannot render (Twisted's C{{f()}} calls) is left
    to Twisted.
    """

    def emit(self, level: LogLevel, format: str | None = None, **kwargs: object) -> None:
        if _RANK.get(level, len(LEVEL_NAMES)) < _threshold:
            return
        if format is not None and "()" not in format:
            try:
                text = format.format(**kwargs)
            except (KeyError, IndexError, AttributeError, ValueError, TypeError):
                pass
            else:
                kwargs["fwx_format"] = format
                format = text.replace("{", "{{").replace("}", "}}")
        super().emit(level, format, **kwargs)
