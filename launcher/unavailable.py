"""While no child serves, answer on the held socket: 503, a JSON reason, Retry-After.

A client then gets a fast, honest answer instead of a refused connection or a hang
in the backlog. Reads are bounded in size and time and connections are capped,
so garbage, half-sent requests and idle sockets cannot exhaust the launcher.
"""
from __future__ import annotations

import asyncio
import json
import select
import socket
from typing import Callable

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


class Unavailable:
    """Accepts on a dup of the held socket while switched on; switching is synchronous,
    so the launcher stops accepting in the same loop turn in which it starts a child."""

    def __init__(self, listener: socket.socket, reason: Callable[[], str], retry_after: int = 1) -> None:
        self._sock = listener.dup()
        self._sock.setblocking(False)
        self._reason = reason
        self._retry_after = retry_after
        self._on = False
        self._open = 0
        self._tasks: set[asyncio.Task[None]] = set()

    def set(self, on: bool) -> None:
        if on == self._on:
            return
        loop = asyncio.get_running_loop()
        if on:
            loop.add_reader(self._sock.fileno(), self._accept)
        else:
            loop.remove_reader(self._sock.fileno())
        self._on = on

    async def drain(self, timeout: float) -> None:
        """Answer every connection already queued on the socket before it closes: the
        kernel would reset them at close, though their clients believe they are connected."""
        self.set(True)
        deadline = asyncio.get_running_loop().time() + timeout
        while asyncio.get_running_loop().time() < deadline:
            self._accept()
            if not self._tasks and not _queued(self._sock):
                break
            await asyncio.sleep(0.01)
        self.set(False)

    def close(self) -> None:
        self.set(False)
        self._sock.close()

    def _accept(self) -> None:
        try:
            conn, _ = self._sock.accept()
        except (BlockingIOError, InterruptedError):
            return  # a child took it first
        except OSError:
            return  # out of fds or similar: the connection stays in the backlog
        if self._open >= MAX_CONNECTIONS:
            conn.close()
            return
        task = asyncio.get_running_loop().create_task(self._answer(conn))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer(self, conn: socket.socket) -> None:
        self._open += 1
        writer = None
        try:
            reader, writer = await asyncio.open_connection(sock=conn, limit=HEAD_LIMIT)
            await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT)
            writer.write(response(self._reason(), self._retry_after))
            await asyncio.wait_for(writer.drain(), READ_TIMEOUT)
            writer.write_eof()
            # Read what the client still sends (a request body) before closing: closing with
            # unread data makes the kernel send RST, and the client would lose our answer.
            await asyncio.wait_for(_discard(reader), LINGER_TIMEOUT)
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            pass
        finally:
            self._open -= 1
            if writer is not None:
                writer.close()
            else:
                conn.close()


def _queued(sock: socket.socket) -> bool:
    """Whether a connection waits in the accept queue (a listening socket polls readable)."""
    return bool(select.select([sock], [], [], 0)[0])


async def _discard(reader: asyncio.StreamReader) -> None:
    while await reader.read(65536):
        pass
