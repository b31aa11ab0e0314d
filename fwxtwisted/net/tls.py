"""TLS for the gateway: its server side toward clients, its client side toward servers,
and TLS session resumption between a control connection and its data connections."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from OpenSSL import SSL, crypto
from twisted.internet import ssl
from twisted.internet._sslverify import (
    ClientTLSOptions,
    OpenSSLAcceptableCiphers,
    OpenSSLCertificateOptions,
    TLSVersion,
)
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator, IOpenSSLContextFactory
from zope.interface import implementer

from fwxtwisted.errors import ConfigError
from fwxtwisted.logs import Logger

log = Logger()


def _readPEM(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise ConfigError(f"{what}: cannot read {path}: {e.strerror}") from None


def _certificates(path: str, what: str) -> list[crypto.X509]:
    data = _readPEM(path, what)
    marker = b"-----BEGIN CERTIFICATE-----"
    blocks = [marker + block for block in data.split(marker)[1:]]
    if not blocks:
        raise ConfigError(f"{what}: {path} holds no PEM certificate")
    try:
        return [crypto.load_certificate(crypto.FILETYPE_PEM, block) for block in blocks]
    except crypto.Error as e:
        raise ConfigError(f"{what}: {path}: not a valid certificate ({e})") from None


#: TLS 1.2 suites by default: forward secret (ECDHE, DHE) and AEAD (AES-GCM,
#: ChaCha20-Poly1305) only.  TLS 1.3 suites are all of that kind and are not affected.
DEFAULT_TLS_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20:!aNULL:!eNULL"
#: The oldest TLS version accepted by default.
DEFAULT_TLS_MIN_VERSION = "1.2"
_TLS_VERSIONS = {"1.2": TLSVersion.TLSv1_2, "1.3": TLSVersion.TLSv1_3}


@dataclass(frozen=True)
class TLSPolicy:
    """Which TLS versions and TLS 1.2 cipher suites the gateway accepts, toward clients
    and toward servers alike."""

    #: An OpenSSL cipher string for TLS 1.2 (and below, were it allowed).
    ciphers: str = DEFAULT_TLS_CIPHERS
    #: "1.2" or "1.3".
    minVersion: str = DEFAULT_TLS_MIN_VERSION

    def __post_init__(self) -> None:
        if self.minVersion not in _TLS_VERSIONS:
            raise ConfigError("tls_min_version: must be 1.2 or 1.3")
        if not self.ciphers or not isinstance(self.ciphers, str):
            raise ConfigError("tls_ciphers: must be an OpenSSL cipher string")
        try:
            OpenSSLCertificateOptions(**self.options()).getContext()
        except (SSL.Error, ValueError) as e:
            raise ConfigError(f"tls_ciphers: {self.ciphers!r} is not usable ({e})") from None

    def options(self) -> dict[str, Any]:
        """Keyword arguments of Twisted's OpenSSLCertificateOptions."""
        return {
            "raiseMinimumTo": _TLS_VERSIONS[self.minVersion],
            "acceptableCiphers": OpenSSLAcceptableCiphers.fromOpenSSLCipherString(self.ciphers),
        }


@dataclass(frozen=True)
class ServerTLSSettings:
    """The gateway's certificate toward clients, and whether it asks for theirs."""

    certFile: str
    keyFile: str
    chainFile: str | None = None
    clientCAFile: str | None = None
    policy: TLSPolicy = TLSPolicy()

    def makeOptions(self) -> OpenSSLCertificateOptions:
        """One options object per listener: its single context keeps the session cache
        and ticket keys, so clients can resume on data connections.

        @raise ConfigError: a file is missing or is not what it should be.
        """
        certificate = _certificates(self.certFile, "tls_cert")[0]
        try:
            key = crypto.load_privatekey(crypto.FILETYPE_PEM, _readPEM(self.keyFile, "tls_key"))
        except crypto.Error as e:
            raise ConfigError(f"tls_key: {self.keyFile}: not a valid private key ({e})") from None
        chain = _certificates(self.chainFile, "tls_chain") if self.chainFile else None
        extra: dict[str, Any] = {}
        if self.clientCAFile:
            extra.update(
                verify=True,
                caCerts=_certificates(self.clientCAFile, "client_ca"),
                requireCertificate=True,
            )
        try:
            options = OpenSSLCertificateOptions(
                privateKey=key,
                certificate=certificate,
                extraCertChain=chain,
                enableSessions=True,
                enableSessionTickets=True,
                **self.policy.options(),
                **extra,
            )
            options.getContext()
        except (SSL.Error, ValueError) as e:
            raise ConfigError(f"tls_key: does not match tls_cert {self.certFile} ({e})") from None
        return options


@dataclass(frozen=True)
class UpstreamTLSSettings:
    """How the gateway checks the servers it speaks TLS to."""

    #: PEM file of CAs to trust; the system's roots when None.
    caFile: str | None = None
    #: Skip every check (logged as a warning at start and per session).
    insecure: bool = False
    policy: TLSPolicy = TLSPolicy()

    def clientOptions(self, hostname: str) -> IOpenSSLClientConnectionCreator:
        """A creator for one session: control and data connections share its context,
        which resumption requires."""
        if self.insecure:
            options = OpenSSLCertificateOptions(verify=False, **self.policy.options())
            return _UncheckedClient(options)
        if self.caFile:
            trust: Any = ssl.trustRootFromCertificates(
                [ssl.Certificate(cert) for cert in _certificates(self.caFile, "upstream_ca")]
            )
        else:
            trust = ssl.platformTrust()
        created = ssl.optionsForClientTLS(
            hostname, trustRoot=trust, extraCertificateOptions=self.policy.options()
        )
        assert isinstance(created, ClientTLSOptions)
        return created


@implementer(IOpenSSLClientConnectionCreator)
class _UncheckedClient:
    def __init__(self, options: OpenSSLCertificateOptions) -> None:
        self._options = options

    def clientConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        connection = SSL.Connection(self._options.getContext(), None)
        connection.set_app_data(tlsProtocol)
        connection.set_connect_state()
        return connection


@implementer(IOpenSSLContextFactory)
class ContextOf:
    """A context factory handing out one existing context, e.g. that of an implicit TLS
    listener's connection, so that a data connection is served with the same
    certificate (and session cache) as its control connection."""

    def __init__(self, context: SSL.Context) -> None:
        self._context = context

    def getContext(self) -> SSL.Context:
        return self._context


@implementer(IOpenSSLClientConnectionCreator)
class ResumingClient:
    """Makes client connections that offer the TLS session of an earlier connection
    (the control connection's), as FTP servers require on data connections."""

    def __init__(self, base: IOpenSSLClientConnectionCreator, session: SSL.Session | None):
        self._base = base
        self._session = session

    def clientConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        connection = self._base.clientConnectionForTLS(tlsProtocol)
        if self._session is not None:
            connection.set_session(self._session)
        return connection


def tlsConnectionOf(transport: Any) -> SSL.Connection | None:
    """The OpenSSL connection under a TLS transport, or None for a plain one."""
    getHandle = getattr(transport, "getHandle", None)
    if getHandle is None:
        return None
    handle = getHandle()
    return handle if isinstance(handle, SSL.Connection) else None


def sessionReused(connection: SSL.Connection) -> bool:
    """True when the handshake of C{connection} resumed an earlier session.

    pyOpenSSL has no public call for SSL_session_reused; its binding has one.
    """
    from OpenSSL._util import lib

    return bool(lib.SSL_session_reused(connection._ssl))
