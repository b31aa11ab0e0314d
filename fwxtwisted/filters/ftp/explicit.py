"""The classic proxy login, USER name@host[:port]: its parser and the login itself."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from fwxtwisted.address import Address, parsePort
from fwxtwisted.filters.ftp.commands import Command
from fwxtwisted.filters.ftp.replies import Reply, formatReply
from fwxtwisted.logs import Logger

if TYPE_CHECKING:
    from fwxtwisted.filters.ftp.control import FTPSessionFilter

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


class ExplicitLogin:
    """An explicit proxy's session before its upstream exists: the gateway greets, reads
    USER name@host[:port], checks the allow-list, connects, secures the server side by
    policy, then logs in as name.  The client's next commands wait meanwhile."""

    def __init__(self, control: FTPSessionFilter) -> None:
        self._control = control

    def command(self, command: Command) -> Deferred[Any] | None:
        """A command before the upstream exists: only USER name@host, NOOP and QUIT."""
        control = self._control
        if command.verb == "QUIT":
            control.reply(221, "Goodbye")
            control.closeAfterReplies("client quit before logging in")
        elif command.verb == "USER":
            return self._login(command)
        elif command.verb == "NOOP":
            control.reply(200, "NOOP ok")
        else:
            control.reply(530, "log in first: USER name@host[:port]")
        return None

    def _login(self, command: Command) -> Deferred[Any] | None:
        control = self._control
        try:
            name, destination = parseExplicitUser(command.argument)
        except ValueError as e:
            control.reply(501, str(e))
            return None
        slot = control.replies.reserve()

        def resolved(ip: str) -> Deferred[Any] | None:
            target = Address(ip, destination.port)
            if not control.options.allows(target):
                log.warn(
                    "{session}: explicit destination {target} refused by allow-list",
                    session=control.session.sessionId,
                    target=str(target),
                )
                control.replies.complete(
                    slot,
                    formatReply(
                        530, f"destination {destination.host}:{destination.port} is not allowed"
                    ),
                )
                return None
            waiter = control.channel.awaitGreeting()
            connecting: Deferred[Any] = control.session.connectUpstream(target)
            connecting.addCallback(lambda _: waiter)
            connecting.addCallback(greeted)
            connecting.addErrback(control.upstreamUnreachable, slot)
            return connecting

        def greeted(greeting: Reply) -> Deferred[Any] | None:
            if not greeting.isPositive:
                control.replies.complete(
                    slot,
                    formatReply(
                        421, f"server refused the session: {greeting.text.splitlines()[-1]}"
                    ),
                )
                control.closeAfterReplies("server refused the session")
                return None
            control.security.upstreamName = destination.host

            def login(_: object) -> None:
                control.upstreamReady = True
                control.upstreamUp()
                control.user = name
                control.sendToServer(Command("USER", name), slot, None)

            securing = control.security.secureUpstreamIfWanted()
            securing.addCallbacks(login, control.upstreamUnreachable, errbackArgs=(slot,))
            return securing

        def unresolved(failure: Failure) -> None:
            control.replies.complete(slot, formatReply(530, f"cannot resolve {destination.host}"))

        lookup = control.session.resolveHost(destination.host)
        lookup.addCallbacks(resolved, unresolved)
        return lookup
