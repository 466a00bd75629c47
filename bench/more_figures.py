"""The figures of the bounds a worker keeps, of reload mode and of the image: each against
the peer its users would pick instead, measured the same way."""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import resource
import shutil
import socket
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import httpx
import psutil

from bench.figures import Bench, Row, _ready, _until, _workers_up
from bench.peers import GunicornPeer, LauncherPeer, Peer, UvicornReloadPeer, worker_pids
from bench.probe import Timeline, first, outcome
from tests.app_sources import versioned

ROOT = Path(__file__).resolve().parent.parent


# The workers' bounds (figure 11) ------------------------------------------------------------


def limit_peers(b: Bench, prefix: Sequence[str] = ()) -> list[Peer]:
    """One worker each: the launcher's, and gunicorn's with uvicorn's worker class."""
    return [
        b.peer(LauncherPeer, "launcher", {"prefix": list(prefix)}),
        b.peer(GunicornPeer, "gunicorn -w 1 (uvicorn_worker)", {"prefix": list(prefix), "workers": 1}),
    ]


def _rss(pid: int) -> float:
    try:
        return float(psutil.Process(pid).memory_info().rss) / 2**20
    except psutil.NoSuchProcess:
        return 0.0


def _attacked(b: Bench, name: str, attack: Callable[[int], None], clients: int) -> tuple[float, float, float]:
    """A fresh peer for each attack: memory one attack leaves must not hide the next one's."""
    peer = next(p for p in limit_peers(b) if p.name == name)
    _ready(peer.start())
    try:
        _workers_up(peer, 1)
        return _under_attack(peer, functools.partial(attack, peer.port), clients)
    finally:
        peer.stop()


def _attack(head: bytes, body: bytes, repeat: int, hold: float, port: int) -> None:
    """One connection that sends `head` then `body` `repeat` times, holds on, and never reads."""
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(head)
        for _ in range(repeat):
            conn.sendall(body)
        time.sleep(hold)


def _under_attack(peer: Peer, attack: Callable[[], None], clients: int) -> tuple[float, float, float]:
    """The worker's RSS before, at its peak during, and 5 s after `clients` attacks."""
    worker = worker_pids(peer)[0]
    before = _rss(worker)
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        running = [pool.submit(attack) for _ in range(clients)]
        peak = before
        while not all(r.done() for r in running):
            peak = max(peak, _rss(worker))
            time.sleep(0.1)
    time.sleep(5)
    return before, peak, _rss(worker)


BODY_HEAD = b"POST /api/notes HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 52428800\r\n\r\n"
PIPELINED = b"GET /api/test HTTP/1.1\r\nHost: x\r\n\r\n" * 4096  # 140 KB of requests


def worker_limits(b: Bench) -> None:
    """Figure 11: what a client can make a worker hold: 20 POSTs of 50 MB bodies whose last
    byte never comes, 12 MB of pipelined requests never read; and, at `ulimit -n 1024`, how
    many of 42 fresh clients are served while 3,000 idle connections are open."""
    for name in [p.name for p in limit_peers(b)]:
        body = _attacked(b, name, functools.partial(_attack, BODY_HEAD, b"x" * (1 << 20), 49, 3.0), 20)
        pipe = _attacked(b, name, functools.partial(_attack, b"", PIPELINED, 85, 3.0), 1)
        b.add(
            Row("11 worker limits", name, "RSS growth at the peak of 20 x 50 MB POSTs", [body[1] - body[0]], "MB"),
            Row("11 worker limits", name, "RSS kept 5 s after the POSTs", [body[2] - body[0]], "MB"),
            Row("11 worker limits", name, "RSS growth at the peak of 12 MB pipelined", [pipe[1] - pipe[0]], "MB"),
            Row("11 worker limits", name, "RSS kept 5 s after the pipelining", [pipe[2] - pipe[0]], "MB"),
        )
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    try:
        for peer in limit_peers(b, ["prlimit", "--nofile=1024:1024", "--"]):
            b.add(
                Row(
                    "11 worker limits",
                    peer.name,
                    "fresh clients served of 42, 3,000 idle connections, 1024 fds",
                    [_fresh_clients(peer)],
                    "count",
                )
            )
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _fresh_clients(peer: Peer) -> float:
    _ready(peer.start())
    held: list[socket.socket] = []
    try:
        _workers_up(peer, 1)
        for _ in range(3000):
            with contextlib.suppress(OSError):
                held.append(socket.create_connection(("127.0.0.1", peer.port), timeout=2))
        time.sleep(1.0)
        return float(sum(1 for _ in range(42) if outcome(peer.url + "/api/test", 2.0) == "200"))
    finally:
        for conn in held:
            conn.close()
        peer.stop()


