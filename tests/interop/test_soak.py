"""Soak: 200 concurrent ftplib clients download and upload through the gateway to vsftpd
for a bounded time; every byte is checked and the gateway's memory must stay flat.

Each client is a thread with its own sessions (one to six transfers each, then QUIT and
a new session), alternating RETR of a file vsftpd serves and STOR of bytes of its own.
Half the clients use PASV, a quarter EPSV, a quarter PORT.  Downloads are checked by
sha256 against the served file; uploads by reading the file vsftpd stored back from its
upload directory (then removed).  Any exception, short read or mismatch is an error,
and none is allowed.

Memory: the gateway's VmRSS (/proc/PID/status) is sampled four times a second.  The
warm-up ends once a quarter of the soak time has passed *and* every client has
completed at least one download and one upload (so all 200 sessions, their buffers and
the allocator's arenas exist).  The post-warm-up value is the median of the samples of
the two seconds after that; the end value is the median of the last two seconds before
the clients are told to stop.  The end must be within 10% of the post-warm-up value.

FWX_SOAK_SECONDS sets the soak time (default 20 s); the whole test is bounded by it
plus fixed allowances for the warm-up and the clients' last transfers.
"""

from __future__ import annotations

import dataclasses
import ftplib
import hashlib
import os
import random
import re
import resource
import shutil
import statistics
import tempfile
import threading
import time
import traceback
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.interop.support import (
    EXTERNALS,
    Payload,
    RootFactory,
    ftpGateway,
    gatewayLog,
)
from tests.peers import Gateway, Vsftpd, makeFile

pytestmark = pytest.mark.peers

SOAK_SECONDS = float(os.environ.get("FWX_SOAK_SECONDS", "20"))
CLIENTS = 200
#: Data-channel mode of client i: MODES[i % 4].
MODES = ("PASV", "EPSV", "PASV", "PORT")
MIN_SIZE = 256 * 1024
MAX_SIZE = 1024 * 1024
#: Socket timeout of every client operation, in seconds.
CLIENT_TIMEOUT = 60.0
#: Seconds the clients get to start, and the warm-up may take beyond its quarter.
RAMP_SECONDS = 3.0
WARMUP_LIMIT = 90.0
#: The end RSS must be within this fraction of the post-warm-up RSS.
RSS_TOLERANCE = 0.10
RSS_WINDOW = 2.0
SAMPLE_EVERY = 0.25
#: File descriptors the test process (and so the gateway and vsftpd) may open.
WANTED_FILES = 16384


@dataclasses.dataclass
class Tally:
    """What the clients did, updated under a lock."""

    downloads: int = 0
    uploads: int = 0
    sessions: int = 0
    bytes: int = 0
    errors: list[str] = dataclasses.field(default_factory=list)
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)

    def add(self, kind: str, size: int) -> None:
        with self.lock:
            if kind == "download":
                self.downloads += 1
            else:
                self.uploads += 1
            self.bytes += size

    def error(self, text: str) -> None:
        with self.lock:
            self.errors.append(text)


