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
    """A Twisted Logger that drops events below the process's threshold."""

    def emit(self, level: LogLevel, format: str | None = None, **kwargs: object) -> None:
        if _RANK.get(level, len(LEVEL_NAMES)) < _threshold:
            return
        super().emit(level, format, **kwargs)
