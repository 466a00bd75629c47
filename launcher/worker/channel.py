"""A worker's end of its private channel to the launcher (launcher/wire.py).

The worker says its pid as soon as it exists (its template may die before it could), says
when it serves or why its startup failed, and answers the launcher's pings from its event
loop itself: liveness proves that the loop makes progress, and no middleware, route, host
check or saturated thread pool of the app's can fail it. An app-level check (`check`) goes
through the app in process and is logged like any request. When the launcher is gone (the
channel closes), the worker stops: nothing is left serving unsupervised.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable
from typing import Any

from launcher import wire

CHECK_TIMEOUT = 10.0


class Channel:
    def __init__(self, fd: int) -> None:
        self.sock = socket.socket(fileno=fd)
        self.tasks: set[asyncio.Task[None]] = set()

    def hello(self) -> None:
        self.send(wire.encode("pid", os.getpid(), wire.start_time()))

    def serving(self) -> None:
        self.send(wire.encode("serving"))

    def failed(self, text: str) -> None:
        self.send(wire.encode("failed", text or "the app's startup failed"))

    def send(self, data: bytes) -> None:
        try:
            self.sock.send(data)
        except OSError:
            pass  # the launcher is gone or not reading: nothing to tell

    def attach(self, app: Any, state: dict[str, Any], root_path: str, on_close: Callable[[], None]) -> None:
        """Answer the launcher from this worker's running event loop."""
        self.sock.setblocking(False)
        self.app, self.state, self.root_path, self.on_close = app, state, root_path, on_close
        asyncio.get_running_loop().add_reader(self.sock.fileno(), self.on_readable)

    def on_readable(self) -> None:
        try:
            message, fds, closed = wire.receive(self.sock)
        except BlockingIOError:
            return
        except OSError:
            message, fds, closed = None, [], True
        for fd in fds:
            os.close(fd)
        if closed:
            asyncio.get_running_loop().remove_reader(self.sock.fileno())
            self.on_close()
        elif message is not None and message.kind == "ping":
            self.send(wire.encode("pong", message.words[0]))
        elif message is not None and message.kind == "check":
            task = asyncio.get_running_loop().create_task(self.check(message.number(0), message.words[1]))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def check(self, number: int, path: str) -> None:
        try:
            status = await asyncio.wait_for(get(self.app, path, self.state, self.root_path), CHECK_TIMEOUT)
        except Exception:  # the app's own failure, or no answer in time: the launcher hears 0
            status = 0
        logging.getLogger("uvicorn.access").info('%s - "%s %s HTTP/%s" %d', "launcher", "GET", path, "1.1", status)
        self.send(wire.encode("checked", number, status))


async def get(app: Any, path: str, state: dict[str, Any], root_path: str) -> int:
    """GET `path` through the app, in process; the status it answered."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": root_path,
        "headers": [(b"host", b"localhost"), (b"user-agent", b"launcher")],
        "client": ("launcher", 0),
        "server": None,
        "state": dict(state),
    }
    status = 0
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.Event().wait()  # the check never disconnects: the app's answer ends it
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = int(message["status"])

    await app(scope, receive, send)
    return status
