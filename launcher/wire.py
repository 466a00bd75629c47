"""The launcher's private wire format, the one place it is spelled out; the supervisor, the
template and the workers all import it, and it imports only the standard library.

Two kinds of channel, each a SOCK_SEQPACKET socketpair, so nobody else can name, take or
reach them (no path, no abstract name) and each message arrives whole:

    launcher <-> template (control)
      -> fork <name>            + the worker's channel end    fork a worker
      -> run <name> <module> <args>...  + the step's channel end   run `python -m module` forked
      <- warm <digest>                                         the app is imported; forks are safe
      <- cold <digest> <why>                                   imported, but threads make forks unsafe
      <- failed <text>                                         the app does not import (the traceback)

    launcher <-> worker or forked step (channel)
      <- pid <pid> <start>      the process says who it is (start: /proc/<pid>/stat's starttime)
      <- serving                uvicorn's startup is complete
      <- failed <text>          the startup failed (the app's error)
      -> ping <n>               answered by the worker's event loop itself:
      <- pong <n>               liveness proves the loop makes progress, past any middleware
      -> check <n> <path>       GET <path> through the app, in process (app check, warm-up)
      <- checked <n> <status>   the status, or 0 when it failed or timed out

Words are UTF-8, NUL-separated; a message that is truncated, not UTF-8, of an unknown kind
or with the wrong number of words decodes to None, and the receiver drops it.
"""

from __future__ import annotations

import array
import os
import socket
from dataclasses import dataclass

MAX_MESSAGE = 65536  # a traceback is cut to fit
MAX_TEXT = MAX_MESSAGE - 64
CLOEXEC = getattr(socket, "MSG_CMSG_CLOEXEC", 0)  # received descriptors must not leak into an exec

# kind -> (fewest, most) words after it; which words must be whole numbers
_SHAPES: dict[str, tuple[int, int, tuple[int, ...]]] = {
    "fork": (1, 1, ()),
    "run": (2, 256, ()),
    "warm": (1, 1, ()),
    "cold": (2, 2, ()),
    "failed": (1, 1, ()),
    "pid": (2, 2, (0, 1)),
    "serving": (0, 0, ()),
    "ping": (1, 1, (0,)),
    "pong": (1, 1, (0,)),
    "check": (2, 2, (0,)),
    "checked": (2, 2, (0, 1)),
}


@dataclass(frozen=True)
class Message:
    kind: str
    words: tuple[str, ...] = ()

    def number(self, index: int) -> int:
        return int(self.words[index])


def encode(kind: str, *words: object) -> bytes:
    """One message; a word may hold anything but NUL. A long last word (a traceback) is cut."""
    shape = _SHAPES[kind]
    texts = [str(word).replace("\0", " ") for word in words]
    if not shape[0] <= len(texts) <= shape[1]:
        raise ValueError(f"{kind} takes {shape[0]}..{shape[1]} words, got {len(texts)}")
    data = "\0".join([kind, *texts]).encode("utf-8", "replace")
    return data if len(data) <= MAX_MESSAGE else data[:MAX_TEXT].decode("utf-8", "ignore").encode() + b"\n[cut]"


def decode(data: bytes) -> Message | None:
    """The message, or None for anything that is not one (garbage is dropped, never raised)."""
    try:
        kind, *words = data.decode("utf-8").split("\0")
    except UnicodeDecodeError:
        return None
    shape = _SHAPES.get(kind)
    if shape is None or not shape[0] <= len(words) <= shape[1]:
        return None
    if any(not words[i].isascii() or not words[i].isdigit() for i in shape[2]):
        return None
    return Message(kind, tuple(words))


def receive(sock: socket.socket, max_fds: int = 0) -> tuple[Message | None, list[int], bool]:
    """(message or None, descriptors received, closed). Raises BlockingIOError when there is
    nothing to read on a non-blocking socket. Descriptors come close-on-exec; a truncated
    message is dropped with its descriptors closed."""
    size = socket.CMSG_SPACE(max_fds * 4) if max_fds else 0
    data, ancillary, flags, _ = sock.recvmsg(MAX_MESSAGE, size, CLOEXEC)
    fds = [
        fd
        for level, kind, payload in ancillary
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS
        for fd in _fds(payload)
    ]
    if not data and not fds:
        return None, [], True
    if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
        for fd in fds:
            os.close(fd)
        return None, [], False
    return decode(data), fds, False


def _fds(payload: bytes) -> list[int]:
    fds = array.array("i")
    fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
    return list(fds)


def send(sock: socket.socket, data: bytes, fds: list[int] | None = None) -> None:
    """One message, with descriptors to hand over."""
    if fds:
        socket.send_fds(sock, [data], fds)
    else:
        sock.send(data)


def start_time(pid: int | str = "self") -> int:
    """The kernel's start time of a process (clock ticks after boot): with its pid, it names
    one process for good, where a pid alone is reused. 0 when it cannot be read."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return int(stat.read().rsplit(b")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return 0
