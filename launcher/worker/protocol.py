"""uvicorn's httptools protocol with the bounds a server that sells availability needs.

uvicorn bounds none of these (measured against one worker, docs/design.md, Worker limits):
a request head may take forever and be of any size, a body is buffered whole however large,
pipelined requests queue without end, an idle connection is never closed until a first
request, and at the descriptor limit fresh clients are reset. Here:

- a request head must arrive within `head_timeout` and fit in `max_head_size` (else 408/431);
- a body larger than `max_body_size` is refused with 413 before the app reads it (at the
  head when Content-Length says so, else as soon as the count passes it);
- at most `limit_concurrency` requests are in flight per worker: past it, 503;
- at most PIPELINE_LIMIT pipelined requests wait behind the one in flight;
- connections are capped below the descriptor limit; at the cap the oldest connection with
  no request in flight makes room, so idle or half-sent connections cannot shut fresh
  clients out.

A refusal is answered with `Connection: close`, then the connection is read and dropped for
a moment before it closes: closing with unread data resets it, and the client would lose
the answer.
"""

from __future__ import annotations

import asyncio
import resource
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

PIPELINE_LIMIT = 64
LINGER = 1.0
FD_RESERVE = 64  # descriptors kept free for the app's own files, DB connections and logs
MESSAGES = {
    408: b"request head not received in time",
    413: b"request body too large",
    431: b"request head too large",
    503: b"too many requests in flight",
}


@dataclass
class Limits:
    head_timeout: float
    max_head_size: int
    max_body_size: int
    limit_concurrency: int
    max_connections: int  # 0: from the descriptor limit
    open: OrderedDict[Any, None] = field(default_factory=OrderedDict)  # oldest first

    def connection_cap(self) -> int:
        if self.max_connections:
            return self.max_connections
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        return max(16, (soft if soft != resource.RLIM_INFINITY else 1 << 20) - FD_RESERVE)


def guarded_protocol(limits: Limits) -> type[asyncio.Protocol]:
    """The protocol class for uvicorn's Config(http=...), bound to this worker's limits."""
    return type("GuardedHttpTools", (GuardedHttpTools,), {"limits": limits})


class GuardedHttpTools(HttpToolsProtocol):
    limits: Limits

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limit_concurrency = None  # counted here, on requests in flight rather than connections
        self.head_bytes = 0  # read since the last head completed, while the next one is still incomplete
        self.head_size = 0  # the parsed head's target and headers
        self.heads = 0  # heads completed on this connection
        self.body_bytes = 0
        self.in_head = True
        self.refused = False
        self.head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        open_ = self.limits.open
        if len(open_) >= self.limits.connection_cap():
            idle = next((c for c in open_ if c.idle()), None)
            if idle is None:
                self.refuse(503)
                return
            idle.transport.close()
            open_.pop(idle, None)
        open_[self] = None
        self.arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self.limits.open.pop(self, None)
        self.cancel_head_timer()
        super().connection_lost(exc)

    def idle(self) -> bool:
        """No request in flight: nothing is lost when the connection goes."""
        return self.cycle is None or self.cycle.response_complete

    def data_received(self, data: bytes) -> None:
        """A head still incomplete after this read counts the read against max_head_size (a
        slowloris of one endless header line never reaches a parser callback); a head that
        completes is measured exactly, from its target and headers, in on_headers_complete."""
        if self.refused:
            return  # read and dropped while the refusal lingers
        heads = self.heads
        super().data_received(data)
        if self.refused or not self.in_head:
            return
        self.head_bytes = 0 if self.heads != heads else self.head_bytes + len(data)
        if self.head_bytes > self.limits.max_head_size:
            self.refuse(431)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.in_head, self.body_bytes, self.head_size = True, 0, 0
        if self.head_timer is None:
            self.arm_head_timer()

    def on_url(self, url: bytes) -> None:
        self.head_size += len(url)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.head_size += len(name) + len(value) + 4
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self.in_head, self.head_bytes = False, 0
        self.heads += 1
        self.cancel_head_timer()
        if self.refused:
            return
        if self.head_size > self.limits.max_head_size:
            self.refuse(431)
            return
        if len(self.pipeline) >= PIPELINE_LIMIT:
            self.transport.close()
            self.refused = True
            return
        length = next((value for name, value in self.headers if name == b"content-length"), b"0")
        if length.isdigit() and int(length) > self.limits.max_body_size:
            self.refuse(413)
        elif len(self.tasks) >= self.limits.limit_concurrency:
            self.logger.warning("%d requests in flight: answering 503", len(self.tasks))
            self.refuse(503)
        else:
            super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if self.refused:
            return
        self.body_bytes += len(body)
        if self.body_bytes > self.limits.max_body_size:
            self.refuse(413, current=True)
            return
        super().on_body(body)

    def on_message_complete(self) -> None:
        if not self.refused:
            super().on_message_complete()

    def arm_head_timer(self) -> None:
        self.head_timer = self.loop.call_later(self.limits.head_timeout, self.refuse, 408)

    def cancel_head_timer(self) -> None:
        if self.head_timer is not None:
            self.head_timer.cancel()
            self.head_timer = None

    def refuse(self, status: int, current: bool = False) -> None:
        """Answer `status` and close. `current`: the request refused is the one in `self.cycle`
        (its body was too large): its app gets a disconnect and its answer is this one. With
        another request's answer under way (pipelining) there is no room for one: just close."""
        self.cancel_head_timer()
        self.refused = True
        self.limits.open.pop(self, None)
        cycle = self.cycle
        if self.transport.is_closing():
            return
        if cycle is not None and not cycle.response_complete:
            if not current or cycle.response_started:
                self.transport.close()
                return
            cycle.disconnected = True
            cycle.message_event.set()
        body = MESSAGES[status]
        self.transport.write(
            STATUS_LINE[status]
            + b"content-type: text/plain; charset=utf-8\r\ncontent-length: "
            + str(len(body)).encode()
            + b"\r\nconnection: close\r\n"
            + (b"retry-after: 1\r\n" if status == 503 else b"")
            + b"\r\n"
            + body
        )
        if self.transport.can_write_eof():
            self.transport.write_eof()
            self.loop.call_later(LINGER, self.transport.close)
        else:
            self.transport.close()
