"""The classic proxy login, USER name@host[:port]: its parser and the login itself."""

from __future__ import annotations

from typing import Any, Protocol

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from fwxtwisted.address import Address, parsePort
from fwxtwisted.filters.ftp.channel import ControlChannel
from fwxtwisted.filters.ftp.commands import Command
from fwxtwisted.filters.ftp.replies import Reply, formatReply
from fwxtwisted.logs import Logger

log = Logger()

FTP_PORT = 21


def parseExplicitUser(argument: str) -> tuple[str, Address]:
    """Split ``name@host[:port]`` (``name@[v6]:port`` for IPv6) into name and destination.

    The last ``@`` separates them, so a name may hold ``@`` itself (e-mail logins).
    @raise ValueError: no host, or a bad port.
    """
    name, sep, destination = argument.rpartition("@")
    if not sep or not name or not destination:
        raise ValueError("log in as USER name@host[:port]")
    if destination.startswith("["):
        end = destination.find("]")
        if end < 0:
            raise ValueError(f"unclosed '[' in {destination!r}")
        host, rest = destination[1:end], destination[end + 1 :]
        if rest and not rest.startswith(":"):
            raise ValueError(f"junk after ']' in {destination!r}")
        port = parsePort(rest[1:]) if rest else FTP_PORT
    elif destination.count(":") == 1:
        host, _, portText = destination.partition(":")
        port = parsePort(portText)
    elif ":" in destination:
        raise ValueError("write an IPv6 destination as name@[address]:port")
    else:
        host, port = destination, FTP_PORT
    if not host or port == 0:
        raise ValueError(f"{destination!r} is not host[:port]")
    return name, Address(host, port)


class UpstreamSecurity(Protocol):
    """The TLS toward the server, as the login needs it (L{FTPSecurity} meets it)."""

    def secureUpstreamIfWanted(self, name: str | None = None) -> Deferred[Any]:
        """AUTH TLS toward the server (whose certificate must name C{name}) when
        policy wants it."""


class ExplicitLogin:
    """An explicit proxy's session before its upstream exists: the gateway greets, reads
    USER name@host[:port], checks the allow-list, connects, secures the server side by
    policy, then logs in as name.  The client's next commands wait meanwhile.

    It writes nothing of the filter's: the Deferred of a login fires with the name
    logged in as once the server is connected, greeted, secured and sent C{USER}
    (None when the login went no further)."""

    def __init__(self, channel: ControlChannel, security: UpstreamSecurity) -> None:
        self._channel = channel
        self._security = security

    def command(self, command: Command) -> Deferred[Any] | None:
        """A command before the upstream exists: only USER name@host, NOOP and QUIT."""
        channel = self._channel
        if command.verb == "QUIT":
            channel.reply(221, "Goodbye")
            channel.closeAfterReplies("client quit before logging in")
        elif command.verb == "USER":
            return self._login(command)
        elif command.verb == "NOOP":
            channel.reply(200, "NOOP ok")
        else:
            channel.reply(530, "log in first: USER name@host[:port]")
        return None

    def _login(self, command: Command) -> Deferred[Any] | None:
        channel = self._channel
        try:
            name, destination = parseExplicitUser(command.argument)
        except ValueError as e:
            channel.reply(501, str(e))
            return None
        slot = channel.replies.reserve()

        def resolved(ip: str) -> Deferred[Any] | None:
            target = Address(ip, destination.port)
            if not channel.options.allows(target):
                log.warn(
                    "{session}: explicit destination {target} refused by allow-list",
                    session=channel.session.sessionId,
                    target=str(target),
                )
                channel.replies.complete(
                    slot,
                    formatReply(530, f"destination {destination} is not allowed"),
                )
                return None
            waiter = channel.awaitGreeting()
            connecting: Deferred[Any] = channel.session.connectUpstream(target)
            connecting.addCallback(lambda _: waiter)
            connecting.addCallback(greeted)
            connecting.addErrback(channel.upstreamUnreachable, slot)
            return connecting

        def greeted(greeting: Reply) -> Deferred[Any] | None:
            if not greeting.isPositive:
                channel.replies.complete(
                    slot,
                    formatReply(
                        421, f"server refused the session: {greeting.text.splitlines()[-1]}"
                    ),
                )
                channel.closeAfterReplies("server refused the session")
                return None

            def login(_: object) -> str:
                channel.sendToServer(Command("USER", name), slot, None)
                return name

            securing = self._security.secureUpstreamIfWanted(destination.host)
            securing.addCallbacks(login, channel.upstreamUnreachable, errbackArgs=(slot,))
            return securing

        def unresolved(failure: Failure) -> None:
            channel.replies.complete(slot, formatReply(530, f"cannot resolve {destination.host}"))

        lookup = channel.session.resolveHost(destination.host)
        lookup.addCallbacks(resolved, unresolved)
        return lookup
