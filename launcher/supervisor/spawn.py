"""Start and signal the processes the launcher owns: templates, workers, prestart steps.

posix_spawn rather than subprocess.Popen: a Popen object reaps its own child (in poll(),
wait() and at the next Popen's clean-up), which would race the one reaper of the program
and turn real exit statuses into 0. Each process gets its own session, so a stop signals
the whole process group and nothing is left behind.

Every template, worker and forked step gets a socketpair as its private channel to the
launcher (launcher/wire.py): no name another process could predict, bind first or connect
to. A forked process's pid arrives later, on that channel, from the process itself.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass

from launcher import wire
from launcher.config import Config

_STDIN_NULL = (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0)
# Python ignores SIGPIPE and SIGXFSZ; a child must start with their default actions (as
# subprocess's restore_signals does) and with no signal blocked, whatever the launcher holds.
_DEFAULT_SIGNALS = (signal.SIGPIPE, signal.SIGXFSZ)


@dataclass
class Spawned:
    pid: int | None  # None until a forked process says its pid on its channel
    channel: socket.socket | None  # the launcher's end: a template's control channel, or a process's own
    start: int = 0  # /proc/<pid>/stat's starttime, read at spawn


def child_environment(cfg: Config, environ: Mapping[str, str]) -> dict[str, str]:
    """The launcher's environment plus the resolved database settings, so the app reads only
    its environment (and never a secret from argv)."""
    db = cfg.database
    env = dict(environ)
    env.update(
        PYTHONUNBUFFERED="1",
        MYSQL_HOST=db.host,
        MYSQL_PORT=str(db.port),
        MYSQL_DATABASE=db.name,
        MYSQL_USER=db.user,
        MYSQL_PASSWORD=db.password.reveal(),
        MYSQL_UNIX_SOCKET=db.socket,
        MYSQL_SSL_MODE=db.ssl_mode.value,
        MYSQL_SSL_CA=db.ssl_ca,
        MYSQL_SSL_CERT=db.ssl_cert,
        MYSQL_SSL_KEY=db.ssl_key,
    )
    env.pop("MYSQL_PASSWORD_FILE", None)
    return env


def settings_argument(cfg: Config) -> str:
    """The server settings a template or worker needs, as one argv word (no secret in it)."""
    return json.dumps(asdict(cfg.server), separators=(",", ":"))


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
        return os.posix_spawnp(
            argv[0], list(argv), env, file_actions=[_STDIN_NULL], setsid=True, setsigmask=(), setsigdef=_DEFAULT_SIGNALS
        )


@contextmanager
def _channel() -> Iterator[tuple[socket.socket, socket.socket]]:
    """A private channel: ours stays with the launcher (non-blocking), theirs is closed here
    once handed over; on failure both are closed."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        yield ours, theirs
    except BaseException:
        ours.close()
        raise
    finally:
        theirs.close()
    ours.setblocking(False)


def _server(cfg: Config, module: str, fds: Sequence[int]) -> list[str]:
    words = [f"--fd={fd}" for fd in fds]
    return [sys.executable, "-m", module, "--settings", settings_argument(cfg), *words]


def spawn_template(cfg: Config, listener: socket.socket, env: Mapping[str, str]) -> Spawned:
    """A template: it imports the app, then forks workers when asked on its control channel."""
    with _channel() as (ours, theirs):
        fds = [listener.fileno(), theirs.fileno()]
        pid = _spawn(_server(cfg, "launcher.worker.template", fds), env, fds)
    return Spawned(pid, ours, wire.start_time(pid))


def fork_worker(control: socket.socket, name: str) -> Spawned:
    """Ask a template for a worker; the worker says its pid on its channel."""
    with _channel() as (ours, theirs):
        wire.send(control, wire.encode("fork", name), [theirs.fileno()])
    return Spawned(None, ours)


def fork_step(control: socket.socket, name: str, module_argv: Sequence[str]) -> Spawned:
    """Ask a template to run `python -m module args...` in a fork of itself."""
    with _channel() as (ours, theirs):
        wire.send(control, wire.encode("run", name, *module_argv), [theirs.fileno()])
    return Spawned(None, ours)


def spawn_cold_worker(cfg: Config, listener: socket.socket, env: Mapping[str, str]) -> Spawned:
    """A worker that imports the app itself: when no template can fork safely."""
    with _channel() as (ours, theirs):
        fds = [listener.fileno(), theirs.fileno()]
        pid = _spawn(_server(cfg, "launcher.worker.serve", fds), env, fds)
    return Spawned(pid, ours, wire.start_time(pid))


def spawn_step(command: Sequence[str], env: Mapping[str, str]) -> Spawned:
    """A prestart command; `python` means the launcher's own interpreter (its venv)."""
    argv = [sys.executable, *command[1:]] if command[0] == "python" else list(command)
    pid = _spawn(argv, env)
    return Spawned(pid, None, wire.start_time(pid))


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