class RSSSampler(threading.Thread):
    """Reads a process's VmRSS (KiB) every SAMPLE_EVERY seconds: (monotonic time, KiB)."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.path = Path(f"/proc/{pid}/status")
        self.samples: list[tuple[float, int]] = []
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            try:
                status = self.path.read_text()
            except OSError:  # the process is gone: the test says so
                return
            match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
            if match is not None:
                self.samples.append((time.monotonic(), int(match.group(1))))
            self._done.wait(SAMPLE_EVERY)

    def stop(self) -> None:
        self._done.set()
        self.join(5)

    def medianBetween(self, start: float, end: float) -> int | None:
        """The median RSS of the samples taken from C{start} to C{end}, if any."""
        window = [kib for when, kib in self.samples if start <= when <= end]
        return int(statistics.median(window)) if window else None


class EpsvFTP(ftplib.FTP):
    """ftplib speaks EPSV only over IPv6; this client uses it over IPv4 too."""

    def makepasv(self) -> tuple[str, int]:
        assert self.sock is not None
        return ftplib.parse229(self.sendcmd("EPSV"), self.sock.getpeername())


class Client(threading.Thread):
    """One soak client: sessions of one to six transfers until told to stop."""

    def __init__(
        self,
        index: int,
        gateway: Gateway,
        served: list[Payload],
        uploads: Path,
        tally: Tally,
        stop: threading.Event,
    ) -> None:
        super().__init__(name=f"soak-client-{index}", daemon=True)
        self.index = index
        self.mode = MODES[index % len(MODES)]
        self.gateway = gateway
        self.served = served
        self.uploads = uploads
        self.tally = tally
        self.stopping = stop
        self.random = random.Random(index)
        size = self.random.randint(MIN_SIZE, MAX_SIZE)
        #: This client's own upload: bytes no other client sends.
        self.content = self.random.randbytes(size)
        self.digest = hashlib.sha256(self.content).hexdigest()
        self.downloaded = self.uploaded = 0
        self.transfers = 0

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                self.session()
            except Exception as e:  # every failure counts, then the client goes on
                self.tally.error(
                    f"client {self.index} ({self.mode}): {e!r}\n{traceback.format_exc(limit=4)}"
                )
                self.stopping.wait(0.5)

    def session(self) -> None:
        ftp = (EpsvFTP if self.mode == "EPSV" else ftplib.FTP)(timeout=CLIENT_TIMEOUT)
        try:
            ftp.connect(*self.gateway.address)
            ftp.login("anonymous", f"soak{self.index}@example.org")
            ftp.set_pasv(self.mode != "PORT")
            ftp.voidcmd("TYPE I")
            with self.tally.lock:
                self.tally.sessions += 1
            for _ in range(self.random.randint(1, 6)):
                if self.stopping.is_set():
                    break
                if self.transfers % 2 == 0:
                    self.download(ftp)
                else:
                    self.upload(ftp)
                self.transfers += 1
            ftp.quit()
        finally:
            ftp.close()

    def download(self, ftp: ftplib.FTP) -> None:
        payload = self.random.choice(self.served)
        digest = hashlib.sha256()
        size = 0

        def received(block: bytes) -> None:
            nonlocal size
            digest.update(block)
            size += len(block)

        reply = ftp.retrbinary(f"RETR {payload.name}", received, blocksize=1 << 16)
        if not reply.startswith("226") or (size, digest.hexdigest()) != (
            payload.size,
            payload.sha256,
        ):
            raise AssertionError(
                f"RETR {payload.name}: {reply!r}, {size} bytes of {payload.size}, "
                f"sha256 {'ok' if digest.hexdigest() == payload.sha256 else 'MISMATCH'}"
            )
        self.downloaded += 1
        self.tally.add("download", size)

    def upload(self, ftp: ftplib.FTP) -> None:
        name = f"c{self.index}-{self.transfers}.bin"
        reply = ftp.storbinary(f"STOR upload/{name}", _Reader(self.content), blocksize=1 << 16)
        stored = self.uploads / name
        try:
            data = stored.read_bytes()
        finally:
            stored.unlink(missing_ok=True)
        if not reply.startswith("226") or hashlib.sha256(data).hexdigest() != self.digest:
            raise AssertionError(
                f"STOR {name}: {reply!r}, vsftpd stored {len(data)} bytes of "
                f"{len(self.content)}, sha256 "
                f"{'ok' if hashlib.sha256(data).hexdigest() == self.digest else 'MISMATCH'}"
            )
        self.uploaded += 1
        self.tally.add("upload", len(data))


class _Reader:
    """A file-like view of bytes for storbinary."""

    def __init__(self, data: bytes) -> None:
        self._view = memoryview(data)
        self._offset = 0

    def read(self, size: int) -> bytes:
        chunk = self._view[self._offset : self._offset + size]
        self._offset += len(chunk)
        return bytes(chunk)


@pytest.fixture
def moreFiles() -> Iterator[None]:
    """Raise this process's open-file limit (children inherit it): 200 sessions with
    data channels need a few thousand descriptors in the gateway and in the test."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = WANTED_FILES if hard == resource.RLIM_INFINITY else min(hard, WANTED_FILES)
    if wanted < 4096:
        pytest.fail(f"the open-file hard limit {hard} is too low for {CLIENTS} clients")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, wanted), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.fixture
