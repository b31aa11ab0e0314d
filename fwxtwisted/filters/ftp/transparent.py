"""The FTP filter on a transparent listener (the gateway is the client's router).

Each session's server is its control connection's original destination.  Data
connections, by the client's mode:

- passive (PASV/EPSV), C{transparent_data = "permit"} (the default): the server's
  227/229 goes to the client unchanged, once the gateway let exactly that flow through
  (C{allowFutureConnect(client IP, any port -> server IP, data port)}, single use,
  TIMEOUT).  The client connects to the server as it believes it does; the gateway
  relays that one connection from its external address, the control connection's
  source as the server sees it (so C{pasv_promiscuous = NO} servers accept it).  A 227
  naming another host than the server (a server behind NAT, or a hostile one) is
  rewritten to name the server: the gateway never opens a path to a third host.
- passive, C{transparent_data = "relay"}: as in reverse-proxy mode, the 227/229 names
  a listener of the gateway (its own address toward the client).
- active (PORT/EPRT): as in reverse-proxy mode.  The server is told the gateway's
  external address (C{port_promiscuous = NO} servers refuse a PORT naming another IP
  than the control connection's source, and that source is the gateway); the gateway
  connects to the client from its own address toward the client.

The gateway's own data listeners (active mode, C{relay}) need the host's input policy
to accept their ports (examples/transparent.nft: C{DATA_PORTS}).
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Mapping
from dataclasses import replace

from twisted.python.failure import Failure

from fwxtwisted.address import Address, normalizeHost
from fwxtwisted.errors import ConfigError
from fwxtwisted.filters.ftp.channel import ControlChannel, ReplySlot
from fwxtwisted.filters.ftp.commands import Command
from fwxtwisted.filters.ftp.dataaddress import (
    DataAddressError,
    formatPasvReply,
    parseEpsvReply,
    parsePasvReply,
)
from fwxtwisted.filters.ftp.options import DataPolicy, FTPOptions, TransparentData, parseFTPOptions
from fwxtwisted.filters.ftp.protocols import FTP_DATA
from fwxtwisted.filters.ftp.replies import Reply, formatReply
from fwxtwisted.interfaces import IFirewallAction, LegTLS, RedirectFlags, Side
from fwxtwisted.logs import Logger

log = Logger()


def parseTransparentFTPOptions(raw: Mapping[str, object]) -> FTPOptions:
    """The FTP keys of a transparent listener (no upstream: each session's is its
    original destination), plus C{transparent_data}.  @raise ConfigError."""
    keys = dict(raw)
    text = keys.pop("transparent_data", TransparentData.PERMIT.value)
    try:
        mode = TransparentData(text)
    except ValueError:
        raise ConfigError("transparent_data: must be one of permit, relay") from None
    if keys.get("explicit", False) is not False:
        raise ConfigError(
            "explicit: not with transparent (each session's server is its connection's "
            "original destination, not a USER name@host)"
        )
    options = parseFTPOptions(keys, hasUpstream=True)
    if mode is TransparentData.PERMIT and options.dataPolicy is DataPolicy.ACTIVE:
        # A passive client would have to connect to a listener of the gateway's: the
        # server, told to connect out, has none to let it through to.
        raise ConfigError(
            'data_policy: "active" needs transparent_data = "relay" on a transparent listener'
        )
    return replace(options, transparentData=mode)


def ownAddressToward(host: str) -> str:
    """The gateway's address the kernel would use toward C{host} (a route lookup; no
    packet is sent).  On a transparent listener the session's internal address is the
    original destination after a tproxy, which the gateway may not bind."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        probe.connect((host, 9))
        return normalizeHost(str(probe.getsockname()[0]))


class TransparentPassive:
    """PASV/EPSV on a transparent listener.  Under C{transparent_data = "permit"}: the
    server's reply unchanged, after the gateway let the client's one data connection
    to the server through.  Under C{"relay"}, EPSV is refused: its 229 names no
    address, and the client would connect to the server's (not the gateway's)."""

    def __init__(
        self,
        channel: ControlChannel,
        dataTLS: Callable[[], dict[Side, LegTLS]],
        use: Callable[[IFirewallAction, ReplySlot], None],
        cannotOpen: Callable[[ReplySlot, Failure], None],
        context: object,
    ) -> None:
        self._channel = channel
        self._session = channel.session
        self._dataTLS = dataTLS
        self._use = use
        self._cannotOpen = cannotOpen
        self._context = context
        self._permit = channel.options.transparentData is TransparentData.PERMIT

    def handled(self, command: Command, slot: ReplySlot) -> bool:
        """Answer C{command} (PASV/EPSV), or leave it to the reverse-proxy way (False)."""
        if self._permit:
            self.passive(command, slot)
        elif command.verb == "EPSV":
            # 502: clients fall back to PASV (whose 227 names the gateway).
            text = "EPSV not possible through this gateway (transparent_data = relay); use PASV"
            self._channel.replies.complete(slot, formatReply(502, text))
        else:
            return False
        return True

    def passive(self, command: Command, slot: ReplySlot) -> None:
        """Ask the server as the client did; permit the flow, then pass the reply on."""
        server = self._session.serverAddress
        assert server is not None, "data commands are handled only once logged in upstream"

        def answered(reply: Reply) -> None:
            if not reply.isPositive:
                self._channel.replies.complete(slot, reply.toBytes())
                return
            try:
                data = self._toClient(command.verb, reply, server)
            except DataAddressError as e:
                log.warn(
                    "{session}: unreadable passive reply from server: {error}",
                    session=self._session.sessionId,
                    error=str(e),
                )
                self._channel.replies.complete(
                    slot, formatReply(425, "cannot read the server's passive reply")
                )
                return
            if data is None:
                self._channel.replies.complete(
                    slot, formatReply(425, "the server offered data port 0")
                )
                return
            toClient, port = data
            permitting = self._session.allowFutureConnect(
                Address(self._session.clientAddress.host, 0),
                server.withPort(port),
                flags=RedirectFlags.TIMEOUT,
                protocolId=FTP_DATA.protocolId,
                context=self._context,
                tls=self._dataTLS(),
            )

            def permitted(action: IFirewallAction) -> None:
                self._use(action, slot)
                self._channel.replies.complete(slot, toClient)

            permitting.addCallbacks(permitted, lambda f: self._cannotOpen(slot, f))

        self._channel.sendToServer(Command(command.verb), slot, answered)

    def _toClient(self, verb: str, reply: Reply, server: Address) -> tuple[bytes, int] | None:
        """The reply the client gets and the data port, or None for port 0."""
        if verb == "EPSV":
            port = parseEpsvReply(reply.text)
            return (reply.toBytes(), port) if port else None
        named = parsePasvReply(reply.text)
        if not named.port:
            return None
        if named.host != server.host:
            log.info(
                "{session}: 227 names {named}, not the server {server}: rewritten",
                session=self._session.sessionId,
                named=named.host,
                server=server.host,
            )
            return formatReply(227, formatPasvReply(server.withPort(named.port))), named.port
        return reply.toBytes(), named.port
