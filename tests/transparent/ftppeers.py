"""An FTP client of the namespace tests that looks at data ports itself, run inside
the client namespace by path (no project imports).

ftppeers.py once HOST PORT   log in, PASV, open the offered data port twice (the
                             second after 1 s); prints a JSON line
ftppeers.py hold HOST PORT   log in, PASV, print "held", keep the session 60 s
"""

from __future__ import annotations

import json
import re
import socket
import sys
import time


class Control:
    def __init__(self, host: str, port: int) -> None:
        self.socket = socket.create_connection((host, port), timeout=5)
        self.lines = self.socket.makefile("rb")
        self.reply()

    def reply(self) -> str:
        first = self.lines.readline().decode()
        line = first
        while not (line[:3] == first[:3] and line[3:4] == " "):
            line = self.lines.readline().decode()
            if not line:
                raise EOFError("control connection closed")
        return line.strip()

    def command(self, text: str) -> str:
        self.socket.sendall(text.encode() + b"\r\n")
        return self.reply()

    def passive(self) -> tuple[str, str, int]:
        self.command("USER anonymous")
        self.command("PASS x")
        reply = self.command("PASV")
        numbers = [int(n) for n in re.findall(r"\d+", reply.split("(", 1)[1])[:6]]
        return reply, ".".join(map(str, numbers[:4])), numbers[4] * 256 + numbers[5]


def attempt(host: str, port: int) -> str:
    """open: a connection that stays up 1 s; timeout: no answer to the SYN in 3 s;
    reset or closed otherwise."""
    try:
        data = socket.create_connection((host, port), timeout=3)
    except TimeoutError:
        return "timeout"
    except OSError as e:
        return f"refused: {e}"
    data.settimeout(1)
    try:
        return "closed" if data.recv(1) == b"" else "open"
    except TimeoutError:
        return "open"
    except OSError:
        return "reset"
    finally:
        data.close()


def main(argv: list[str]) -> int:
    control = Control(argv[1], int(argv[2]))
    reply, host, port = control.passive()
    if argv[0] == "hold":
        print("held", flush=True)
        time.sleep(60)
        return 0
    first = attempt(host, port)
    time.sleep(1)
    second = attempt(host, port)
    print(json.dumps({"reply": reply, "first": first, "second": second}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
