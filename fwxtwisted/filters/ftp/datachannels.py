"""DataChannels: PASV, EPSV, PORT and EPRT, rewritten and opened through the session.

Four shapes, by the client's mode and the data policy toward the server:

    client passive, server passive: listen for the client, connect to the server
    client active,  server active:  listen for the server, connect to the client
    client passive, server active:  listen for both (a join)
    client active,  server passive: connect to both (a join)

The server's data IP is always taken to be its control IP: a 227 naming another host
(a server behind NAT, or a hostile one) never makes the gateway connect elsewhere.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from twisted.python.failure import Failure

from fwxtwisted.address import Address
from fwxtwisted.filters.ftp.channel import ControlChannel, ReplySlot
from fwxtwisted.filters.ftp.commands import Command
from fwxtwisted.filters.ftp.dataaddress import (
    DataAddressError,
    UnsupportedNetworkProtocolError,
    formatEprt,
    formatEpsvReply,
    formatPasvReply,
    formatPort,
    parseEprt,
    parseEpsvReply,
    parsePasvReply,
    parsePort,
)
from fwxtwisted.filters.ftp.options import DataPolicy
from fwxtwisted.filters.ftp.protocols import FTP_DATA
from fwxtwisted.filters.ftp.replies import Reply, formatReply
from fwxtwisted.filters.ftp.transparent import TransparentPassive, ownAddressToward
from fwxtwisted.interfaces import (
    TLS_UNFINISHED,
    ActionState,
    Connect,
    FirewallEvent,
    FirewallNotification,
    IFirewallAction,
    IJoin,
    LegTLS,
    Listen,
    RedirectFlags,
    Redirection,
    Side,
)
from fwxtwisted.logs import Logger

log = Logger()

_AddressHandler = Callable[[Address], None]
_ReplyHandler = Callable[[Reply], None]


class DataTLS(Protocol):
    """Where a data channel's TLS comes from (the session's FTPS state)."""

    def dataTLS(self, clientIsAccepted: bool = True) -> dict[Side, LegTLS]:
        """TLS for a data channel's legs, by relay side (see L{FTPSecurity.dataTLS})."""


@dataclass
class DataState:
    """What is known of one data channel's connection."""

    established: bool = False
    closed: bool = False
    bytes: int = 0
    #: Why its transfer cannot be whole although the connection closed (a peer left
    #: before its TLS handshake ended), else None.
    failure: str | None = None


