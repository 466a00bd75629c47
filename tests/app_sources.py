"""The source of tiny ASGI app modules that tests (and the bench) write into a folder of their
own, to change on disk under a running launcher: the lifespan protocol answered, then
`handler`, the code that answers a request (`scope`, `receive`, `send` in scope)."""

from __future__ import annotations

import textwrap

MODULE = """{header}
async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            await send({{"type": message["type"] + ".complete"}})
            if message["type"] == "lifespan.shutdown":
                return
{handler}
"""


def module(handler: str, header: str = "") -> str:
    return MODULE.format(header=header, handler=textwrap.indent(textwrap.dedent(handler).strip(), "    "))


def answering(body: str, status: str = "200", header: str = "") -> str:
    """An app that answers every request `status` with `body` (both Python expressions)."""
    return module(
        f"""
        await send({{"type": "http.response.start", "status": {status}, "headers": []}})
        await send({{"type": "http.response.body", "body": {body}}})
        """,
        header,
    )


def versioned(version: str) -> str:
    """An app that answers its version: a deploy is seen when the answer changes."""
    return answering(repr(version.encode()))
