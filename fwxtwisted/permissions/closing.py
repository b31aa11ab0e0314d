"""The one info line of a session, at its end (the C{session.closed} event)."""

from __future__ import annotations

from fwxtwisted.address import Address
from fwxtwisted.interfaces import ByteCounts
from fwxtwisted.logs import Logger

#: The session's own namespace: the line is the session's, wherever the code is.
log = Logger(namespace="fwxtwisted.permissions.session")

#: The text of the line; its fields are those of L{logSessionClosed}.
CLOSED_LINE = (
    "{session}: {client} to {server} from {external} (listener {listener}) closed "
    "({reason}) after {duration:.3f} s: {fromClient} bytes from client, "
    "{fromServer} from server"
)


def logSessionClosed(
    sessionId: str,
    client: Address,
    server: Address | None,
    external: str | None,
    listener: str | None,
    reason: str | None,
    duration: float,
    counts: ByteCounts,
) -> None:
    """Log who, where, how long, how much: the one event of a session at info level."""
    log.info(
        CLOSED_LINE,
        fwx_event="session.closed",
        session=sessionId,
        client=str(client),
        server=str(server) if server else "no upstream",
        external=external or "any",
        listener=listener or "-",
        reason=reason or "normal close",
        duration=duration,
        fromClient=counts.fromClient,
        fromServer=counts.fromServer,
    )