class DataChannels:
    """The data-channel half of the FTP filter, one per session."""

    def __init__(self, channel: ControlChannel, tls: DataTLS) -> None:
        self._channel = channel
        self._tls = tls
        self._session = channel.session
        self._options = channel.options
        #: The newest data channel (the one a transfer command will use).
        self.current: IFirewallAction | None = None
        #: The reply slot of the newest PASV/EPSV/PORT/EPRT that asked for a channel.
        self._newest: ReplySlot | None = None
        self.states: dict[int, DataState] = {}
        self._epsvAll = False
        self._serverLacksEpsv = False
        self._serverLacksEprt = False
        self._ownIP: str | None = None
        self._transparent: TransparentPassive | None = None
        if self._options.transparentData is not None:
            self._transparent = TransparentPassive(
                channel, self._tls.dataTLS, self._use, self._cannotOpen, self
            )

    @property
    def transferring(self) -> bool:
        """True while a data connection is up."""
        return any(s.established and not s.closed for s in self.states.values())

    def state(self, action: IFirewallAction | None) -> DataState:
        """The state of C{action}'s connection (fresh for an unknown one)."""
        if action is None:
            return DataState()
        return self.states.setdefault(id(action), DataState())

    def event(self, notification: FirewallNotification) -> None:
        """Follow the connection of a data channel."""
        if notification.action is None:
            return
        state = self.state(notification.action)
        if notification.event is FirewallEvent.ESTABLISHED_CONNECTION:
            state.established = True
        elif notification.event is FirewallEvent.CONNECTION_TERMINATING:
            state.closed = True
            state.bytes = notification.counts.fromClient + notification.counts.fromServer
            if notification.reason is not None and TLS_UNFINISHED in notification.reason:
                state.failure = notification.reason

    # Client commands.

    def passive(self, command: Command) -> None:
        """PASV or EPSV from the client."""
        channel = self._channel
        internal = self._session.internalAddress
        argument = command.argument.strip().upper()
        if command.verb == "EPSV" and argument == "ALL":
            self._epsvAll = True
            channel.reply(200, "EPSV ALL ok; only EPSV from now on")
            return
        # RFC 2428: EPSV names the network protocol the data connection must use.
        family = "2" if internal.isIPv6 else "1"
        if command.verb == "EPSV" and argument not in ("", family):
            channel.reply(522, f"network protocol not supported, use ({family})")
            return
        if command.verb == "PASV" and (self._epsvAll or internal.isIPv6):
            channel.reply(501, "PASV is not possible here; use EPSV")
            return
        self._cancelUnused()
        slot = self._newest = channel.replies.reserve()
        if self._transparent is not None and self._transparent.handled(command, slot):
            pass
        elif self._options.dataPolicy is DataPolicy.ACTIVE:
            self._passiveClientActiveServer(command, slot)
        else:
            self._askServerPassive(
                command.verb, slot, lambda server: self._passiveBoth(command, slot, server)
            )

    def active(self, command: Command) -> None:
        """PORT or EPRT from the client."""
        channel = self._channel
        if self._epsvAll:
            channel.reply(501, f"{command.verb} refused after EPSV ALL")
            return
        try:
            target = (parsePort if command.verb == "PORT" else parseEprt)(command.argument)
        except UnsupportedNetworkProtocolError:
            channel.reply(522, "network protocol not supported, use (1,2)")
            return
        except DataAddressError as e:
            channel.reply(501, str(e))
            return
        refusal = self.refusal(target)
        if refusal is not None:
            log.warn(
                "{session}: refused {verb} to {target}: {reason}",
                session=self._session.sessionId,
                verb=command.verb,
                target=str(target),
                reason=refusal,
            )
            channel.reply(500, f"Illegal {command.verb} command: {refusal}")
            return
        self._cancelUnused()
        slot = self._newest = channel.replies.reserve()
        if self._options.dataPolicy is DataPolicy.PASSIVE:
            self._askServerPassive(
                "EPSV" if command.verb == "EPRT" else "PASV",
                slot,
                lambda server: self._activeClientPassiveServer(command, slot, target, server),
            )
        else:
            self._activeBoth(command, slot, target)

    def refusal(self, target: Address) -> str | None:
        """Why a client's PORT/EPRT may not name C{target}, or None when it may."""
        ip = ipaddress.ip_address(target.host)
        client = self._session.clientAddress.host
        if ip.is_multicast or ip.is_unspecified or target.host == "255.255.255.255":
            return "not a unicast address"
        if target.port == 0:
            return "port 0"
        if not self._options.allowFxp:
            if target.host != client:
                return "the address is not the client's own"
            if target.port < 1024:
                return "ports below 1024 are refused"
            return None
        # Loopback is the gateway too: the data connection would reach its own services.
        own = {self._session.internalAddress.host, self._session.externalAddress}
        if (target.host in own or ip.is_loopback) and target.host != client:
            return "the gateway itself"
        return None

    # The four shapes.

    def _passiveBoth(self, command: Command, slot: ReplySlot, server: Address) -> None:
        granted = self._session.redirectConnections(
            [server],
            internalAddress=Address(self._clientSideIP(), 0),
            flags=RedirectFlags.TIMEOUT,
            context=self,
            protocolId=FTP_DATA.protocolId,
            portRange=self._options.passivePorts,
            tls=self._tls.dataTLS(clientIsAccepted=True),
        )

        def ready(redirection: Redirection) -> None:
            self._use(redirection.actions[0], slot)
            self._replyPassive(command, slot, redirection.internalAddress)

        granted.addCallbacks(ready, lambda f: self._cannotOpen(slot, f))

    def _activeBoth(self, command: Command, slot: ReplySlot, target: Address) -> None:
        external = self._externalIP()
        server = self._serverAddress()
        granted = self._session.redirectConnections(
            [target],
            internalAddress=Address(external, 0),
            proxyExternalAddress=self._clientSideIP(),
            expectedPeer=server.host,
            flags=RedirectFlags.TIMEOUT,
            context=self,
            protocolId=FTP_DATA.protocolId,
            tls=self._tls.dataTLS(clientIsAccepted=False),
        )

        def ready(redirection: Redirection) -> None:
            action = redirection.actions[0]
            self._use(action, slot)
            self._sendActive(
                command.verb, redirection.internalAddress, slot, action, passThrough=True
            )

        granted.addCallbacks(ready, lambda f: self._cannotOpen(slot, f))

    def _passiveClientActiveServer(self, command: Command, slot: ReplySlot) -> None:
        server = self._serverAddress()
        joining = self._session.joinConnections(
            Listen(
                self._clientSideIP(),
                self._session.clientAddress.host,
                portRange=self._options.passivePorts,
            ),
            Listen(self._externalIP(), server.host),
            context=self,
            tls=self._tls.dataTLS(),
        )

        def ready(join: IJoin) -> None:
            self._use(join, slot)
            addresses = join.listeningAddresses
            forClient: Address = addresses[Side.CLIENT]

            def accepted(reply: Reply) -> None:
                if reply.isPositive:
                    self._replyPassive(command, slot, forClient)
                else:
                    join.cancel()
                    self._channel.replies.complete(slot, reply.toBytes())

            self._sendActive(
                "EPRT" if command.verb == "EPSV" else "PORT",
                addresses[Side.SERVER],
                slot,
                join,
                passThrough=False,
                then=accepted,
            )

        joining.addCallbacks(ready, lambda f: self._cannotOpen(slot, f))

    def _activeClientPassiveServer(
        self, command: Command, slot: ReplySlot, target: Address, server: Address
    ) -> None:
        joining = self._session.joinConnections(
            Connect(target, self._clientSideIP()),
            Connect(server, self._externalIP()),
            context=self,
            tls=self._tls.dataTLS(),
        )

        def ready(join: IJoin) -> None:
            self._use(join, slot)
            self._channel.replies.complete(
                slot, formatReply(200, f"{command.verb} command successful")
            )

        joining.addCallbacks(ready, lambda f: self._cannotOpen(slot, f))

    # Talking to the server.

    def _askServerPassive(self, verb: str, slot: ReplySlot, then: _AddressHandler) -> None:
        """Send PASV or EPSV to the server and hand its data address to C{then}."""
        server = self._serverAddress()
        useEpsv = server.isIPv6 or (verb == "EPSV" and not self._serverLacksEpsv)

        def answered(reply: Reply) -> None:
            if not reply.isPositive:
                if useEpsv and not server.isIPv6 and reply.code in (500, 501, 502, 504):
                    self._serverLacksEpsv = True
                    self._askServerPassive("PASV", slot, then)
                    return
                self._channel.replies.complete(slot, reply.toBytes())
                return
            try:
                if useEpsv:
                    port = parseEpsvReply(reply.text)
                else:
                    port = parsePasvReply(reply.text).port
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
            if port == 0:
                self._channel.replies.complete(
                    slot, formatReply(425, "the server offered data port 0")
                )
                return
            then(Address(server.host, port))

        self._channel.sendToServer(Command("EPSV" if useEpsv else "PASV"), slot, answered)

    def _sendActive(
        self,
        verb: str,
        listening: Address,
        slot: ReplySlot,
        action: IFirewallAction,
        passThrough: bool,
        then: _ReplyHandler | None = None,
    ) -> None:
        """Tell the server to connect to C{listening}, with PORT (IPv4) or EPRT."""
        useEprt = listening.isIPv6 or (verb == "EPRT" and not self._serverLacksEprt)
        argument = formatEprt(listening) if useEprt else formatPort(listening)

        def answered(reply: Reply) -> None:
            if (
                not reply.isPositive
                and useEprt
                and not listening.isIPv6
                and reply.code in (500, 501, 502, 504)
            ):
                self._serverLacksEprt = True
                self._sendActive("PORT", listening, slot, action, passThrough, then)
                return
            if then is not None:
                then(reply)
                return
            if not reply.isPositive:
                action.cancel()
            self._channel.replies.complete(slot, reply.toBytes())

        self._channel.sendToServer(Command("EPRT" if useEprt else "PORT", argument), slot, answered)

    # Helpers.

    def _replyPassive(self, command: Command, slot: ReplySlot, listening: Address) -> None:
        if command.verb == "EPSV":
            data = formatReply(229, formatEpsvReply(listening.port))
        else:
            host = self._options.advertiseAddress or listening.host
            data = formatReply(227, formatPasvReply(Address(host, listening.port)))
        self._channel.replies.complete(slot, data)

    def _use(self, action: IFirewallAction, slot: ReplySlot) -> None:
        if slot is not self._newest:
            # A later data command came while this channel was being opened (commands
            # pipelined ahead of the server's reply): as on the server, it replaces this.
            action.cancel()
            return
        self.current = action
        self.states[id(action)] = DataState()
        action.whenFinished().addBoth(lambda _: self._forget(action))

    def _forget(self, action: IFirewallAction) -> None:
        if self.current is action:
            self.current = None
        # Keep the state until a transfer that used it is logged; a bounded few remain.
        if len(self.states) > 16:
            for key in list(self.states)[:-16]:
                del self.states[key]

    def _cancelUnused(self) -> None:
        """One pending data channel per session: a new request replaces an unused one."""
        current = self.current
        if current is not None and current.state is ActionState.LISTENING:
            if not self.state(current).established:
                current.cancel()
        self.current = None

    def _cannotOpen(self, slot: ReplySlot, failure: Failure) -> None:
        log.warn(
            "{session}: cannot open data channel: {error}",
            session=self._session.sessionId,
            error=failure.getErrorMessage(),
        )
        self._channel.replies.complete(
            slot, formatReply(425, f"cannot open data connection: {failure.getErrorMessage()}")
        )

    def _clientSideIP(self) -> str:
        """The gateway's address toward the client: its data listeners for the client
        and its data connections to the client use it (see L{ownAddressToward})."""
        if self._options.transparentData is None:
            return str(self._session.internalAddress.host)
        if self._ownIP is None:
            self._ownIP = ownAddressToward(self._session.clientAddress.host)
        return self._ownIP

    def _externalIP(self) -> str:
        external = self._session.externalAddress
        if external is None:
            return str(self._session.internalAddress.host)
        return str(external)

    def _serverAddress(self) -> Address:
        server: Address | None = self._session.serverAddress
        assert server is not None, "data commands are handled only once logged in upstream"
        return server
