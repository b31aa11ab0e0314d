"""Shared fixtures of the reliability tests: payload files and one vsftpd for them all."""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.core.support import net
from tests.interop.support import Payload, makeServerRoot
from tests.peers import Vsftpd
from tests.reliability.support import makePayload

#: The in-process tests' sockets and listeners, all closed (and checked) at their end.
__all__ = ["net"]

SMALL = 64 * 1024 + 3
MEDIUM = 8 * 1024 * 1024 + 5
#: Far more than the kernel buffers between a server and a client can hold.
LARGE = 128 * 1024 * 1024


@dataclasses.dataclass(frozen=True)
class Files:
    """The files every reliability test may download, and where they are made."""

    directory: Path
    small: Payload
    medium: Payload
    large: Payload


@dataclasses.dataclass(frozen=True)
class Upstream:
    """The vsftpd behind the gateways, and its root."""

    server: Vsftpd
    root: Path

    @property
    def address(self) -> str:
        """HOST:PORT, as --upstream takes it."""
        return f"{self.server.host}:{self.server.port}"


@pytest.fixture(scope="session")
def files() -> Iterator[Files]:
    """Files made once per session in a temp dir removed at its end."""
    directory = Path(tempfile.mkdtemp(prefix="fwx-reliability-"))
    directory.chmod(0o755)
    try:
        yield Files(
            directory,
            small=makePayload(directory, "small.bin", SMALL, 11),
            medium=makePayload(directory, "medium.bin", MEDIUM, 12),
            large=makePayload(directory, "large.bin", LARGE, 13),
        )
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def upstream(files: Files) -> Iterator[Upstream]:
    """One vsftpd, anonymous and read-only, without per-IP or total client limits (the
    gateway's own limits are under test, and all its sessions come from one IP)."""
    root = makeServerRoot(files.directory / "root", [files.small, files.medium, files.large])
    extra = {"max_per_ip": "0", "max_clients": "0"}
    with Vsftpd(root, extra=extra, lifetime=300) as server:
        yield Upstream(server, root)
