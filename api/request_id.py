"""Request ids: an incoming X-Request-ID is kept when it is sane, else replaced; it is echoed in
the response and carried in the app's log lines, so one request can be followed across a
proxy, the app and its logs.

A plain ASGI middleware (not BaseHTTPMiddleware), so streaming responses and the request's
task are untouched. An id is sane when it is 1 to 128 characters of letters, digits and
`-_.:`: anything else (too long, control characters, a header injection attempt) is
replaced, never echoed.
"""

from __future__ import annotations

import contextvars
import logging
import re
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

HEADER = b"x-request-id"
SANE = re.compile(rb"[A-Za-z0-9._:-]{1,128}")
current: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]


def request_id(headers: list[tuple[bytes, bytes]]) -> str:
    given = next((value for name, value in headers if name.lower() == HEADER), b"")
    return given.decode("ascii") if SANE.fullmatch(given) else uuid.uuid4().hex


class RequestIdMiddleware:
    def __init__(self, app: App) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = request_id(scope.get("headers", []))
        token = current.set(rid)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(n, v) for n, v in message.get("headers", []) if n.lower() != HEADER]
                message["headers"] = [*headers, (HEADER, rid.encode("ascii"))]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            current.reset(token)


class RequestIdFilter(logging.Filter):
    """Gives every record of the app's loggers the id of the request it was logged in."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = current.get()
        return True


def configure_logging() -> logging.Logger:
    """The app's logger: one line each, with the request id."""
    logger = logging.getLogger("api")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.addFilter(RequestIdFilter())
        handler.setFormatter(logging.Formatter("%(levelname)s api [request %(request_id)s] %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    return logger
