"""While no child serves, answer on the held socket: 503, a JSON reason, Retry-After.

A client then gets a fast, honest answer instead of a refused connection or a hang
in the backlog. Reads are bounded in size and time and connections are capped,
so garbage, half-sent requests and idle sockets cannot exhaust the launcher.
"""
from __future__ import annotations

import json
import select
import socket
from typing import Callable

from launcher.loop import Loop, Timer

HEAD_LIMIT = 8192
READ_TIMEOUT = 2.0
LINGER_TIMEOUT = 1.0
MAX_CONNECTIONS = 256


def response(reason: str, retry_after: int) -> bytes:
    body = json.dumps({"status": "unavailable", "detail": reason}).encode()
    head = (
        "HTTP/1.1 503 Service Unavailable\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"Retry-After: {retry_after}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode() + body


class _Client:
    """One connection: read the request head, answer, then read until the client closes."""

    def __init__(self, owner: Unavailable, conn: socket.socket) -> None:
        self.owner = owner
        self.conn = conn
        self.head = b""
        self.answered = False
        self.timer: Timer = owner.loop.call_later(READ_TIMEOUT, self.close)
        owner.loop.add_reader(conn, self.on_readable)

    def on_readable(self) -> None:
        try:
            data = self.conn.recv(65536 if self.answered else HEAD_LIMIT)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self.close()
        elif not self.answered:
            self.read_head(data)
        # Once answered, what the client still sends (a request body) is read and dropped:
        # closing with unread data makes the kernel send RST, and the client would lose the answer.

    def read_head(self, data: bytes) -> None:
        self.head += data
        if b"\r\n\r\n" not in self.head:
            if len(self.head) >= HEAD_LIMIT:
                self.close()
            return
        answer = response(self.owner.reason(), self.owner.retry_after)
        try:
            sent = self.conn.send(answer)  # a fresh socket's buffer holds it whole
            self.conn.shutdown(socket.SHUT_WR)
        except OSError:
            sent = 0
        if sent != len(answer):
            self.close()
            return
        self.answered = True
        self.timer.cancel()
        self.timer = self.owner.loop.call_later(LINGER_TIMEOUT, self.close)

    def close(self) -> None:
        self.timer.cancel()
        self.owner.loop.remove_reader(self.conn)
        self.conn.close()
        self.owner.clients.discard(self)


class Unavailable:
    """Accepts on a dup of the held socket while switched on; switching is synchronous,
    so the launcher stops accepting in the same loop turn in which it starts a child."""

    def __init__(self, loop: Loop, listener: socket.socket, reason: Callable[[], str], retry_after: int = 1) -> None:
        self.loop = loop
        self.reason = reason
        self.retry_after = retry_after
        self.clients: set[_Client] = set()
        self._sock = listener.dup()
        self._sock.setblocking(False)
        self._on = False

    def set(self, on: bool) -> None:
        if on == self._on:
            return
        if on:
            self.loop.add_reader(self._sock, self._accept)
        else:
            self.loop.remove_reader(self._sock)
        self._on = on

    def drain(self, timeout: float) -> None:
        """Answer every connection already queued on the socket before it closes: the
        kernel would reset them at close, though their clients believe they are connected."""
        self.set(True)
        self._accept()
        self.loop.run(until=lambda: not self.clients and not _queued(self._sock),
                      deadline=self.loop.time() + timeout)
        self.set(False)

    def close(self) -> None:
        self.set(False)
        for client in list(self.clients):
            client.close()
        self._sock.close()

    def _accept(self) -> None:
        try:
            conn, _ = self._sock.accept()
        except (BlockingIOError, InterruptedError):
            return  # a child took it first
        except OSError:
            return  # out of fds or similar: the connection stays in the backlog
        if len(self.clients) >= MAX_CONNECTIONS:
            conn.close()
            return
        conn.setblocking(False)
        self.clients.add(_Client(self, conn))


def _queued(sock: socket.socket) -> bool:
    """Whether a connection waits in the accept queue (a listening socket polls readable)."""
    return bool(select.select([sock], [], [], 0)[0])
