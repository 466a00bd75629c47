"""The child's entry: uvicorn run programmatically on sockets the launcher hands over.

Running uvicorn from our own entry (not its CLI) lets the child serve the shared
public socket and a private one that only the launcher talks to (liveness), report
readiness on a pipe the instant uvicorn's startup completes, and park: import the
app first (the slow part), then wait on a go pipe, so the launcher can keep a warm
child ready while the DB is down. This module must stay light: it runs in every child.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import os
import socket
import sys

import uvicorn


ACCEPTED_GRACE = 0.2


class _HideLauncherChecks(logging.Filter):
    """Liveness checks come over the private unix socket, which has no client address;
    keep them out of the access log, where they would drown the real requests."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        return not (isinstance(args, tuple) and args and not args[0])


class NotifyingServer(uvicorn.Server):
    """A uvicorn server that writes one line to `notify_fd` once it accepts requests."""

    def __init__(self, config: uvicorn.Config, notify_fd: int) -> None:
        super().__init__(config)
        self.notify_fd = notify_fd

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            os.write(self.notify_fd, b"ready\n")
            os.close(self.notify_fd)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """Stop accepting, then let connections accepted just before the stop have their
        request read: uvicorn closes a connection with no request yet unanswered, and its
        client, who sent the request already, would see a reset instead of a response."""
        for server in self.servers:
            server.close()
        await asyncio.sleep(ACCEPTED_GRACE)
        await super().shutdown(sockets=sockets)


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m launcher.worker.serve")
    parser.add_argument("app", help="ASGI app as module:attribute")
    parser.add_argument("--fd", type=int, action="append", required=True, help="listening socket to serve")
    parser.add_argument("--notify-fd", type=int, required=True, help="pipe to report readiness on")
    parser.add_argument("--go-fd", type=int, required=True, help="pipe that says when to start serving")
    parser.add_argument("--log-level", default="info")
    parser.add_argument("--no-access-log", action="store_true")
    return parser.parse_args(argv)


def main(argv: list[str]) -> None:
    args = parse(argv)
    sys.path.insert(0, os.getcwd())
    config = uvicorn.Config(
        args.app, log_level=args.log_level, access_log=not args.no_access_log, lifespan="on",
    )
    logging.getLogger("uvicorn.access").addFilter(_HideLauncherChecks())
    config.load()  # imports the app: the slow part of a cold start, done while parked
    if not os.read(args.go_fd, 16):
        return  # the launcher retired us (or is gone) before we were needed
    os.close(args.go_fd)
    # socket.socket(fileno=...) reads the family from the fd, unlike uvicorn's own --fd.
    sockets = [socket.socket(fileno=fd) for fd in args.fd]
    NotifyingServer(config, args.notify_fd).run(sockets=sockets)


if __name__ == "__main__":
    main(sys.argv[1:])
