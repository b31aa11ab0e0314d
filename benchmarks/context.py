"""What every section shares: options, the work directory, peers started once."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import pytest

from benchmarks.procs import PROJECT_ROOT, findTool, waitListening
from benchmarks.report import Section

if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))

from tests.peers import (  # noqa: E402
    Gateway,
    TlsFiles,
    Vsftpd,
    freePort,
    makeFile,
    makeTlsFiles,
    runGateway,
)

LOOPBACK = "127.0.0.1"
#: Seconds any process of ours may live even if nobody stops it.
LIFETIME = 7200.0
SMALL_FILE = "small.bin"
SMALL_SIZE = 1 << 20
BIG_FILE = "big.bin"
#: Processes of the gateway rows that run with --workers: one per core.
WORKERS = max(2, os.cpu_count() or 2)

#: What tests.peers raises for a missing peer (pytest's skip, or fail under CI=true).
PeerMissing = (pytest.skip.Exception, pytest.fail.Exception)


@dataclass
class Context:
    logDir: Path
    #: Where a section's processes are entered (closed when the section ends).
    stack: ExitStack
    #: Where processes that live for the whole run are entered.
    runStack: ExitStack
    runs: int
    size: int
    duration: float
    warmup: float
    sessions: int
    ftpClients: int
    quick: bool
    #: Sections measured once and shown once although two selections need them.
    shared: dict[str, Section] = field(default_factory=dict)
    #: --rows: measure only rows whose name holds one of these (and the references).
    rows: tuple[str, ...] = ()
    _vsftpd: Vsftpd | None = None
    _vsftpdProblem: str | None = None
    _vsftpdTLS: tuple[Vsftpd, TlsFiles] | None = None

    def wants(self, name: str, reference: bool = False) -> bool:
        """Is row C{name} measured in this run (a section's reference always is)?"""
        return reference or not self.rows or any(part in name for part in self.rows)

    def progress(self, text: str) -> None:
        stamp = time.strftime("%H:%M:%S")
        print(f"[{stamp}] {text}", file=sys.stderr, flush=True)

    def vsftpd(self) -> Vsftpd | str:
        """vsftpd serving small.bin (1 MiB) and big.bin (--size), started once; or the
        reason it cannot run ("not installed: vsftpd", "needs root")."""
        if self._vsftpd is not None:
            return self._vsftpd
        if self._vsftpdProblem is not None:
            return self._vsftpdProblem
        if findTool("vsftpd") is None:
            self._vsftpdProblem = "not installed: vsftpd"
            return self._vsftpdProblem
        if os.geteuid() != 0:
            self._vsftpdProblem = "needs root (vsftpd chroots to its anonymous root)"
            return self._vsftpdProblem
        root = self.logDir / "ftp-root"
        root.mkdir(exist_ok=True)
        self.progress(f"writing {BIG_FILE} ({self.size:,} bytes) for vsftpd")
        makeFile(root / SMALL_FILE, SMALL_SIZE, seed=1)
        makeFile(root / BIG_FILE, self.size, seed=2)
        try:
            server = Vsftpd(
                root,
                extra={
                    # The fixture logs every command (a debugging aid): off here.
                    "log_ftp_protocol": "NO",
                    "max_clients": "2000",
                    "max_per_ip": "2000",
                },
                lifetime=LIFETIME,
            )
            self.runStack.enter_context(server)
        except PeerMissing as e:
            self._vsftpdProblem = f"not available: {e}"
            return self._vsftpdProblem
        self._vsftpd = server
        return server

    def vsftpdTLS(self) -> tuple[Vsftpd, TlsFiles] | str:
        """A second vsftpd on the same files, forcing FTPS (session reuse required),
        with a throwaway CA; or the reason it cannot run."""
        if self._vsftpdTLS is not None:
            return self._vsftpdTLS
        plain = self.vsftpd()
        if isinstance(plain, str):
            return plain
        tls = makeTlsFiles(self.logDir / "tls")
        try:
            server = Vsftpd(
                plain.root,
                tls=tls,
                extra={"log_ftp_protocol": "NO", "max_clients": "2000", "max_per_ip": "2000"},
                lifetime=LIFETIME,
            )
            self.runStack.enter_context(server)
        except PeerMissing as e:
            return f"not available: {e}"
        self._vsftpdTLS = (server, tls)
        return self._vsftpdTLS

    def gateway(
        self,
        filterName: str,
        upstream: tuple[str, int],
        fastPath: bool,
        extra: tuple[str, ...] = (),
    ) -> Gateway:
        """`twistd -n fwx FILTER` on a free loopback port, stopped with the context."""
        return self.stack.enter_context(startGateway(filterName, upstream, fastPath, extra))


@contextmanager
def startGateway(
    filterName: str, upstream: tuple[str, int], fastPath: bool, extra: tuple[str, ...] = ()
) -> Iterator[Gateway]:
    """The project's gateway, run exactly as the interop tests run it (tests.peers)."""
    port = freePort(LOOPBACK)
    argv = [
        filterName,
        "--listen",
        f"tcp:{port}:interface={LOOPBACK}",
        "--upstream",
        f"{upstream[0]}:{upstream[1]}",
    ]
    if not fastPath:
        argv.append("--no-fast-path")
    argv += extra
    with runGateway(argv, (LOOPBACK, port), timeout=30.0, lifetime=LIFETIME) as gateway:
        if "--workers" in extra:
            waitForWorkers(gateway, int(extra[extra.index("--workers") + 1]))
        yield gateway


def waitForWorkers(gateway: Gateway, count: int, timeout: float = 30.0) -> None:
    """Until each of the gateway's C{count - 1} workers has logged that it listens (the
    gateway's own process listens before the others start)."""
    deadline = time.monotonic() + timeout
    while True:
        log = gateway.log()
        if all(f"#info worker {index}] listener " in log for index in range(1, count)):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{count - 1} workers did not listen within {timeout} s:\n{log}")
        time.sleep(0.1)


T = TypeVar("T")


def rotated(rows: list[T], runIndex: int) -> list[T]:
    """The rows in the order of run C{runIndex}: each run starts one row later, so no
    row always follows the same one (a rate row inherits the TIME_WAIT sockets of the
    row before it, and the direct row leaves the most)."""
    shift = runIndex % len(rows) if rows else 0
    return rows[shift:] + rows[:shift]


def gatewayPid(gateway: Gateway) -> int:
    assert gateway.process is not None
    return gateway.process.pid


__all__ = [
    "BIG_FILE",
    "WORKERS",
    "Context",
    "LOOPBACK",
    "SMALL_FILE",
    "SMALL_SIZE",
    "freePort",
    "gatewayPid",
    "rotated",
    "startGateway",
    "waitForWorkers",
    "waitListening",
]
