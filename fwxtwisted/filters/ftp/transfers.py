"""Transfer: one data transfer's record, logged once as a structured event."""

from __future__ import annotations

from dataclasses import dataclass, field

from twisted.logger import Logger

from fwxtwisted.interfaces import IFirewallAction

log = Logger(namespace="fwxtwisted.ftp.transfer")

DIRECTIONS = {
    "RETR": "download",
    "STOR": "upload",
    "STOU": "upload",
    "APPE": "upload",
    "LIST": "listing",
    "NLST": "listing",
    "MLSD": "listing",
}


@dataclass
class Transfer:
    """A transfer command and what became of its data connection.

    It is logged when both its final reply and the end of its data connection are
    known (or at once when no data connection was ever made).
    """

    sessionId: str
    command: str
    path: str
    client: str
    user: str | None
    server: str | None
    external: str | None
    started: float
    action: IFirewallAction | None = None
    established: bool = False
    dataClosed: bool = False
    bytes: int = 0
    result: str | None = None
    ended: float | None = None
    logged: bool = field(default=False)

    @property
    def direction(self) -> str:
        """download, upload or listing."""
        return DIRECTIONS.get(self.command, "other")

    def ready(self) -> bool:
        """True when everything to log is known."""
        return self.result is not None and (self.dataClosed or not self.established)

    def emit(self, now: float) -> None:
        """Log the transfer once, as one structured event."""
        if self.logged:
            return
        self.logged = True
        duration = max(0.0, (self.ended or now) - self.started)
        log.info(
            "{session}: ftp {direction} {path!r} {bytes} bytes in {duration:.3f} s: "
            "{result} (client {client}, user {user}, server {server}, from {external})",
            fwx_event="ftp.transfer",
            session=self.sessionId,
            client=self.client,
            user=self.user,
            server=self.server,
            external=self.external,
            path=self.path,
            command=self.command,
            direction=self.direction,
            bytes=self.bytes,
            duration=duration,
            result=self.result,
        )
