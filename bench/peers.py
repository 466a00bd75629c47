"""The supervisors compared, each installed and started the way its users do, on its own port."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import psutil

from bench import venvs

ROOT = Path(__file__).resolve().parent.parent


def uvicorn(*args: str) -> list[str]:
    """uvicorn from its own environment, as its users run it."""
    return [venvs.python("uvicorn"), "-m", "uvicorn", "--host", "127.0.0.1", "--no-access-log", *args]


def restarted(python: str, *command: str) -> list[str]:
    """Under the stand-in for Docker's `restart: always` (bench/docker_restart.py)."""
    return [python, "-m", "bench.docker_restart", *command]


SUPERVISORD_CONF = """[supervisord]
nodaemon=true
logfile={dir}/supervisord.log
pidfile={dir}/supervisord.pid

[program:api]
command={command}
directory={root}
autorestart=true
startretries=3
startsecs=1
stopsignal=TERM
stopwaitsecs=10
redirect_stderr=true
stdout_logfile={dir}/api.log
environment={environment}
"""


@dataclass
class Peer:
    name: str
    port: int
    env: Mapping[str, str]
    workdir: Path
    extra_env: Mapping[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    prefix: list[str] = field(default_factory=list)  # e.g. prlimit, to start it with fewer descriptors
    environment: ClassVar[str] = ""  # bench/requirements/<environment>.txt; "" is the project's own venv

    @property
    def python(self) -> str:
        return venvs.python(self.environment) if self.environment else sys.executable

    def command(self) -> list[str]:
        raise NotImplementedError

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.name}.log"

    def start(self) -> Peer:
        log = open(self.log_path, "ab")
        env = {**os.environ, **self.env, **self.extra_env, "PYTHONUNBUFFERED": "1"}
        self.process = subprocess.Popen(
            [*self.prefix, *self.command()],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def supervisor_pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def server_pid(self) -> int | None:
        """The uvicorn process answering requests now, if any."""
        try:
            kids = psutil.Process(self.supervisor_pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return None
        servers = [p for p in kids if _is_server(p)]
        return max(servers, key=lambda p: p.create_time()).pid if servers else None

    def stop(self, timeout: float = 20.0) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait()
        return self.process.returncode


def _is_server(p: psutil.Process) -> bool:
    try:
        line, name = " ".join(p.cmdline()), p.name()
    except psutil.Error:
        return False
    return "uvicorn" in line or name == "worker"


class LauncherPeer(Peer):
    def command(self) -> list[str]:
        return [sys.executable, "-m", "launcher"]

    def start(self) -> Peer:
        self.extra_env = {
            "LAUNCHER_SERVER_PORT": str(self.port),
            "LAUNCHER_SERVER_HOST": "127.0.0.1",
            "LAUNCHER_SERVER_ACCESS_LOG": "false",
            **self.extra_env,
        }
        return super().start()


class LegacyPeer(Peer):
    """uvicorn with the old import-time wait_for_db(), under a Docker `restart: always` stand-in."""

    environment = "uvicorn"

    def command(self) -> list[str]:
        return restarted(self.python, *uvicorn("--port", str(self.port), "bench.legacy_app:app"))


class SupervisordPeer(Peer):
    environment = "supervisord"

    def command(self) -> list[str]:
        conf = self.workdir / f"{self.name}.conf"
        environment = ",".join(f'{k}="{v}"' for k, v in {**self.env, "PYTHONUNBUFFERED": "1"}.items())
        program = " ".join(uvicorn("--port", str(self.port), "api.main:app"))
        conf.write_text(SUPERVISORD_CONF.format(dir=self.workdir, command=program, root=ROOT, environment=environment))
        return [self.python, "-m", "supervisor.supervisord", "-c", str(conf)]


class UvicornWorkersPeer(Peer):
    """`uvicorn --workers 2` under the Docker `restart: always` stand-in."""

    environment = "uvicorn"

    def command(self) -> list[str]:
        return restarted(self.python, *uvicorn("--workers", "2", "--port", str(self.port), "api.main:app"))


@dataclass
class GunicornPeer(Peer):
    """gunicorn with uvicorn_worker.UvicornWorker workers, under the same stand-in."""

    preload: bool = False
    workers: int = 2
    environment = "gunicorn"

    def command(self) -> list[str]:
        return restarted(
            self.python,
            self.python,
            "-m",
            "gunicorn",
            "-w",
            str(self.workers),
            "-k",
            "uvicorn_worker.UvicornWorker",
            "-b",
            f"127.0.0.1:{self.port}",
            "--graceful-timeout",
            "10",
            *(["--preload"] if self.preload else []),
            "api.main:app",
        )


class GranianPeer(Peer):
    """granian with two workers (its Rust HTTP server, the ASGI interface), under the same stand-in."""

    environment = "granian"

    def command(self) -> list[str]:
        return restarted(
            self.python,
            self.python,
            "-m",
            "granian",
            "--interface",
            "asgi",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            "2",
            "--no-access-log",
            "api.main:app",
        )


@dataclass
class UvicornReloadPeer(Peer):
    """`uvicorn --reload` on an app of `app_dir`, as the service's original Dockerfile ran it."""

    app_dir: Path = ROOT
    environment = "uvicorn"

    def command(self) -> list[str]:
        folder = str(self.app_dir)
        return uvicorn("--reload", "--reload-dir", folder, "--app-dir", folder, "--port", str(self.port), "main:app")


def worker_pids(peer: Peer) -> list[int]:
    """The processes that serve requests, oldest first: a launcher's workers, or the children of
    the master that docker_restart runs (uvicorn's and gunicorn's workers)."""
    try:
        tree = psutil.Process(peer.supervisor_pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    if isinstance(peer, LauncherPeer):
        found = [p for p in tree if _name(p) == "worker"]
    else:
        masters = psutil.Process(peer.supervisor_pid).children()
        found = [p for m in masters for p in _children(m) if "resource_tracker" not in " ".join(_cmdline(p))]
    return [p.pid for p in sorted(found, key=lambda p: p.create_time())]


def _name(p: psutil.Process) -> str:
    try:
        return p.name()
    except psutil.Error:
        return ""


def _cmdline(p: psutil.Process) -> list[str]:
    try:
        return p.cmdline()
    except psutil.Error:
        return []


def _children(p: psutil.Process) -> list[psutil.Process]:
    try:
        return p.children()
    except psutil.Error:
        return []


class BarePeer(Peer):
    environment = "uvicorn"

    def command(self) -> list[str]:
        return uvicorn("--port", str(self.port), "api.main:app")

    def server_pid(self) -> int | None:
        return self.process.pid if self.process and self.process.poll() is None else None
