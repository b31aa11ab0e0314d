"""Tests for fwxtwisted.filters.ftp.commands: parsing, validation, Telnet stripping."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fwxtwisted.filters.ftp.commands import Command, CommandError, parseCommand, stripTelnet


def test_verbAndArgument() -> None:
    assert parseCommand(b"RETR file.txt") == Command("RETR", "file.txt")


def test_verbOnly() -> None:
    assert parseCommand(b"PASV") == Command("PASV", "")


def test_verbIsUppercased() -> None:
    assert parseCommand(b"pasv").verb == "PASV"


def test_constructorUppercasesVerb() -> None:
    assert Command("noop") == Command("NOOP")


def test_threeLetterVerb() -> None:
    assert parseCommand(b"CWD /pub").verb == "CWD"


def test_argumentKeepsSpaces() -> None:
    assert parseCommand(b"STOR  two spaces ").argument == " two spaces "


def test_trailingSpaceGivesEmptyArgument() -> None:
    assert parseCommand(b"PWD ") == Command("PWD", "")


def test_tabAllowedInArgument() -> None:
    assert parseCommand(b"RETR a\tb").argument == "a\tb"


def test_highBytesDecodeAsLatin1() -> None:
    command = parseCommand("RETR é".encode())
    assert command.argument.encode("latin-1") == "é".encode()


def test_emptyLine() -> None:
    with pytest.raises(CommandError, match="empty"):
        parseCommand(b"")


@pytest.mark.parametrize("line", [b"AB", b"ABCDE", b"AB1", b"\xe9TAT x", b" NOOP", b"NO-OP"])
def test_badVerb(line: bytes) -> None:
    with pytest.raises(CommandError) as info:
        parseCommand(line)
    assert info.value.replyCode == 500


@pytest.mark.parametrize("control", [b"\r", b"\x01", b"\x1b", b"\x7f", b"\x00"])
def test_controlCharacterInArgument(control: bytes) -> None:
    with pytest.raises(CommandError, match="control character") as info:
        parseCommand(b"RETR a" + control + b"b")
    assert info.value.replyCode == 501


def test_crInsideVerbIsBadVerb() -> None:
    with pytest.raises(CommandError):
        parseCommand(b"NOOP\r")


def test_constructorRejectsCrlfInjection() -> None:
    with pytest.raises(CommandError):
        Command("RETR", "x\r\nDELE y")


def test_constructorRejectsNonLatin1() -> None:
    with pytest.raises(CommandError, match="latin-1"):
        Command("RETR", "\u20ac")


def test_toBytesWithArgument() -> None:
    assert Command("PORT", "1,2,3,4,5,6").toBytes() == b"PORT 1,2,3,4,5,6\r\n"


def test_toBytesWithoutArgument() -> None:
    assert Command("PASV").toBytes() == b"PASV\r\n"


def test_strHidesPassword() -> None:
    assert str(Command("PASS", "secret")) == "PASS ****"


def test_strShowsOtherCommands() -> None:
    assert str(Command("USER", "ftp")) == "USER ftp"


def test_abortWithInlineTelnetSynch() -> None:
    assert parseCommand(b"\xff\xf4\xff\xf2ABOR") == Command("ABOR")


def test_abortWithUrgentIacLost() -> None:
    # Without SO_OOBINLINE the urgent IAC is taken out of the stream; DM remains.
    assert parseCommand(b"\xff\xf4\xf2ABOR") == Command("ABOR")


def test_telnetNegotiationStripped() -> None:
    assert stripTelnet(b"\xff\xfd\x01NOOP") == b"NOOP"


def test_escapedIacIsNotStripped() -> None:
    assert stripTelnet(b"\xff\xffA") == b"\xff\xffA"


def test_onlyTelnetIsEmpty() -> None:
    with pytest.raises(CommandError, match="empty"):
        parseCommand(b"\xff\xf4\xff\xf2")


def test_telnetInArgumentIsKept() -> None:
    assert parseCommand(b"RETR \xff\xf4").argument == "\xff\xf4"


verbs = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=3, max_size=4)
arguments = st.binary(max_size=40).filter(
    lambda raw: not any(byte < 0x20 and byte != 0x09 or byte == 0x7F for byte in raw)
)


@settings(max_examples=300)
@given(verb=verbs, argument=arguments)
def test_toBytesRoundTrip(verb: str, argument: bytes) -> None:
    line = verb.encode() + (b" " + argument if argument else b"")
    assert parseCommand(line).toBytes() == line + b"\r\n"


@settings(max_examples=300)
@given(line=st.binary(max_size=40))
def test_randomLinesRaiseOnlyCommandError(line: bytes) -> None:
    try:
        command = parseCommand(line)
    except CommandError:
        return
    assert parseCommand(command.toBytes()[:-2]) == command
