"""FTPSecurity: FTPS for one session (RFC 4217): AUTH, PBSZ and PROT toward the client,
TLS toward the server by policy, and the TLS of each data channel's two legs."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, succeed

from fwxtwisted.filters.ftp.channel import ControlChannel
from fwxtwisted.filters.ftp.commands import Command
from fwxtwisted.filters.ftp.options import UpstreamTLS
from fwxtwisted.filters.ftp.replies import Reply
from fwxtwisted.interfaces import LegTLS, Side
from fwxtwisted.logs import Logger
from fwxtwisted.net.tls import ContextOf, ResumingClient, sessionReused

log = Logger()

#: Verbs this module answers for the client (never forwarded: each side has its own TLS).
SECURITY_VERBS = frozenset({"AUTH", "PBSZ", "PROT", "CCC", "ADAT", "MIC", "CONF", "ENC"})

#: Verbs refused once either side of the control connection speaks TLS.
REFUSED_UNDER_TLS = frozenset({"REIN"})

#: The server's FEAT lines about TLS, replaced by what the gateway itself offers.
_HIDDEN_FEATURES = tuple(f.encode() for f in ("AUTH", "PBSZ", "PROT", "CCC"))

#: The reply vsftpd gives, and clients know, for a data connection that did not resume.
REUSE_REFUSAL = "SSL connection failed: session reuse required"


class UpstreamRefused(Exception):
    """The server would not speak TLS although policy requires it."""


class FTPSecurity:
    """The TLS state of one FTP session, each side on its own."""

    def __init__(self, channel: ControlChannel) -> None:
        self._channel = channel
        self._session = channel.session
        self._options = channel.options
        #: The client's control connection is TLS (AUTH TLS, or an implicit listener).
        self.clientTLS = self._session.isTLS(Side.CLIENT)
        #: The client asked for protected data (PROT P).
        self.clientProtected = False
        self.upstreamTLS = False
        self.upstreamProtected = False
        #: The name the server's certificate must carry (the upstream as configured).
        self.upstreamName: str | None = None
        self._upstreamCreator: Any = None
        self._reuseRefused = False

    @property
    def wantUpstreamTLS(self) -> bool:
        """Policy: must the control connection to the server be TLS?"""
        policy = self._options.upstreamTLS
        return policy is UpstreamTLS.ALWAYS or (policy is UpstreamTLS.AUTO and self.clientTLS)

    @property
    def offersTLS(self) -> bool:
        """True when the gateway has a certificate for clients."""
        return self._options.serverTLSOptions is not None

    # Client commands.

    def clientCommand(self, command: Command) -> Deferred[Any] | None:
        """Answer AUTH, PBSZ, PROT (and refuse their kin); a Deferred while the server
        side is being secured, which holds the client's next commands."""
        channel = self._channel
        verb, argument = command.verb, command.argument.strip().upper()
        if verb == "AUTH":
            if not self.offersTLS:
                channel.reply(534, "TLS is not offered by this gateway")
            elif argument not in ("TLS", "SSL", "TLS-C", "TLS-P"):
                channel.reply(504, f"AUTH {argument} not supported; use AUTH TLS")
            elif self.clientTLS:
                channel.reply(503, "already using TLS")
            else:
                channel.reply(234, f"AUTH {argument} successful")
                channel.switchToTLS(
                    Side.CLIENT,
                    LegTLS(self._options.serverTLSOptions, asServer=True),
                    f"AUTH {argument}",
                )
                self.clientTLS = True
                return self.secureUpstreamIfWanted()
        elif verb == "PBSZ":
            if not self.clientTLS:
                channel.reply(503, "PBSZ needs a TLS control connection (AUTH TLS first)")
            else:
                channel.reply(200, "PBSZ=0")
        elif verb == "PROT":
            if not self.clientTLS:
                channel.reply(503, "PROT needs a TLS control connection (AUTH TLS first)")
            elif argument == "P":
                self.clientProtected = True
                channel.reply(200, "PROT now Private")
            elif argument == "C" and self._options.requireTLS and not self._options.allowClearData:
                channel.reply(534, "PROT C refused: this gateway requires protected data (PROT P)")
            elif argument == "C":
                self.clientProtected = False
                channel.reply(200, "PROT now Clear")
            else:
                channel.reply(536, f"PROT {argument} not supported; use P or C")
        elif verb == "REIN":
            channel.reply(502, "REIN refused: it cannot undo TLS; close and reconnect instead")
        else:
            channel.reply(502, f"{verb} not implemented")
        return None

    def features(self, reply: Reply) -> Reply:
        """The server's FEAT reply as the client is to see it: TLS is each side's own,
        so the server's TLS lines give way to what the gateway offers."""
        if not reply.isPositive or len(reply.lines) < 3:
            return reply
        middle = [
            line
            for line in reply.lines[1:-1]
            if not line.strip().upper().startswith(_HIDDEN_FEATURES)
        ]
        if self.offersTLS:
            middle += [b" AUTH TLS", b" PBSZ", b" PROT"]
        return Reply(reply.code, (reply.lines[0], *middle, reply.lines[-1]))

    def refusesLogin(self) -> bool:
        """True when policy wants TLS before credentials and the client has none."""
        return self._options.requireTLS and not self.clientTLS

    def refusesClearData(self) -> bool:
        """True when policy wants protected data and the client has not asked for it:
        RFC 4217's default protection level is Clear, so no PROT at all means clear."""
        opts = self._options
        return opts.requireTLS and not opts.allowClearData and not self.clientProtected

    # The server side.

    def secureUpstreamIfWanted(self, name: str | None = None) -> Deferred[Any]:
        """AUTH TLS toward the server when policy wants it and the server leg is up.

        @param name: the name the server's certificate must carry, when known now.
        """
        if name is not None:
            self.upstreamName = name
        if self.upstreamTLS or not self.wantUpstreamTLS or self._session.serverAddress is None:
            return succeed(None)
        return self.secureUpstream()

    def secureUpstream(self) -> Deferred[Any]:
        """AUTH TLS with the server; fires once the TLS handshake is done, fails with
        L{UpstreamRefused} when the server says no.  Nothing else is sent meanwhile."""
        done: Deferred[Any] = Deferred()

        def handshaken(connection: object) -> str | None:
            if not done.called:
                done.callback(None)
            return None

        def answered(reply: Reply) -> None:
            if reply.code != 234:
                done.errback(UpstreamRefused(f"the server refused AUTH TLS: {_last(reply)}"))
                return
            self.upstreamTLS = True
            self._channel.switchToTLS(
                Side.SERVER,
                LegTLS(self._creator(), asServer=False, check=handshaken),
                f"its {reply.code}",
            )

        self._channel.sendToServer(Command("AUTH", "TLS"), None, answered)
        return done

    def protectUpstream(self) -> Deferred[Any]:
        """PBSZ 0 and PROT P toward a TLS server, once, before its first data channel."""
        if not self.upstreamTLS or self.upstreamProtected:
            return succeed(None)
        done: Deferred[Any] = Deferred()

        def protected(reply: Reply) -> None:
            if not reply.isPositive:
                done.errback(UpstreamRefused(f"the server refused PROT P: {_last(reply)}"))
                return
            self.upstreamProtected = True
            done.callback(None)

        def sized(reply: Reply) -> None:
            self._channel.sendToServer(Command("PROT", "P"), None, protected)

        self._channel.sendToServer(Command("PBSZ", "0"), None, sized)
        return done

    # Data channels.

    def dataTLS(self, clientIsAccepted: bool = True) -> dict[Side, LegTLS]:
        """TLS for a data channel's legs, by relay side.

        The FTP client's leg has the gateway as TLS server; the FTP server's leg has it
        as TLS client, resuming the control connection's session.  A redirect in active
        mode accepts the FTP server's leg, so the sides swap (C{clientIsAccepted}).
        """
        legs: dict[Side, LegTLS] = {}
        clientSide, serverSide = (
            (Side.CLIENT, Side.SERVER) if clientIsAccepted else (Side.SERVER, Side.CLIENT)
        )
        if self.clientProtected:
            check = self._checkReuse if self._options.requireTLSReuse else None
            legs[clientSide] = LegTLS(self._serverCreator(), asServer=True, check=check)
        if self.upstreamProtected:
            control = self._session.tlsConnection(Side.SERVER)
            tlsSession = control.get_session() if control is not None else None  # type: ignore[attr-defined]
            legs[serverSide] = LegTLS(ResumingClient(self._creator(), tlsSession), asServer=False)
        return legs

    def takeReuseRefusal(self) -> bool:
        """True (once) when a data connection was refused for not resuming."""
        refused, self._reuseRefused = self._reuseRefused, False
        return refused

    def _checkReuse(self, connection: object) -> str | None:
        if connection is not None and sessionReused(connection):  # type: ignore[arg-type]
            return None
        self._reuseRefused = True
        log.warn(
            "{session}: data connection from {client} did not resume the TLS session",
            session=self._session.sessionId,
            client=str(self._session.clientAddress),
        )
        return REUSE_REFUSAL

    def _serverCreator(self) -> Any:
        """TLS toward the client on a data connection: the context of the client's
        control connection, whose session it can resume (after AUTH TLS that is
        tls_cert's; on an implicit TLS listener, the listener's)."""
        control = self._session.tlsConnection(Side.CLIENT)
        if control is None:
            return self._options.serverTLSOptions
        return ContextOf(control.get_context())  # type: ignore[attr-defined]

    def _creator(self) -> Any:
        if self._upstreamCreator is None:
            name = self.upstreamName or str(self._session.serverAddress.host)
            settings = self._options.upstreamTLSSettings
            if settings.insecure:
                log.warn(
                    "{session}: TLS to {server} is not checked (upstream_insecure)",
                    session=self._session.sessionId,
                    server=name,
                )
            self._upstreamCreator = settings.clientOptions(name)
        return self._upstreamCreator


def _last(reply: Reply) -> str:
    return f"{reply.code} {reply.text.splitlines()[-1].strip()}"
