"""While no worker serves, answer on the held socket: 503, the reason, Retry-After.

A client then gets a fast, honest answer instead of a refused connection or a hang
in the backlog. Every connection is bounded in size and time, and the number of
connections is capped below the descriptor limit; at the cap the oldest connection
that has not finished its request head makes room for the newest, so no number of
idle, half-sent or churning connections can shut a real client out. When the
descriptor table is full all the same, a reserve descriptor lets the launcher accept
and close (nginx's trick) instead of spinning on a listener that stays readable.
"""

from __future__ import annotations

import errno
import os
import re
import resource
import select
import socket
from collections.abc import Callable

from launcher.supervisor.loop import Loop, Timer

HEAD_LIMIT = 8192
READ_TIMEOUT = 2.0
LINGER_TIMEOUT = 1.0
MAX_CONNECTIONS = 256
ACCEPT_BATCH = 128  # connections accepted per wake-up, so signals and timers still get their turn
ACCEPT_PAUSE = 0.1  # when even the reserve descriptor cannot be had
FD_LOG_EVERY = 30.0
# A request line starts with a method token; anything else (TLS, SSH, binary) is closed at once.
_METHOD_START = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ")
_REQUEST_LINE = re.compile(rb"[A-Z]+ [\x21-\xff]+ HTTP/\d\.\d\r?")
_OUT_OF_FDS = (errno.EMFILE, errno.ENFILE)
_OUT_OF_MEMORY = (errno.ENOBUFS, errno.ENOMEM)