# Reload mode (figure 12) --------------------------------------------------------------------


def reload_peers(b: Bench, folder: Path) -> list[Peer]:
    config = b.workdir / "reload.yaml"
    config.write_text(f"server:\n  app: main:app\n  app_dir: {folder}\n  reload: true\ndatabase:\n  gate: false\n")
    return [
        b.peer(LauncherPeer, "launcher --reload", None, LAUNCHER_CONFIG=str(config)),
        b.peer(UvicornReloadPeer, "uvicorn --reload", {"app_dir": folder}),
    ]


def reload_mode(b: Bench, edits: int = 10, idle: float = 10.0) -> None:
    """Figure 12: the same app, the same 10 edits 2 s apart, a client polling every 20 ms:
    requests not answered 200, time from a save to the new code served, and the CPU the
    watching process uses while nothing changes."""
    folder = b.workdir / "reload-app"
    folder.mkdir(exist_ok=True)
    for peer in reload_peers(b, folder):
        (folder / "main.py").write_text(versioned("v0"))
        peer.start()
        if first(peer.url + "/", "200", time.monotonic(), 60) is None:
            raise RuntimeError(f"{peer.name} never served; see {peer.log_path}")
        took: list[float | None] = []
        try:
            time.sleep(2.0)
            with Timeline(peer.url + "/") as seen:
                for edit in range(1, edits + 1):
                    (folder / "main.py").write_text(versioned(f"v{edit}"))
                    saved = time.monotonic()
                    took.append(_until(functools.partial(_serves, peer.port, f"v{edit}"), saved, 20))
                    time.sleep(max(0.0, saved + 2.0 - time.monotonic()))
            failed = float(len(seen.points) - seen.count("200"))
            cpu = _idle_cpu(peer.supervisor_pid, idle)
        finally:
            peer.stop()
        b.add(
            Row("12 reload", peer.name, "requests not answered 200 through 10 edits", [failed], "count"),
            Row("12 reload", peer.name, "save -> the new code served", took),
            Row("12 reload", peer.name, "CPU of the watching process while idle", [cpu], "%"),
        )


def _idle_cpu(pid: int, seconds: float) -> float:
    watcher = psutil.Process(pid)
    time.sleep(2.0)
    before = watcher.cpu_times()
    time.sleep(seconds)
    after = watcher.cpu_times()
    return 100.0 * ((after.user - before.user) + (after.system - before.system)) / seconds


def _serves(port: int, version: str) -> bool:
    return _body(port) == version


def _body(port: int) -> str:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/", timeout=1.0).text
    except httpx.HTTPError:
        return ""


# The image (figure 13) ----------------------------------------------------------------------

DEPS_ONLY = "ARG BASE\nFROM ${BASE}\nCOPY requirements.txt .\nRUN pip install --no-cache-dir -r requirements.txt\n"


def image_size(b: Bench) -> None:
    """Figure 13: the application image against its base and the base with the requirements
    alone, which is what the launcher and the service add. Needs a Docker engine (./dev bench
    starts one as root); the base is python:3.11-slim where a registry answers, else the
    suite's stand-in from Debian's packages."""
    try:
        import docker

        from tests.docker import images

        client = docker.from_env(timeout=600)
        client.ping()
        base = images.python_base(client)
        context = b.workdir / "deps-image"
        context.mkdir(exist_ok=True)
        (context / "Dockerfile").write_text(DEPS_ONLY)
        shutil.copy(ROOT / "requirements.txt", context / "requirements.txt")
        images.build(client, str(context), "launcher-bench/deps:current", {"BASE": base})
        app = images.app(client, base)
    except Exception as err:  # no engine, no way to build: the figure says so and the rest goes on
        print(f"  13 image: not measured ({type(err).__name__}: {str(err)[:200]})", flush=True)
        return
    size = {tag: client.images.get(tag).attrs["Size"] / 2**20 for tag in (base, "launcher-bench/deps:current", app)}
    added = size[app] - size["launcher-bench/deps:current"]
    b.add(
        Row("13 image", f"base ({base})", "size", [size[base]], "MB"),
        Row("13 image", "base + requirements.txt", "size", [size["launcher-bench/deps:current"]], "MB"),
        Row("13 image", "the launcher's image (Dockerfile)", "size", [size[app]], "MB"),
        Row("13 image", "the launcher's image (Dockerfile)", "added to base + requirements", [added], "MB"),
    )
