"""Command and parseCommand: FTP commands as sent by a client, checked and re-encodable."""

from __future__ import annotations

import re
from dataclasses import dataclass

#: The encoding of command arguments.  Latin-1 maps each byte to one character, so every
#: argument decodes and re-encodes to the same bytes, lengths in characters are lengths
#: in bytes, and no undecodable byte ever reaches a log.  A UTF-8 path (RFC 2640) shows up
#: as one character per byte; C{argument.encode(ENCODING)} gives its bytes back.
ENCODING = "latin-1"

_VERB = re.compile(r"[A-Za-z]{3,4}\Z")
# C0 controls and DEL, except TAB: a CR could be taken as a line end by the server and
# smuggle a second command past the filter; TAB cannot, and does occur in file names.
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")

_IAC = 0xFF
_DM = 0xF2
_WILL = 0xFB


class CommandError(ValueError):
    """A client line is not an FTP command; the message says why.

    C{replyCode} is what to answer: 500 for a bad line or verb, 501 for a bad argument.
    """

    def __init__(self, message: str, replyCode: int = 500) -> None:
        super().__init__(message)
        self.replyCode = replyCode


@dataclass(frozen=True)
class Command:
    """One FTP command: an uppercased verb and its argument (empty when there is none).

    The constructor checks both, so a L{Command} made by a filter is as safe to send
    as one parsed from a client.

    @raise CommandError: the verb is not 3-4 ASCII letters, or the argument holds a
        control character other than TAB, or a character outside latin-1.
    """

    verb: str
    argument: str = ""

    def __post_init__(self) -> None:
        if not _VERB.match(self.verb):
            raise CommandError(f"{self.verb[:20]!r} is not a command verb")
        if (control := _CONTROL.search(self.argument)) is not None:
            raise CommandError(
                f"control character {control.group()!r} in the argument of {self.verb.upper()}",
                501,
            )
        try:
            self.argument.encode(ENCODING)
        except UnicodeEncodeError:
            raise CommandError(
                f"argument of {self.verb.upper()} is not {ENCODING}-encodable", 501
            ) from None
        # Frozen: normalize through object.__setattr__ so Command("pasv") == Command("PASV").
        object.__setattr__(self, "verb", self.verb.upper())

    def toBytes(self) -> bytes:
        """The wire form: C{VERB CRLF}, or C{VERB SP argument CRLF}."""
        if not self.argument:
            return self.verb.encode("ascii") + b"\r\n"
        return self.verb.encode("ascii") + b" " + self.argument.encode(ENCODING) + b"\r\n"

    def __str__(self) -> str:
        # PASS arguments must not end up in logs.
        if self.verb == "PASS" and self.argument:
            return "PASS ****"
        return f"{self.verb} {self.argument}" if self.argument else self.verb


def stripTelnet(line: bytes) -> bytes:
    """Drop the Telnet commands some clients put in front of ABOR.

    BSD-derived clients send C{IAC IP}, then C{IAC DM} with the IAC as TCP urgent data.
    Unless the socket reads urgent data inline, that IAC never arrives, so a lone DM is
    dropped as well.  C{IAC WILL/WONT/DO/DONT option} is dropped whole.
    """
    index = 0
    while index < len(line):
        byte = line[index]
        if byte == _DM:
            index += 1
        elif byte == _IAC and index + 1 < len(line) and 0xF0 <= line[index + 1] < _IAC:
            index += 3 if line[index + 1] >= _WILL else 2
        else:
            break
    return line[index:]


def parseCommand(line: bytes) -> Command:
    """Parse one client line (terminator already removed, as L{LineReader} gives it).

    The verb ends at the first space; everything after that space is the argument,
    kept as is (a file name may begin or end with spaces).  A line that is only a verb
    and one space has an empty argument.

    @raise CommandError: an empty line, a bad verb or a control character.
    """
    line = stripTelnet(line)
    if not line:
        raise CommandError("empty command line")
    verb, _, argument = line.partition(b" ")
    return Command(verb.decode(ENCODING), argument.decode(ENCODING))
