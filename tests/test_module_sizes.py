"""Modules stay small: every module of the package is under 450 lines."""

from __future__ import annotations

from pathlib import Path

PACKAGE = Path(__file__).parents[1] / "fwxtwisted"
LIMIT = 450


def test_every_module_is_under_the_limit() -> None:
    sizes = {
        str(path.relative_to(PACKAGE)): len(path.read_text(encoding="utf-8").splitlines())
        for path in PACKAGE.rglob("*.py")
    }
    assert sizes, "no module found"
    assert {name: n for name, n in sizes.items() if n >= LIMIT} == {}
