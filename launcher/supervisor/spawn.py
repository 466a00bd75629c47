"""Start and signal the processes the launcher owns: the template, workers, prestart steps.

posix_spawn rather than subprocess.Popen: a Popen object reaps its own child (in
poll(), wait() and at the next Popen's clean-up), which would race the one reaper
of the program and turn real exit statuses into 0. Each process gets its own
session, so a stop signals the whole process group and nothing is left behind.
A forked worker's pid arrives later, from the template (see launcher/worker/template.py).
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
    pid: int | None  # None until the template says which pid a forked worker or step got
    ready_fd: int | None = None  # read end of a worker's readiness pipe
    control: socket.socket | None = None  # a template's control channel
    private_address: str = ""  # a worker's abstract unix socket for liveness checks
    pending_signal: signal.Signals | None = None  # for a forked process whose pid is not known yet
    parent: int | None = None  # the machine's id of the template that forked it


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


def _server_argv(cfg: Config, module: str) -> list[str]:
    argv = [sys.executable, "-m", module, cfg.server.app, "--log-level", cfg.server.log_level]
    return argv if cfg.server.access_log else [*argv, "--no-access-log"]


def spawn_template(cfg: Config, listener: socket.socket, env: Mapping[str, str]) -> Spawned:
    """Start a template: it imports the app, then forks workers when asked on `control`."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        fds = [listener.fileno(), theirs.fileno()]
        argv = [*_server_argv(cfg, "launcher.worker.template"), "--fd", str(fds[0]), "--control-fd", str(fds[1])]
        pid = _spawn(argv, env, fds)
    except OSError:
        ours.close()
        raise
    finally:
        theirs.close()
    ours.setblocking(False)
    return Spawned(pid, control=ours)


@contextmanager
def _worker_channels(name: str) -> Iterator[tuple[socket.socket, int, int, str]]:
    """A private listener and a readiness pipe for one worker; the worker's ends are closed
    here once handed over, the launcher keeps the pipe's read end."""
    private = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    address = f"\0launcher.{os.getpid()}.{name}"
    ready_r, ready_w = os.pipe()
    try:
        private.bind(address)
        private.listen(16)
        yield private, ready_r, ready_w, address
    except BaseException:
        os.close(ready_r)
        raise
    finally:
        os.close(ready_w)
        private.close()


def fork_worker(template: Spawned, name: str) -> Spawned:
    """Ask the template for a worker; its pid comes back in a `forked` message."""
    assert template.control is not None
    with _worker_channels(name) as (private, ready_r, ready_w, address):
        socket.send_fds(template.control, [f"fork\0{name}".encode()], [private.fileno(), ready_w])
    return Spawned(None, ready_r, private_address=address)


def forkable_step(command: Sequence[str]) -> list[str] | None:
    """`python -m module args...` as [module, args...]: a step the template can run forked."""
    if len(command) >= 3 and command[0] == "python" and command[1] == "-m":
        return list(command[2:])
    return None


def fork_step(template: Spawned, name: str, module_argv: Sequence[str]) -> Spawned:
    """Ask the template to run `python -m module args...` in a fork of itself."""
    assert template.control is not None
    template.control.send("\0".join(["run", name, *module_argv]).encode())
    return Spawned(None)


def spawn_cold_worker(cfg: Config, listener: socket.socket, env: Mapping[str, str], name: str) -> Spawned:
    """A worker that imports the app itself: when no template can fork safely."""
    with _worker_channels(name) as (private, ready_r, ready_w, address):
        fds = [listener.fileno(), private.fileno(), ready_w]
        argv = [*_server_argv(cfg, "launcher.worker.serve"), "--fd", str(fds[0]), "--fd", str(fds[1]),
                "--notify-fd", str(ready_w)]
        pid = _spawn(argv, env, fds)
    return Spawned(pid, ready_r, private_address=address)


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
