"""Tiny ASGI apps whose misbehaviour the tests control: exit, hang, block, fail to start."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


async def _reply(send: Send, status: int, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": body})


async def _lifespan(receive: Receive, send: Send, fail: bool) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.failed" if fail else "lifespan.startup.complete", "message": "boom"})
        elif message["type"] == "lifespan.shutdown":
            marker = os.environ.get("TEST_SHUTDOWN_MARKER")
            if marker:  # the app's shutdown ran: it would dispose of its engine here
                with open(marker, "a") as file:
                    file.write(f"{os.getpid()}\n")
            await send({"type": "lifespan.shutdown.complete"})
            return


READ_BODIES = [0]  # requests whose body this worker's app read


async def controllable(scope: Scope, receive: Receive, send: Send) -> None:
    """/api/exit/N exits with N; /api/slow/S answers after S seconds; /api/block blocks the loop;
    /api/orphan leaves an orphan behind and answers with its pid."""
    if scope["type"] == "lifespan":
        return await _lifespan(receive, send, fail=False)
    path: str = scope["path"]
    if path.startswith("/api/exit/"):
        await _reply(send, 200, b"bye")
        asyncio.get_running_loop().call_later(0.05, os._exit, int(path.rsplit("/", 1)[1]))
    elif path.startswith("/api/slow/"):
        await asyncio.sleep(float(path.rsplit("/", 1)[1]))
        await _reply(send, 200, b"slow done")
    elif path == "/api/block":
        await _reply(send, 200, b"blocking")
        asyncio.get_running_loop().call_soon(time.sleep, 3600)
    elif path == "/api/orphan":
        # sh exits at once; its background sleep is orphaned and re-parented to the launcher.
        out = subprocess.run(["sh", "-c", "sleep 0.5 & echo $!"], capture_output=True, text=True).stdout
        await _reply(send, 200, out.strip().encode())
    elif path == "/api/ppid":
        await _reply(send, 200, str(os.getppid()).encode())
    elif path == "/api/pid":
        await _reply(send, 200, str(os.getpid()).encode())
    elif path == "/api/upload":
        while (message := await receive())["type"] == "http.request" and message.get("more_body"):
            pass
        if message["type"] == "http.disconnect":
            return  # refused midway: the body was never whole
        READ_BODIES[0] += 1
        await _reply(send, 200, b"read")
    elif path == "/api/read-bodies":
        await _reply(send, 200, str(READ_BODIES[0]).encode())
    elif path.endswith("/api/runtime"):  # under a root_path too
        loop = type(asyncio.get_running_loop())
        facts = {
            "loop": f"{loop.__module__}.{loop.__name__}",
            "httptools": "httptools" in sys.modules,
            "root_path": scope.get("root_path", ""),
            "client": (scope.get("client") or ["", 0])[0],
        }
        await _reply(send, 200, json.dumps(facts).encode())
    else:
        await _reply(send, 200, b"ok")


async def broken(scope: Scope, receive: Receive, send: Send) -> None:
    """Fails at startup, as an app with a bad import or a failing lifespan does (uvicorn exits 3)."""
    if scope["type"] == "lifespan":
        return await _lifespan(receive, send, fail=True)
    await _reply(send, 500, b"never")


def _real_api_with_exit() -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    from api.main import create_app

    inner = create_app()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        """The real API, plus /__exit/N so a test can make the child exit on its own."""
        if scope["type"] == "http" and scope["path"].startswith("/__exit/"):
            await _reply(send, 200, b"bye")
            asyncio.get_running_loop().call_later(0.05, os._exit, int(scope["path"].rsplit("/", 1)[1]))
            return
        await inner(scope, receive, send)

    return app


def __getattr__(name: str) -> object:
    """`tests.apps:api_with_exit` builds the real app only in the child that asks for it."""
    if name == "api_with_exit":
        return _real_api_with_exit()
    raise AttributeError(name)
