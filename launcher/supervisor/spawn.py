"""Start and signal the processes the launcher owns: the server child and prestart steps.

posix_spawn rather than subprocess.Popen: a Popen object reaps its own child (in
poll(), wait() and at the next Popen's clean-up), which would race the one reaper
of the program and turn real exit statuses into 0. Each process gets its own
session, so a stop signals the whole process group and nothing is left behind.
"""
from __future__ import annotations

import os
import signal
import socket
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Mapping, Sequence

from launcher.config import Config

_STDIN_NULL = (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0)
# Python ignores SIGPIPE and SIGXFSZ; a child must start with their default actions (as
# subprocess's restore_signals does) and with no signal blocked, whatever the launcher holds.
_DEFAULT_SIGNALS = (signal.SIGPIPE, signal.SIGXFSZ)


@dataclass
class Spawned:
    pid: int
    ready_fd: int | None = None  # read end of the readiness pipe (server child only)
    go_fd: int | None = None  # write end of the pipe that releases a parked child
    private_address: str = ""  # abstract unix socket for liveness checks


def child_environment(cfg: Config, environ: Mapping[str, str]) -> dict[str, str]:
    """The launcher's environment plus the resolved MYSQL_* values, so api/ reads only env."""
    db = cfg.database
    env = dict(environ)
    env.update(
        PYTHONUNBUFFERED="1",
        MYSQL_HOST=db.host, MYSQL_PORT=str(db.port), MYSQL_DATABASE=db.name,
        MYSQL_USER=db.user, MYSQL_PASSWORD=db.password.reveal(),
    )
    env.pop("MYSQL_PASSWORD_FILE", None)
    return env


@contextmanager
def _inherited(fds: Sequence[int]) -> Iterator[None]:
    """Let exactly these fds cross one spawn; every other fd stays close-on-exec."""
    for fd in fds:
        os.set_inheritable(fd, True)
    try:
        yield
    finally:
        for fd in fds:
            os.set_inheritable(fd, False)


def _spawn(argv: Sequence[str], env: Mapping[str, str], fds: Sequence[int] = ()) -> int:
    with _inherited(fds):
        return os.posix_spawnp(argv[0], list(argv), env, file_actions=[_STDIN_NULL], setsid=True,
                               setsigmask=(), setsigdef=_DEFAULT_SIGNALS)


def spawn_server(cfg: Config, listener: socket.socket, env: Mapping[str, str], name: str) -> Spawned:
    """Start a parked server child: the held socket, a private socket, a readiness pipe and a
    go pipe. It imports the app at once and starts serving when `go` is written."""
    private = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    address = f"\0launcher.{os.getpid()}.{name}"
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    try:
        private.bind(address)
        private.listen(16)
        fds = [listener.fileno(), private.fileno(), ready_w, go_r]
        argv = [sys.executable, "-m", "launcher.worker.serve", cfg.server.app,
                "--fd", str(fds[0]), "--fd", str(fds[1]), "--notify-fd", str(ready_w), "--go-fd", str(go_r),
                "--log-level", cfg.server.log_level]
        if not cfg.server.access_log:
            argv.append("--no-access-log")
        pid = _spawn(argv, env, fds)
    except OSError:
        os.close(ready_r)
        os.close(go_w)
        raise
    finally:
        os.close(ready_w)
        os.close(go_r)
        private.close()
    return Spawned(pid, ready_r, go_w, address)


def spawn_step(command: Sequence[str], env: Mapping[str, str]) -> Spawned:
    """A prestart command; `python` means the launcher's own interpreter (its venv)."""
    argv = [sys.executable, *command[1:]] if command[0] == "python" else list(command)
    return Spawned(_spawn(argv, env))


def signal_group(pid: int, sig: signal.Signals) -> None:
    """Signal the whole process group; a group that is already gone is no error."""
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def kill_descendants() -> None:
    """Kill every descendant still around, wherever its group, and reap them all."""
    import psutil  # only needed here, at exit

    from launcher.supervisor.reaper import reap_all

    leftovers = psutil.Process().children(recursive=True)
    for proc in leftovers:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(leftovers, timeout=2)
    list(reap_all())