def response(page: tuple[str, bytes], retry_after: int) -> bytes:
    content_type, body = page
    head = (
        "HTTP/1.1 503 Service Unavailable\r\n"
        f"Content-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"Retry-After: {retry_after}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode() + body


def connection_cap() -> int:
    """A quarter of the descriptor limit, at most MAX_CONNECTIONS: the rest stays free for
    the probe, the children's pipes and the reserve."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    limit = soft if soft != resource.RLIM_INFINITY else MAX_CONNECTIONS * 4
    return max(4, min(MAX_CONNECTIONS, limit // 4))


def head_complete(head: bytes) -> bool:
    """A blank line ends the head; RFC 9112 §2.2 lets a line end in a bare LF."""
    return b"\n\r\n" in head or b"\n\n" in head


class _Client:
    """One connection: read the request head, answer, then read until the client closes."""

    __slots__ = ("owner", "conn", "head", "timer")

    def __init__(self, owner: Unavailable, conn: socket.socket) -> None:
        self.owner = owner
        self.conn = conn
        self.head: bytes | None = b""  # None once answered
        self.timer: Timer = owner.loop.call_later(READ_TIMEOUT, self.close)
        owner.loop.add_reader(conn, self.on_readable)

    @property
    def answered(self) -> bool:
        return self.head is None

    def on_readable(self) -> None:
        try:
            data = self.conn.recv(65536 if self.answered else HEAD_LIMIT)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self.close()
        elif self.head is not None:
            self.read_head(self.head + data)
        # Once answered, what the client still sends (a request body) is read and dropped:
        # closing with unread data makes the kernel send RST, and the client would lose the answer.

    def read_head(self, head: bytes) -> None:
        """`head`: all of the request head read so far."""
        if head[0] not in _METHOD_START:
            self.close()
            return
        self.head = head
        line, newline, _ = head.partition(b"\n")
        if newline and not _REQUEST_LINE.fullmatch(line):
            self.close()
            return
        if not head_complete(self.head):
            if len(self.head) >= HEAD_LIMIT:
                self.close()
            return
        answer = response(self.owner.page(), self.owner.retry_after)
        try:
            sent = self.conn.send(answer)  # a fresh socket's buffer holds it whole
            self.conn.shutdown(socket.SHUT_WR)
        except OSError:
            sent = 0
        if sent != len(answer):
            self.close()
            return
        self.head = None
        self.owner.answered(self)
        self.owner.answered_one()
        self.timer.cancel()
        self.timer = self.owner.loop.call_later(LINGER_TIMEOUT, self.close)

    def close(self) -> None:
        self.timer.cancel()
        self.owner.loop.remove_reader(self.conn)
        self.conn.close()
        self.owner.forget(self)


class Unavailable:
    """Accepts on a dup of the held socket while switched on; switching is synchronous,
    so the launcher stops accepting in the same loop turn in which it starts a worker."""

    def __init__(
        self,
        loop: Loop,
        listener: socket.socket,
        page: Callable[[], tuple[str, bytes]],
        warn: Callable[[str], None] = lambda message: None,
        retry_after: int = 1,
        answered_one: Callable[[], None] = lambda: None,
    ) -> None:
        self.loop = loop
        self.page = page  # (content type, body)
        self.answered_one = answered_one  # told of each 503: the shell hurries the DB probe
        self.retry_after = retry_after
        self.cap = connection_cap()
        # Insertion-ordered: the first is the oldest, the first to make room.
        self.reading: dict[_Client, None] = {}
        self.lingering: dict[_Client, None] = {}
        self._warn = warn
        self._sock = listener.dup()
        self._sock.setblocking(False)
        self._on = False
        self._paused: Timer | None = None
        self._reserve: int | None = _open_reserve()
        self._fd_warned_at: float | None = None
        self._shed = 0

    def connections(self) -> int:
        return len(self.reading) + len(self.lingering)

    def set(self, on: bool) -> None:
        if on == self._on:
            return
        self._on = on
        if self._paused is not None:
            self._paused.cancel()
            self._paused = None
        if on:
            self.loop.add_reader(self._sock, self._accept)
        else:
            self.loop.remove_reader(self._sock)

    def drain(self, timeout: float) -> None:
        """Answer every connection already queued on the socket before it closes: the
        kernel would reset them at close, though their clients believe they are connected."""
        self.set(True)
        self._accept()
        self.loop.run(
            until=lambda: not self.connections() and not _queued(self._sock), deadline=self.loop.time() + timeout
        )
        self.set(False)

    def close(self) -> None:
        self.set(False)
        for client in [*self.reading, *self.lingering]:
            client.close()
        self._sock.close()
        if self._reserve is not None:
            os.close(self._reserve)
            self._reserve = None

    def answered(self, client: _Client) -> None:
        self.reading.pop(client, None)
        self.lingering[client] = None

    def forget(self, client: _Client) -> None:
        self.reading.pop(client, None)
        self.lingering.pop(client, None)

    def _accept(self) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                conn, _ = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return  # the queue is empty, or a worker took it first
            except OSError as err:
                if err.errno in _OUT_OF_FDS and self._free_a_descriptor(err):
                    continue
                if err.errno in _OUT_OF_FDS or err.errno in _OUT_OF_MEMORY:
                    self._pause()
                    return
                continue  # a connection that failed while queued (ECONNABORTED, EPROTO): the next one
            if self.connections() >= self.cap:
                self._make_room()
            conn.setblocking(False)
            client = _Client(self, conn)
            self.reading[client] = None
            client.on_readable()  # a client sends its request with the connect: answer it now

    def _make_room(self) -> None:
        oldest = next(iter(self.reading or self.lingering), None)
        if oldest is not None:
            oldest.close()

    def _free_a_descriptor(self, err: OSError) -> bool:
        """Make room in a full descriptor table and say whether to accept again: the oldest
        connection goes first, else the reserve takes the queued connection and closes it."""
        self._report_fd_shortage(err)
        if self.reading or self.lingering:
            self._make_room()
            return True
        if self._reserve is None:
            self._reserve = _open_reserve()
            return False
        os.close(self._reserve)
        try:
            self._sock.accept()[0].close()
            self._shed += 1
        except OSError:
            pass
        self._reserve = _open_reserve()
        return self._reserve is not None

    def _report_fd_shortage(self, err: OSError) -> None:
        now = self.loop.time()
        if self._fd_warned_at is not None and now - self._fd_warned_at < FD_LOG_EVERY:
            return
        self._fd_warned_at = now
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        self._warn(
            f"cannot accept connections: {err.strerror} (limit {soft} descriptors, "
            f"{self._shed} connections closed unanswered so far); raise the limit (ulimit -n, "
            "docker run --ulimit nofile=...) or find what holds the descriptors"
        )

    def _pause(self) -> None:
        """Stop polling the listener for a moment: it stays readable while the accept fails."""
        if self._paused is not None or not self._on:
            return
        self.loop.remove_reader(self._sock)
        self._paused = self.loop.call_later(ACCEPT_PAUSE, self._resume)

    def _resume(self) -> None:
        self._paused = None
        if self._on:
            self.loop.add_reader(self._sock, self._accept)


def _open_reserve() -> int | None:
    try:
        return os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None


def _queued(sock: socket.socket) -> bool:
    """Whether a connection waits in the accept queue (a listening socket polls readable)."""
    return bool(select.select([sock], [], [], 0)[0])
