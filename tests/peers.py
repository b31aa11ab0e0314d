"""Real peers for interop tests: FTP servers and clients from Debian packages, and the gateway.

Everything here runs on loopback only and starts processes of its own, each bounded in
time and always stopped. A missing peer skips the test, or fails it when the environment
has ``CI=true`` (CI installs every peer with ``.ci/install-peers``).
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import datetime
import grp
import hashlib
import ipaddress
import os
import pwd
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import NoReturn, Self

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

PROJECT_ROOT = Path(__file__).resolve().parent.parent
PEERS_DIR = Path("/opt/fwx-peers")
INSTALL_HINT = "install the peers with: sudo .ci/install-peers"
DEFAULT_LIFETIME = 900.0
"""Seconds after which a started server or gateway is killed even if nobody stops it."""

_CHUNK = 1 << 20


# -- missing peers -------------------------------------------------------------------------


def inCI() -> bool:
    """True when the environment says CI=true: missing peers are then failures."""
    return os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}


def skipOrFail(reason: str) -> NoReturn:
    """Skip the current test because of `reason`, or fail it under CI=true."""
    if inCI():
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason, allow_module_level=True)


def requirePeer(name: str) -> str:
    """Absolute path of the executable `name` (PATH, /usr/sbin, /opt/fwx-peers/*/usr/sbin)."""
    found = shutil.which(name)
    if found:
        return os.path.abspath(found)
    candidates = [Path("/usr/sbin") / name, Path("/sbin") / name]
    candidates += sorted(PEERS_DIR.glob(f"*/usr/sbin/{name}"))
    candidates += sorted(PEERS_DIR.glob(f"*/usr/bin/{name}"))
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    skipOrFail(f"{name} not found on PATH, in /usr/sbin or {PEERS_DIR}/*/usr/sbin; {INSTALL_HINT}")


def requireRoot(what: str) -> None:
    """Skip (or fail under CI) unless running as root, which `what` needs."""
    if os.geteuid() != 0:
        skipOrFail(f"{what} needs root")


def hasIPv6Loopback() -> bool:
    """True if a TCP socket can bind ::1."""
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


def requireIPv6Loopback() -> None:
    """Skip (or fail under CI) when ::1 is not usable."""
    if not hasIPv6Loopback():
        skipOrFail("IPv6 loopback ::1 is not available")


def _ftpAccount() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam("ftp")
    except KeyError:
        skipOrFail(f"no 'ftp' user (vsftpd's package creates it); {INSTALL_HINT}")


# -- ports -----------------------------------------------------------------------------------


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def hostForUrl(host: str) -> str:
    """`host` as it goes in a URL: IPv6 addresses in brackets."""
    return f"[{host}]" if ":" in host else host


def freePort(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on `host` a moment ago (bind port 0, close, return)."""
    with socket.socket(_family(host), socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
    return port


def freePortRange(count: int = 10, host: str = "127.0.0.1") -> tuple[int, int]:
    """`count` consecutive ports (lo, hi) free on `host`, below the ephemeral port range."""
    low = 20000
    try:
        ephemeralLow = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeralLow = 32768
    high = max(low + count, ephemeralLow) - count
    for _ in range(100):
        first = random.randrange(low, high)
        probes: list[socket.socket] = []
        try:
            for port in range(first, first + count):
                probe = socket.socket(_family(host), socket.SOCK_STREAM)
                probes.append(probe)
                probe.bind((host, port))
        except OSError:
            continue
        finally:
            for probe in probes:
                probe.close()
        return first, first + count - 1
    raise RuntimeError(f"no {count} consecutive free ports on {host}")


def waitForPort(
    host: str, port: int, timeout: float = 10.0, process: subprocess.Popen[bytes] | None = None
) -> None:
    """Wait until a TCP connection to host:port succeeds; TimeoutError after `timeout` s.

    With `process`, give up as soon as it has exited (RuntimeError).
    """
    deadline = time.monotonic() + timeout
    while True:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process {process.pid} exited with {process.returncode}")
        try:
            with socket.create_connection((host, port), timeout=1.0):
                return
        except OSError:
            if time.monotonic() >= deadline:
                raise TimeoutError(f"nothing accepts on {host}:{port} after {timeout} s") from None
            time.sleep(0.05)


def isListening(host: str, port: int) -> bool:
    """True if a TCP socket listens on host:port (or on the wildcard), read from /proc."""
    want = ipaddress.ip_address(host)
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 4 or fields[3] != "0A":
                continue
            hexAddress, hexPort = fields[1].split(":")
            if int(hexPort, 16) != port:
                continue
            raw = b"".join(
                int(hexAddress[i : i + 8], 16).to_bytes(4, sys.byteorder)
                for i in range(0, len(hexAddress), 8)
            )
            address = ipaddress.ip_address(raw)
            if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
                address = address.ipv4_mapped
            if address == want or address.is_unspecified:
                return True
    return False


def _waitForListener(
    host: str, port: int, timeout: float, process: subprocess.Popen[bytes]
) -> None:
    if not Path("/proc/net/tcp").exists():
        waitForPort(host, port, timeout, process)
        return
    deadline = time.monotonic() + timeout
    while not isListening(host, port):
        if process.poll() is not None:
            raise RuntimeError(f"process {process.pid} exited with {process.returncode}")
        if time.monotonic() >= deadline:
            raise TimeoutError(f"nothing listens on {host}:{port} after {timeout} s")
        time.sleep(0.05)


# -- files -----------------------------------------------------------------------------------


def makeFile(path: str | os.PathLike[str], size: int, seed: int | None = None) -> str:
    """Write exactly `size` pseudo-random bytes to `path`, mode 0644; return their sha256 hex.

    The bytes are an AES-CTR key stream: neither compressible nor periodic, and fast
    (well under a second for 50 MiB). A `seed` makes the content reproducible.
    """
    key = os.urandom(32) if seed is None else hashlib.sha256(b"fwx%d" % seed).digest()
    stream = Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor()
    zeros = bytes(_CHUNK)
    digest = hashlib.sha256()
    remaining = size
    with open(path, "wb") as output:
        while remaining > 0:
            chunk = stream.update(zeros if remaining >= _CHUNK else zeros[:remaining])
            output.write(chunk)
            digest.update(chunk)
            remaining -= len(chunk)
    os.chmod(path, 0o644)
    return digest.hexdigest()


def sha256File(path: str | os.PathLike[str]) -> str:
    """sha256 hex digest of the file at `path`."""
    with open(path, "rb") as source:
        return hashlib.file_digest(source, "sha256").hexdigest()


# -- TLS ---------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TlsFiles:
    """PEM files of a throwaway CA and two server certificates signed by it."""

    directory: Path
    caCert: Path
    """The CA certificate: what a verifying client trusts."""
    cert: Path
    """Server certificate whose subjectAltName lists `hosts` (IP and DNS entries)."""
    key: Path
    combined: Path
    """`key` followed by `cert`, for servers that want both in one file."""
    wrongCert: Path
    """Server certificate for `wrongName` only: a verifying client must reject it."""
    wrongKey: Path
    hosts: tuple[str, ...]
    wrongName: str


def _newKey() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _writeKey(path: Path, key: rsa.RSAPrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _sanEntry(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _leaf(
    caKey: rsa.RSAPrivateKey, caName: x509.Name, names: Sequence[str], key: rsa.RSAPrivateKey
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(caName)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName([_sanEntry(n) for n in names]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=True,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(caKey.public_key()), critical=False
        )
        .sign(caKey, hashes.SHA256())
    )


def makeTlsFiles(
    directory: str | os.PathLike[str],
    hosts: Sequence[str] = ("127.0.0.1", "localhost"),
    wrongName: str = "wrong.invalid",
) -> TlsFiles:
    """Generate a CA, a certificate for `hosts` and one for `wrongName` into `directory`."""
    where = Path(directory)
    where.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    caKey = _newKey()
    caName = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fwxtwisted throwaway test CA")])
    caCert = (
        x509.CertificateBuilder()
        .subject_name(caName)
        .issuer_name(caName)
        .public_key(caKey.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(caKey.public_key()), critical=False
        )
        .sign(caKey, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    files = TlsFiles(
        directory=where,
        caCert=where / "ca.pem",
        cert=where / "server.pem",
        key=where / "server.key",
        combined=where / "server-combined.pem",
        wrongCert=where / "wrong.pem",
        wrongKey=where / "wrong.key",
        hosts=tuple(hosts),
        wrongName=wrongName,
    )
    files.caCert.write_bytes(caCert.public_bytes(pem))
    serverKey = _newKey()
    _writeKey(files.key, serverKey)
    files.cert.write_bytes(_leaf(caKey, caName, list(hosts), serverKey).public_bytes(pem))
    files.combined.write_bytes(files.key.read_bytes() + files.cert.read_bytes())
    files.combined.chmod(0o600)
    wrongKey = _newKey()
    _writeKey(files.wrongKey, wrongKey)
    files.wrongCert.write_bytes(_leaf(caKey, caName, [wrongName], wrongKey).public_bytes(pem))
    return files


# -- processes -------------------------------------------------------------------------------

_live: set[_Managed] = set()
_liveLock = threading.Lock()


def _stopAll() -> None:
    with _liveLock:
        running = list(_live)
    for managed in running:
        managed.stop()


atexit.register(_stopAll)


def _deathSignalPrefix() -> list[str]:
    # Kill the child if the thread that started it dies (e.g. pytest killed with SIGKILL).
    # setpriv (util-linux) sets it and then execs the command: the pid stays the same.
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "KILL", "--"] if setpriv else []


def _clientEnvironment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env.update(extra or {})
    return env


def _readText(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


class _Managed:
    """One process of ours: started once, stopped once (SIGTERM, wait, SIGKILL)."""

    name = "process"

    def __init__(self, lifetime: float) -> None:
        self.lifetime = lifetime
        self.process: subprocess.Popen[bytes] | None = None
        self.logDir: Path | None = None
        self._finalLog: str | None = None
        self._lock = threading.RLock()
        self._timer: threading.Timer | None = None

    def _makeLogDir(self) -> Path:
        self.logDir = Path(tempfile.mkdtemp(prefix=f"fwx-{self.name}-"))
        self.logDir.chmod(0o755)
        return self.logDir

    def _spawn(
        self,
        argv: Sequence[str],
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        stdinToLog: bool = False,
    ) -> subprocess.Popen[bytes]:
        """Start `argv`, stdout and stderr (and stdin if `stdinToLog`) to output.txt."""
        assert self.logDir is not None
        with open(self.logDir / "output.txt", "ab") as output:
            process = subprocess.Popen(
                [*_deathSignalPrefix(), *argv],
                stdin=output if stdinToLog else subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                env=None if env is None else dict(env),
                cwd=cwd,
                start_new_session=True,
            )
        self.process = process
        with _liveLock:
            _live.add(self)
        if self._timer is not None:
            self._timer.cancel()
        self._timer = threading.Timer(self.lifetime, self._terminate)
        self._timer.daemon = True
        self._timer.start()
        return process

    def _terminate(self, grace: float = 10.0) -> None:
        """Stop the process we started, by its pid only."""
        with self._lock:
            process = self.process
            if process is None or process.poll() is not None:
                return
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(grace)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)

    def _logFiles(self) -> list[Path]:
        return []

    def log(self) -> str:
        """Text of the logs kept so far (still readable after stop)."""
        if self._finalLog is not None:
            return self._finalLog
        if self.logDir is None:
            return ""
        parts = [_readText(path) for path in [*self._logFiles(), self.logDir / "output.txt"]]
        return "".join(part if part.endswith("\n") else part + "\n" for part in parts if part)

    def _cleanup(self) -> None:
        pass

    def stop(self) -> None:
        """Stop the process (idempotent), keep its log text, remove its temp dir."""
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
            self._terminate()
            self._cleanup()
            if self.logDir is not None and self._finalLog is None:
                self._finalLog = self.log()
                if not os.environ.get("FWX_KEEP_PEER_LOGS"):
                    shutil.rmtree(self.logDir, ignore_errors=True)
        with _liveLock:
            _live.discard(self)

    @property
    def returncode(self) -> int | None:
        """Exit status once the process has ended, else None."""
        return None if self.process is None else self.process.poll()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        excType: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


# -- FTP servers -----------------------------------------------------------------------------


class _EarlyExit(Exception):
    pass


def _readGreeting(host: str, port: int, timeout: float, process: subprocess.Popen[bytes]) -> str:
    """Connect until the server sends its final 220 line; send QUIT; return the greeting."""
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise _EarlyExit()
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"no FTP greeting on {host}:{port} after {timeout} s")
        try:
            connection = socket.create_connection((host, port), timeout=min(remaining, 5.0))
        except OSError:
            time.sleep(0.05)
            continue
        with connection:
            lines: list[str] = []
            with contextlib.suppress(OSError), connection.makefile("rb") as reader:
                while True:
                    raw = reader.readline(8192)
                    if not raw:
                        break
                    line = raw.decode("latin-1").rstrip("\r\n")
                    lines.append(line)
                    if re.match(r"\d{3} ", line):
                        break
            greeting = "\n".join(lines)
            if lines and lines[-1].startswith("220 "):
                with contextlib.suppress(OSError):
                    connection.sendall(b"QUIT\r\n")
                if process.poll() is not None:  # someone else's server on that port
                    raise _EarlyExit()
                return greeting
            if process.poll() is not None:
                raise _EarlyExit()
            if lines:
                raise RuntimeError(f"unexpected FTP greeting on {host}:{port}: {greeting!r}")
        time.sleep(0.05)


class FtpServer(_Managed):
    """An FTP server process of ours on loopback: a context manager.

    `root` is served read-only to anonymous users; it is made mode 0755 (the servers
    serve only world-readable files and switch to an unprivileged user).
    """

    name = "ftp"
    _stdinToLog = False

    def __init__(
        self,
        root: str | os.PathLike[str],
        host: str = "127.0.0.1",
        port: int | None = None,
        pasvPorts: tuple[int, int] | None = None,
        *,
        startTimeout: float = 15.0,
        lifetime: float = DEFAULT_LIFETIME,
    ) -> None:
        super().__init__(lifetime)
        self.root = Path(root).resolve()
        self.host = host
        self.port = port or 0
        self.pasvPorts = pasvPorts
        self.startTimeout = startTimeout
        self.greeting = ""
        self.startupSeconds = 0.0
        self._autoPort = port is None
        self._started = False

    # subclasses
    def _prepare(self) -> None:
        raise NotImplementedError

    def _command(self) -> list[str]:
        raise NotImplementedError

    def _earlyExitReason(self, log: str) -> str | None:
        """A reason to skip (not fail) when the server cannot run on this machine."""
        return None

    @property
    def address(self) -> tuple[str, int]:
        """(host, port) of the control connection."""
        return self.host, self.port

    def url(self, path: str = "") -> str:
        """ftp:// URL of `path` on this server."""
        return f"ftp://{hostForUrl(self.host)}:{self.port}/{path.lstrip('/')}"

    def start(self) -> Self:
        """Start the server and wait for its 220 greeting."""
        if self._started:
            raise RuntimeError(f"{self.name} already started")
        self._started = True
        if not self.root.is_dir():
            raise FileNotFoundError(f"FTP root {self.root} is not a directory")
        self.root.chmod(0o755)
        self._makeLogDir()
        try:
            self._startWithRetries(attempts=3 if self._autoPort else 1)
        except BaseException:
            self.stop()
            raise
        return self

    def _startWithRetries(self, attempts: int) -> None:
        for attempt in range(attempts):
            if self._autoPort:
                self.port = freePort(self.host)
            self._prepare()
            began = time.monotonic()
            process = self._spawn(self._command(), stdinToLog=self._stdinToLog)
            try:
                self.greeting = _readGreeting(self.host, self.port, self.startTimeout, process)
            except _EarlyExit:
                log = self.log()
                skipReason = self._earlyExitReason(log)
                if skipReason:
                    skipOrFail(skipReason)
                inUse = re.search(r"(?i)address already in use|could not bind|bind\(\)", log)
                if inUse and attempt + 1 < attempts:
                    continue
                raise RuntimeError(
                    f"{self.name} exited with {process.returncode} before its greeting:\n{log}"
                ) from None
            except TimeoutError as error:
                raise TimeoutError(f"{error}\n{self.name} log:\n{self.log()}") from None
            self.startupSeconds = time.monotonic() - began
            return

    def __enter__(self) -> Self:
        return self.start()


class Vsftpd(FtpServer):
    """vsftpd 3.0.3, standalone in the foreground, anonymous only.

    Run as root here it works with its seccomp sandbox on (the default): neither
    `seccomp_sandbox=NO` nor `run_as_launching_user=YES` is needed on Debian 12, kernel
    6.x. Uploads, listings, IPv6 and TLS were checked in that mode. Pass
    `extra={"seccomp_sandbox": "NO"}` where a container's seccomp policy gets in the way.

    Its log (`vsftpd_log_file` with `log_ftp_protocol=YES`) records every command and
    reply, so a test can see whether the server got PASV/EPSV or PORT/EPRT.
    With `writable`, `root/upload/` is created, owned by the `ftp` user, for STOR.
    """

    name = "vsftpd"
    # vsftpd reports fatal errors ("500 OOPS: ...") on fd 0, its would-be control
    # connection: stdin is the output file, so they land in log().
    _stdinToLog = True

    def __init__(
        self,
        root: str | os.PathLike[str],
        host: str | None = None,
        port: int | None = None,
        pasvPorts: tuple[int, int] | None = None,
        writable: bool = False,
        ipv6: bool = False,
        tls: TlsFiles | None = None,
        extra: Mapping[str, str] | None = None,
        *,
        startTimeout: float = 15.0,
        lifetime: float = DEFAULT_LIFETIME,
    ) -> None:
        if host is None:
            host = "::1" if ipv6 else "127.0.0.1"
        super().__init__(root, host, port, pasvPorts, startTimeout=startTimeout, lifetime=lifetime)
        self.ipv6 = ":" in host
        self.writable = writable
        self.tls = tls
        self.extra = dict(extra or {})
        self.binary = requirePeer("vsftpd")
        requireRoot("vsftpd (chroot to the anonymous root)")
        if self.ipv6:
            requireIPv6Loopback()
        self._account = _ftpAccount()

    def settings(self) -> dict[str, str]:
        """The configuration written for the next start (extra applied last)."""
        assert self.logDir is not None
        settings = {
            "listen": "NO" if self.ipv6 else "YES",
            "listen_ipv6": "YES" if self.ipv6 else "NO",
            "listen_port": str(self.port),
            "background": "NO",
            "anonymous_enable": "YES",
            "no_anon_password": "YES",
            "anon_root": str(self.root),
            "local_enable": "NO",
            "secure_chroot_dir": str(self.logDir / "empty"),
            "tcp_wrappers": "NO",
            "xferlog_enable": "YES",
            "xferlog_std_format": "NO",
            "vsftpd_log_file": str(self.logDir / "vsftpd.log"),
            "log_ftp_protocol": "YES",
            "syslog_enable": "NO",
            "dual_log_enable": "NO",
            "pasv_enable": "YES",
            "port_enable": "YES",
            "pasv_promiscuous": "NO",
            "port_promiscuous": "NO",
            "connect_from_port_20": "NO",
            "dirmessage_enable": "NO",
            "idle_session_timeout": "120",
            "data_connection_timeout": "120",
            "write_enable": "NO",
            "anon_upload_enable": "NO",
            "anon_mkdir_write_enable": "NO",
            "anon_other_write_enable": "NO",
        }
        settings["listen_address6" if self.ipv6 else "listen_address"] = self.host
        if self.pasvPorts is not None:
            settings["pasv_min_port"], settings["pasv_max_port"] = map(str, self.pasvPorts)
        if self.writable:
            settings.update(write_enable="YES", anon_upload_enable="YES", anon_umask="022")
        if self.tls is not None:
            settings.update(
                ssl_enable="YES",
                allow_anon_ssl="YES",
                force_anon_logins_ssl="YES",
                force_anon_data_ssl="YES",
                require_ssl_reuse="YES",
                rsa_cert_file=str(self.tls.cert),
                rsa_private_key_file=str(self.tls.key),
            )
        settings.update(self.extra)
        return settings

    def _prepare(self) -> None:
        assert self.logDir is not None
        empty = self.logDir / "empty"
        empty.mkdir(exist_ok=True)
        empty.chmod(0o755)
        if self.writable:
            upload = self.root / "upload"
            upload.mkdir(exist_ok=True)
            os.chown(upload, self._account.pw_uid, self._account.pw_gid)
            upload.chmod(0o755)
        lines = [f"{key}={value}" for key, value in self.settings().items()]
        (self.logDir / "vsftpd.conf").write_text("\n".join(lines) + "\n")

    def _command(self) -> list[str]:
        assert self.logDir is not None
        return [self.binary, str(self.logDir / "vsftpd.conf")]

    def _logFiles(self) -> list[Path]:
        return [] if self.logDir is None else [self.logDir / "vsftpd.log"]


_PURE_FTPD_NAMESPACE = r"""
set -e
root=$1 home=$2 dir=$3
shift 3
fail() { echo "fwx-peers: $*" >&2; exit 97; }
mount --bind "$root" "$home" || fail "cannot bind-mount $root on $home (needs CAP_SYS_ADMIN)"
mkdir "$dir/hostdev"
mount --bind /dev "$dir/hostdev" || fail "cannot bind-mount /dev"
mount -t tmpfs -o mode=755,size=64k fwxdev /dev || fail "cannot mount a tmpfs on /dev"
for node in null zero full random urandom tty; do
    if [ -e "$dir/hostdev/$node" ]; then
        touch "/dev/$node"
        mount --bind "$dir/hostdev/$node" "/dev/$node"
    fi
done
umount -l "$dir/hostdev"
ln -s "$dir/syslog.sock" /dev/log
exec "$@"
"""


class PureFtpd(FtpServer):
    """pure-ftpd 1.0.50 unpacked in /opt/fwx-peers, anonymous only, in the foreground.

    pure-ftpd has no option for the anonymous root: it is the `ftp` user's home. It runs
    in a private mount namespace (`unshare --mount`, root needed) where `root` is
    bind-mounted over that home, so several servers can run at once and nothing shows
    outside. pure-ftpd logs only to syslog: in the same namespace /dev is a small tmpfs
    whose /dev/log is a socket of ours, so `log()` holds its verbose (-d -d) log of
    every command and reply. Foreign-address data connections are refused (its default,
    no -w/-W): PORT naming another IP gets 500, a passive connection from another IP is
    dropped.
    """

    name = "pure-ftpd"

    def __init__(
        self,
        root: str | os.PathLike[str],
        host: str = "127.0.0.1",
        port: int | None = None,
        pasvPorts: tuple[int, int] | None = None,
        *,
        extraArgs: Sequence[str] = (),
        startTimeout: float = 15.0,
        lifetime: float = DEFAULT_LIFETIME,
    ) -> None:
        super().__init__(root, host, port, pasvPorts, startTimeout=startTimeout, lifetime=lifetime)
        self.extraArgs = list(extraArgs)
        self.binary = requirePeer("pure-ftpd")
        self.unshare = requirePeer("unshare")
        requireRoot("pure-ftpd (mount namespace, chroot)")
        home = _ftpAccount().pw_dir
        if not os.path.isdir(home):
            skipOrFail(f"the ftp user's home {home} does not exist")
        self._home = home
        self._syslog: socket.socket | None = None
        self._reader: threading.Thread | None = None
        self._stopReading = threading.Event()

    def _prepare(self) -> None:
        assert self.logDir is not None
        if self._syslog is None:
            path = self.logDir / "syslog.sock"
            self._syslog = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._syslog.bind(str(path))
            path.chmod(0o666)
            self._syslog.settimeout(0.2)
            self._reader = threading.Thread(
                target=self._readSyslog, args=(self._syslog, self.logDir / "syslog.log")
            )
            self._reader.daemon = True
            self._reader.start()
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(self.logDir / "hostdev")

    def _readSyslog(self, sock: socket.socket, path: Path) -> None:
        with open(path, "a", encoding="utf-8", errors="replace") as out:
            while not self._stopReading.is_set():
                try:
                    data = sock.recv(65536)
                except TimeoutError:
                    continue
                except OSError:
                    return
                message = data.decode("utf-8", "replace").rstrip("\0\n")
                out.write(re.sub(r"^<\d+>", "", message) + "\n")
                out.flush()

    def _command(self) -> list[str]:
        assert self.logDir is not None
        argv = [
            self.unshare,
            "--mount",
            "--propagation",
            "private",
            "--",
            "/bin/sh",
            "-c",
            _PURE_FTPD_NAMESPACE,
            "fwx-pure-ftpd",
            str(self.root),
            self._home,
            str(self.logDir),
            self.binary,
            "--bind",
            f"{self.host},{self.port}",
            "--anonymousonly",
            "--dontresolve",
            "--chrooteveryone",
            "--verboselog",
            "--verboselog",
            "--maxclientsnumber",
            "100",
            "--maxclientsperip",
            "100",
            "--maxidletime",
            "2",
        ]
        if self.pasvPorts is not None:
            argv += ["--passiveportrange", f"{self.pasvPorts[0]}:{self.pasvPorts[1]}"]
        return argv + self.extraArgs

    def _earlyExitReason(self, log: str) -> str | None:
        match = re.search(r"fwx-peers: .*|unshare failed.*", log)
        return f"pure-ftpd cannot run here: {match.group(0)}" if match else None

    def _logFiles(self) -> list[Path]:
        return [] if self.logDir is None else [self.logDir / "syslog.log"]

    def _cleanup(self) -> None:
        self._stopReading.set()
        if self._reader is not None:
            self._reader.join(5)
        if self._syslog is not None:
            self._syslog.close()


class Proftpd(FtpServer):
    """proftpd 1.3.8 unpacked in /opt/fwx-peers, standalone, `-n` (foreground).

    A generated minimal config: anonymous only (`<Anonymous root>`, writes denied),
    `AllowForeignAddress off`, no modules loaded beyond the built-in ones, no PAM.
    `log()` holds an ExtendedLog line per command with its reply, then the server log.
    """

    name = "proftpd"

    def __init__(
        self,
        root: str | os.PathLike[str],
        host: str = "127.0.0.1",
        port: int | None = None,
        pasvPorts: tuple[int, int] | None = None,
        *,
        extraConfig: str = "",
        startTimeout: float = 15.0,
        lifetime: float = DEFAULT_LIFETIME,
    ) -> None:
        super().__init__(root, host, port, pasvPorts, startTimeout=startTimeout, lifetime=lifetime)
        self.extraConfig = extraConfig
        self.binary = requirePeer("proftpd")
        requireRoot("proftpd (chroot to the anonymous root)")
        account = _ftpAccount()
        self._anonUser = account.pw_name
        self._anonGroup = grp.getgrgid(account.pw_gid).gr_name

    def config(self) -> str:
        """The configuration written for the next start."""
        assert self.logDir is not None
        d = self.logDir
        passive = ""
        if self.pasvPorts is not None:
            passive = f"PassivePorts {self.pasvPorts[0]} {self.pasvPorts[1]}"
        return f"""\
ServerType standalone
ServerName "fwxtwisted test proftpd"
DefaultServer on
DefaultAddress {self.host}
Port {self.port}
SocketBindTight on
UseIPv6 {"on" if ":" in self.host else "off"}
User nobody
Group nogroup
PidFile "{d}/proftpd.pid"
ScoreboardFile "{d}/proftpd.scoreboard"
DelayTable none
WtmpLog off
UseReverseDNS off
AuthOrder mod_auth_unix.c
MaxInstances 100
TimeoutIdle 120
TimeoutNoTransfer 120
AllowForeignAddress off
{passive}
RequireValidShell off
LogFormat fwx "%a [%P] \\"%r\\" %s \\"%S\\""
ExtendedLog "{d}/commands.log" ALL fwx
TransferLog "{d}/xfer.log"
<Anonymous "{self.root}">
  User {self._anonUser}
  Group {self._anonGroup}
  UserAlias anonymous {self._anonUser}
  RequireValidShell off
  <Limit WRITE>
    DenyAll
  </Limit>
</Anonymous>
{self.extraConfig}
"""

    def _prepare(self) -> None:
        assert self.logDir is not None
        (self.logDir / "proftpd.conf").write_text(self.config())

    def _command(self) -> list[str]:
        assert self.logDir is not None
        return [self.binary, "--nodaemon", "--config", str(self.logDir / "proftpd.conf")]

    def _logFiles(self) -> list[Path]:
        return [] if self.logDir is None else [self.logDir / "commands.log"]


# -- clients ---------------------------------------------------------------------------------


class PeerTimeout(AssertionError):
    """A client did not finish within its hard timeout (it was killed)."""


@dataclasses.dataclass(frozen=True)
class ClientResult:
    """Outcome of a client run."""

    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str
    elapsed: float

    @property
    def ok(self) -> bool:
        """True when the client exited with 0."""
        return self.returncode == 0

    def check(self) -> Self:
        """Return self, or raise AssertionError with the client's output."""
        if self.returncode != 0:
            raise AssertionError(f"{self}")
        return self

    def __str__(self) -> str:
        return (
            f"{' '.join(self.argv)} -> {self.returncode} in {self.elapsed:.2f} s\n"
            f"--- stdout:\n{self.stdout}\n--- stderr:\n{self.stderr}"
        )


def runClient(
    argv: Sequence[str], timeout: float = 120.0, env: Mapping[str, str] | None = None
) -> ClientResult:
    """Run `argv` to completion with a hard timeout (PeerTimeout); no *_proxy variables."""
    began = time.monotonic()
    process = subprocess.Popen(
        [*_deathSignalPrefix(), *argv],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_clientEnvironment(env),
    )
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        try:
            out, err = process.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            out, err = b"", b""
        raise PeerTimeout(
            f"{' '.join(argv)} still running after {timeout} s: killed\n"
            f"--- stdout:\n{out.decode(errors='replace')}\n"
            f"--- stderr:\n{err.decode(errors='replace')}"
        ) from None
    except BaseException:
        process.kill()
        process.wait()
        raise
    return ClientResult(
        tuple(argv),
        process.returncode,
        out.decode(errors="replace"),
        err.decode(errors="replace"),
        time.monotonic() - began,
    )


def curl(args: Sequence[str], timeout: float = 120.0) -> ClientResult:
    """Run curl with `args`, ignoring ~/.curlrc and proxies, connect timeout 10 s."""
    binary = requirePeer("curl")
    argv = [binary, "-q", "--silent", "--show-error", "--noproxy", "*", "--connect-timeout", "10"]
    return runClient([*argv, *args], timeout)


LFTP_SETTINGS = (
    "set cmd:interactive off; set cmd:fail-exit yes; "
    "set net:max-retries 1; set net:persist-retries 0; set net:timeout 10; "
    "set net:reconnect-interval-base 1; set net:reconnect-interval-max 1; "
    "set xfer:clobber on; set xfer:log no; "
    "set cmd:save-cwd-history no; set cmd:save-rl-history no; "
)
"""What lftp() runs before the script: non-interactive, no retries, fail fast."""


def lftp(script: str, timeout: float = 120.0) -> ClientResult:
    """Run `lftp -c` with LFTP_SETTINGS then `script` (which may override them)."""
    binary = requirePeer("lftp")
    return runClient([binary, "--norc", "-c", LFTP_SETTINGS + script], timeout)


# -- the gateway -------------------------------------------------------------------------------


class Gateway(_Managed):
    """The gateway under test, run by runGateway()."""

    name = "gateway"

    def __init__(self, argv: Sequence[str], listen: tuple[str, int], lifetime: float) -> None:
        super().__init__(lifetime)
        self.argv = list(argv)
        self.address = listen
        self.logPath: Path | None = None

    def _logFiles(self) -> list[Path]:
        return [] if self.logPath is None else [self.logPath]


_TWISTD = "import sys; from twisted.scripts.twistd import run; sys.argv[0] = 'twistd'; run()"


@contextlib.contextmanager
def runGateway(
    argv: Sequence[str],
    listen: tuple[str, int],
    timeout: float = 15.0,
    *,
    env: Mapping[str, str] | None = None,
    lifetime: float = DEFAULT_LIFETIME,
) -> Iterator[Gateway]:
    """Run `twistd -n --logfile=<tmp>/gateway.log --pidfile= fwx *argv` until the block ends.

    twistd runs with this interpreter and PYTHONPATH=<project root> (so the in-tree
    `fwx` plugin is found). Waits until something listens on `listen`, read from
    /proc/net/tcp so no probe connection reaches the gateway; raises with the log if the
    process exits first. On exit: SIGTERM, 10 s, SIGKILL.
    """
    gateway = Gateway(argv, listen, lifetime)
    logDir = gateway._makeLogDir()
    gateway.logPath = logDir / "gateway.log"
    environment = dict(os.environ)
    pythonPath = [str(PROJECT_ROOT)]
    if environment.get("PYTHONPATH"):
        pythonPath.append(environment["PYTHONPATH"])
    environment["PYTHONPATH"] = os.pathsep.join(pythonPath)
    environment["PYTHONUNBUFFERED"] = "1"
    environment.update(env or {})
    command = [
        sys.executable,
        "-c",
        _TWISTD,
        "-n",
        f"--logfile={gateway.logPath}",
        "--pidfile=",
        "fwx",
        *argv,
    ]
    try:
        process = gateway._spawn(command, env=environment, cwd=logDir)
        try:
            _waitForListener(listen[0], listen[1], timeout, process)
        except RuntimeError:
            raise RuntimeError(
                f"gateway exited with {process.returncode} before listening on {listen}:\n"
                f"{gateway.log()}"
            ) from None
        except TimeoutError as error:
            raise TimeoutError(f"{error}\ngateway log:\n{gateway.log()}") from None
        yield gateway
    finally:
        gateway.stop()
