"""A worker: uvicorn run programmatically on the public socket the launcher holds.

Running uvicorn from our own entry (not its CLI) lets a worker serve the shared socket,
talk to the launcher on its private channel (channel.py), and say it is ready the instant
uvicorn's startup completes. A worker is forked from the template (template.py) with the
app already imported, or, as a fallback, started cold with `python -m launcher.worker.serve`,
which imports the app itself.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys

import uvicorn

from launcher.worker.channel import Channel
from launcher.worker.settings import STARTUP_ERRORS, Settings

ACCEPTED_GRACE = 0.2
STARTUP_FAILURE = 3  # uvicorn's own exit code when the app fails to start


class NotifyingServer(uvicorn.Server):
    """A uvicorn server that tells the launcher on its channel once it accepts requests."""

    def __init__(self, config: uvicorn.Config, channel: Channel) -> None:
        super().__init__(config)
        self.channel = channel

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            self.channel.attach(self.config.loaded_app, self.lifespan.state, self.config.root_path, self.stop)
            self.channel.serving()

    def stop(self) -> None:
        self.should_exit = True

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


def serve(config: uvicorn.Config, listener: int, channel: Channel) -> int:
    """Serve until stopped; the exit code for the launcher. socket.socket(fileno=...) reads
    the family from the fd, unlike uvicorn's own --fd, which assumes AF_UNIX."""
    server = NotifyingServer(config, channel)
    try:
        server.run(sockets=[socket.socket(fileno=listener)])
    except SystemExit:
        pass  # uvicorn's way to say the app failed to start
    if not server.started:
        channel.failed(STARTUP_ERRORS.text())
        return STARTUP_FAILURE
    return 0


def arguments(prog: str) -> argparse.ArgumentParser:
    """What a worker and the template both take: the server settings and the fds handed over."""
    parser = argparse.ArgumentParser(prog=prog)
    parser.add_argument("--settings", required=True, help="the config's server section, as JSON")
    parser.add_argument(
        "--fd", type=int, action="append", required=True, help="the public listening socket, then the private channel"
    )
    return parser


def main(argv: list[str]) -> int:
    args = arguments("python -m launcher.worker.serve").parse_args(argv)
    name_process("worker")
    listener, channel_fd = args.fd
    channel = Channel(channel_fd)
    channel.hello()
    try:
        config = Settings.parse(args.settings).uvicorn_config()
    except BaseException as err:  # any failure to import the app, SystemExit from uvicorn included
        channel.failed(f"{type(err).__name__}: {err}")
        raise
    return serve(config, listener, channel)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
