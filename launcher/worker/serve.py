"""A worker: uvicorn run programmatically on sockets the launcher hands over.

Running uvicorn from our own entry (not its CLI) lets a worker serve the shared public
socket and a private one that only the launcher talks to (liveness), and report
readiness on a pipe the instant uvicorn's startup completes. A worker is forked from the
template (template.py) with the app already imported, or, as a fallback, started cold
with `python -m launcher.worker.serve`, which imports the app itself.
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
STARTUP_FAILURE = 3  # uvicorn's own exit code when the app fails to start


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
        client, who sent the request already, would see a reset instead of a response.

        A connection asyncio has accepted gets its transport one loop turn later, and a
        server closed in between drops it unanswered (a stop during a worker's start hit
        this): so the accepting ends first, and the servers close a turn later."""
        loop = asyncio.get_running_loop()
        for server in self.servers:
            for listener in server.sockets:
                loop.remove_reader(listener.fileno())
        await asyncio.sleep(0)
        for server in self.servers:
            server.close()
        await asyncio.sleep(ACCEPTED_GRACE)
        await super().shutdown(sockets=sockets)


def name_process(name: str) -> None:
    """What `ps` and psutil's name() show: a forked worker shares the template's command line."""
    try:
        with open("/proc/self/comm", "w", encoding="ascii") as comm:
            comm.write(name[:15])
    except OSError:
        pass


def app_config(app: str, log_level: str, access_log: bool) -> uvicorn.Config:
    """The uvicorn config with the app imported: the slow part, done once in the template."""
    sys.path.insert(0, os.getcwd())
    config = uvicorn.Config(app, log_level=log_level, access_log=access_log, lifespan="on")
    logging.getLogger("uvicorn.access").addFilter(_HideLauncherChecks())
    config.load()
    return config


def serve(config: uvicorn.Config, fds: list[int], notify_fd: int) -> int:
    """Serve until stopped; the exit code for the launcher. socket.socket(fileno=...) reads
    the family from the fd, unlike uvicorn's own --fd, which assumes AF_UNIX."""
    server = NotifyingServer(config, notify_fd)
    server.run(sockets=[socket.socket(fileno=fd) for fd in fds])
    return 0 if server.started else STARTUP_FAILURE


def app_arguments(prog: str) -> argparse.ArgumentParser:
    """What a worker and the template both take: the app and uvicorn's logging."""
    parser = argparse.ArgumentParser(prog=prog)
    parser.add_argument("app", help="ASGI app as module:attribute")
    parser.add_argument("--log-level", default="info")
    parser.add_argument("--no-access-log", action="store_true")
    return parser


def parse(argv: list[str]) -> argparse.Namespace:
    parser = app_arguments("python -m launcher.worker.serve")
    parser.add_argument("--fd", type=int, action="append", required=True, help="listening socket to serve")
    parser.add_argument("--notify-fd", type=int, required=True, help="pipe to report readiness on")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse(argv)
    name_process("worker")
    return serve(app_config(args.app, args.log_level, not args.no_access_log), args.fd, args.notify_fd)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
