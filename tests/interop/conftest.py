"""Shared fixtures of the interop tests: the payload files, made once per session."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from tests.interop.support import Payload, Payloads, RootFactory, makeServerRoot
from tests.peers import makeFile

BIG = 50 * 1024 * 1024
SMALL = 4 * 1024 * 1024 + 17


def _make(directory: Path, name: str, size: int, seed: int) -> Payload:
    path = directory / name
    return Payload(path, size, makeFile(path, size, seed=seed))


@pytest.fixture(scope="session")
def payloads() -> Iterator[Payloads]:
    """Four pseudo-random files, made once per session (hard-linked into server roots).

    They live in a temp dir removed at the end of the session, not in pytest's kept
    temp dirs: 100 MiB per run would pile up there.
    """
    directory = Path(tempfile.mkdtemp(prefix="fwx-interop-payloads-"))
    directory.chmod(0o755)
    try:
        yield Payloads(
            big=_make(directory, "big.bin", BIG, 1),
            bigUpload=_make(directory, "big-upload.bin", BIG, 2),
            small=_make(directory, "small.bin", SMALL, 3),
            smallUpload=_make(directory, "small-upload.bin", SMALL - 5, 4),
        )
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def out(tmp_path: Path) -> Iterator[Path]:
    """Where a client writes a download; removed after the test (pytest keeps tmp_path)."""
    path = tmp_path / "out.bin"
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)


@pytest.fixture(scope="session")
def serverRoots() -> Iterator[RootFactory]:
    """Make server roots holding hard links to payloads: roots(name, [payload, ...]).

    They live in a 0755 temp dir of their own, not under pytest's 0700 one: proftpd
    refuses an anonymous root its unprivileged user cannot reach.
    """
    base = Path(tempfile.mkdtemp(prefix="fwx-interop-roots-"))
    base.chmod(0o755)

    def make(name: str, files: Sequence[Payload]) -> Path:
        return makeServerRoot(Path(tempfile.mkdtemp(prefix=f"{name}-", dir=base)), files)

    try:
        yield make
    finally:
        shutil.rmtree(base, ignore_errors=True)
