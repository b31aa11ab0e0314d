"""Checks of configuration values that the gateway and its filters share: port ranges
and times in seconds."""

from __future__ import annotations

import math
from typing import TypeGuard

from fwxtwisted.address import parsePort

__all__ = ["MAX_SECONDS", "SECONDS_LIMIT", "isSeconds", "parsePortRange"]


def parsePortRange(text: str) -> tuple[int, int]:
    """``LOW-HIGH`` to an inclusive pair. @raise ValueError."""
    low, sep, high = text.partition("-")
    if not sep:
        raise ValueError(f"{text!r} is not LOW-HIGH")
    lo, hi = parsePort(low.strip()), parsePort(high.strip())
    if lo < 1 or hi < lo:
        raise ValueError(f"{text!r} is not a range of ports 1-65535 with LOW <= HIGH")
    return lo, hi


#: The longest time any setting may name: a year is a typo already, and timers
#: must stay well inside what the reactor and the OS can wait for.
MAX_SECONDS = 365 * 86400.0
SECONDS_LIMIT = f"at most {MAX_SECONDS:.0f} (a year)"


def isSeconds(value: object) -> TypeGuard[int | float]:
    """True for a TOML number fit to be a time in seconds: finite, at most L{MAX_SECONDS}
    (the sign is the caller's to check)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return math.isfinite(value) and abs(value) <= MAX_SECONDS