def served() -> Iterator[list[Payload]]:
    """Eight files from 256 KiB to 1 MiB (odd sizes), made for this test."""
    directory = Path(tempfile.mkdtemp(prefix="fwx-soak-payloads-"))
    directory.chmod(0o755)
    sizes = random.Random(7).sample(range(MIN_SIZE, MAX_SIZE + 1), 8)
    try:
        yield [
            Payload(
                directory / f"soak-{i}.bin",
                size,
                makeFile(directory / f"soak-{i}.bin", size, 100 + i),
            )
            for i, size in enumerate(sizes)
        ]
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def everyClientWarm(clients: list[Client], deadline: float) -> bool:
    """Wait until every client has downloaded and uploaded once, or the deadline."""
    while time.monotonic() < deadline:
        if all(c.downloaded and c.uploaded for c in clients):
            return True
        time.sleep(0.1)
    return False


def _mib(kib: int | None) -> str:
    return "?" if kib is None else f"{kib / 1024:.1f} MiB"


def test_soak(
    moreFiles: None,
    served: list[Payload],
    serverRoots: RootFactory,
    capsys: pytest.CaptureFixture[str],
) -> None:
    root = serverRoots("vsftpd-soak", served)
    limits = {"max_clients": "0", "max_per_ip": "0"}  # 0: no limit (defaults 2000 and 50)
    lifetime = SOAK_SECONDS + WARMUP_LIMIT + 300
    with Vsftpd(root, writable=True, extra=limits, lifetime=lifetime) as server:
        externals = [arg for ip in EXTERNALS for arg in ("--external-address", ip)]
        with ftpGateway(["--upstream", f"127.0.0.1:{server.port}", *externals]) as gateway:
            assert gateway.process is not None
            pid = gateway.process.pid
            tally = Tally()
            stop = threading.Event()
            clients = [
                Client(i, gateway, served, server.root / "upload", tally, stop)
                for i in range(CLIENTS)
            ]
            sampler = RSSSampler(pid)
            sampler.start()
            began = time.monotonic()
            try:
                for client in clients:
                    client.start()
                    time.sleep(RAMP_SECONDS / CLIENTS)
                # Warm-up: a quarter of the soak, and every client through a download
                # and an upload.
                time.sleep(max(0.0, began + SOAK_SECONDS / 4 - time.monotonic()))
                warmed = everyClientWarm(clients, time.monotonic() + WARMUP_LIMIT)
                warmEnd = time.monotonic()
                # The measured phase: the rest of the soak, never less than half of it.
                time.sleep(max(began + SOAK_SECONDS - warmEnd, SOAK_SECONDS / 2))
                loadEnd = time.monotonic()
            finally:
                stop.set()
                joinBy = time.monotonic() + CLIENT_TIMEOUT + 10
                for client in clients:
                    client.join(max(0.0, joinBy - time.monotonic()))
                sampler.stop()
            stuck = [client.name for client in clients if client.is_alive()]
            alive = gateway.returncode is None
            log = gatewayLog(gateway)

    rssWarm = sampler.medianBetween(warmEnd, warmEnd + RSS_WINDOW)
    rssEnd = sampler.medianBetween(loadEnd - RSS_WINDOW, loadEnd)
    change = (rssEnd - rssWarm) / rssWarm if rssWarm and rssEnd else None
    peak = max((kib for _, kib in sampler.samples), default=None)
    summary = (
        f"soak: {CLIENTS} clients for {loadEnd - began:.1f} s (warm-up {warmEnd - began:.1f} s): "
        f"{tally.downloads + tally.uploads} transfers ({tally.downloads} RETR, "
        f"{tally.uploads} STOR) in {tally.sessions} sessions, "
        f"{tally.bytes / 2**20:.0f} MiB, {len(tally.errors)} errors; gateway RSS "
        f"{_mib(rssWarm)} after warm-up, {_mib(rssEnd)} at the end "
        f"({'?' if change is None else f'{change:+.1%}'}), peak {_mib(peak)}"
    )
    with capsys.disabled():
        print(f"\n{summary}")
    assert not tally.errors, f"{summary}\nfirst errors:\n" + "\n".join(tally.errors[:5])
    assert alive, f"the gateway died during the soak: {summary}\n{log[-5000:]}"
    assert not stuck, f"clients still running after stop: {stuck[:5]}"
    assert warmed, f"not every client finished a download and an upload: {summary}"
    assert "Traceback" not in log and "Unhandled" not in log, log[-5000:]
    assert change is not None and abs(change) <= RSS_TOLERANCE, summary
