"""Each figure of the benchmark: run the peers through the same fault, return measurements."""

from __future__ import annotations

import calendar
import concurrent.futures
import contextlib
import functools
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from bench.peers import (
    BarePeer,
    GranianPeer,
    GunicornPeer,
    LauncherPeer,
    LegacyPeer,
    Peer,
    SupervisordPeer,
    UvicornWorkersPeer,
    worker_pids,
)
from bench.probe import Timeline, first, first_not, outcome
from localdb.server import MariaDB, free_port

RUNS = 5
READY_LIMIT = 90.0  # a peer not serving by then "never recovered"


@dataclass
class Row:
    figure: str
    peer: str
    metric: str
    values: Sequence[float | None]
    unit: str = "s"
    target: str = ""
    met: bool | None = None  # whether the target is met, computed (report.judge, or the figure itself)

    @property
    def done(self) -> list[float]:
        return sorted(v for v in self.values if v is not None)

    @property
    def median(self) -> float | None:
        done = self.done
        if len(done) < len(self.values) or not done:
            return None
        mid = len(done) // 2
        return done[mid] if len(done) % 2 else (done[mid - 1] + done[mid]) / 2


@dataclass
class Bench:
    db: MariaDB
    workdir: Path
    rows: list[Row] = field(default_factory=list)
    timelines: dict[str, dict[str, list[tuple[float, str]]]] = field(default_factory=dict)

    def peer(self, kind: type[Peer], name: str, options: Mapping[str, Any] | None = None, **extra: str) -> Peer:
        """A peer of `kind`; `options` are its own fields, `extra` more environment variables."""
        return kind(
            name=name, port=free_port(), env=self.db.env, workdir=self.workdir, extra_env=extra, **(options or {})
        )

    def add(self, *rows: Row) -> None:
        self.rows.extend(rows)
        for row in rows:
            shown = "never" if row.median is None else f"{row.median:.3f}"
            print(f"  {row.figure} | {row.peer} | {row.metric}: median {shown} {row.unit} of {row.values}", flush=True)


def outage_peers(b: Bench) -> list[Peer]:
    return [
        b.peer(LauncherPeer, "launcher (restart)", LAUNCHER_ON_DB_LOSS="restart"),
        b.peer(LauncherPeer, "launcher (swap)", LAUNCHER_ON_DB_LOSS="swap"),
        b.peer(LauncherPeer, "launcher (swap, 2 workers)", LAUNCHER_ON_DB_LOSS="swap", LAUNCHER_SERVER_WORKERS="2"),
        b.peer(LegacyPeer, "original (wait_for_db + restart: always)"),
        b.peer(SupervisordPeer, "supervisord + uvicorn"),
    ]


def _ready(peer: Peer) -> Peer:
    if first(peer.url + "/api/health", "200", time.monotonic(), READY_LIMIT) is None:
        raise RuntimeError(f"{peer.name} never served; see {peer.workdir}/{peer.name}.log")
    return peer


def _until(predicate: Callable[[], bool], since: float, limit: float) -> float | None:
    while time.monotonic() < since + limit:
        if predicate():
            return time.monotonic() - since
        time.sleep(0.02)
    return None


def recovery_and_detection(b: Bench) -> None:
    """Figures 1 and 2: MySQL stopped for 3 s, then started; and MySQL frozen for 5 s. A run
    of its own, not counted, polls /api/health for the picture: a second client of that route
    would open the peer's DB connection before the one whose first 200 is timed."""
    for peer in outage_peers(b):
        recover: list[float | None] = []
        detect: list[float | None] = []
        no_db: list[float | None] = []
        _ready(peer.start())
        try:
            for run in range(RUNS + 1):
                picture = run == 0
                with (
                    Timeline(peer.url + "/api/test") as plain,
                    Timeline(peer.url + "/api/health") if picture else contextlib.nullcontext() as health,
                ):
                    down = time.monotonic()
                    b.db.stop()
                    detected = _detection(peer, down)
                    time.sleep(max(0.0, down + 3.0 - time.monotonic()))
                    b.db.start()
                    back = time.monotonic()
                    recovered = first(peer.url + "/api/health", "200", back, 60)
                    time.sleep(0.5)
                if picture and health is not None:
                    b.timelines.setdefault("/api/health, MySQL stopped for 3 s", {})[peer.name] = _relative(
                        health.points, down
                    )
                else:
                    detect.append(detected)
                    recover.append(recovered)
                    no_db.append(_share(plain, "200", down, back))
                time.sleep(1.0)
            frozen: list[float | None] = []
            for _ in range(RUNS):
                down = time.monotonic()
                b.db.pause()
                frozen.append(_detection(peer, down))
                time.sleep(max(0.0, down + 5.0 - time.monotonic()))
                b.db.resume()
                first(peer.url + "/api/health", "200", time.monotonic(), 60)
                time.sleep(1.0)
        finally:
            b.db.resume()
            if not b.db.running:
                b.db.start()
            peer.stop()
        b.add(
            Row("1 recovery", peer.name, "MySQL back -> first 200 on /api/health", recover),
            Row("1 recovery", peer.name, "/api/test answered 200 during the outage", no_db, "%"),
            Row("2 detection", peer.name, "MySQL stopped -> not healthy", detect),
            Row("2 detection", peer.name, "MySQL frozen -> not healthy", frozen),
        )


def _share(seen: Timeline, result: str, start: float, end: float) -> float:
    """The percentage of polls from `start` to `end` that answered `result`."""
    during = [r for t, r in seen.points if start <= t <= end]
    return 100.0 * during.count(result) / max(1, len(during))


def _detection(peer: Peer, since: float) -> float | None:
    """A launcher: until it logs that the DB is lost (its own decision, whatever the policy);
    the others: until the app's /api/health stops answering 200."""
    if isinstance(peer, LauncherPeer):
        wall = time.time() - (time.monotonic() - since)
        found = _until(lambda: _logged_after(peer.log_path, "database lost", wall) is not None, since, 30)
        stamp = _logged_after(peer.log_path, "database lost", wall)
        return None if found is None or stamp is None else stamp - wall
    return first_not(peer.url + "/api/health", "200", since, 30)


def _logged_after(log: Path, text: str, wall: float) -> float | None:
    """The wall-clock time of the first line with `text` logged after `wall`."""
    for line in log.read_text(errors="replace").splitlines():
        if text in line:
            stamp = calendar.timegm(time.strptime(line[:19], "%Y-%m-%dT%H:%M:%S")) + float(line[19:23])
            if stamp >= wall:
                return stamp
    return None


def long_outage_peers(b: Bench) -> list[Peer]:
    """Each with its defaults, the launcher's policy included; `restart` for reference."""
    return [
        b.peer(LauncherPeer, "launcher (default policy)"),
        b.peer(LauncherPeer, "launcher (default policy, 2 workers)", LAUNCHER_SERVER_WORKERS="2"),
        b.peer(LauncherPeer, "launcher (restart)", LAUNCHER_ON_DB_LOSS="restart"),
        b.peer(UvicornWorkersPeer, "uvicorn --workers 2"),
        b.peer(GunicornPeer, "gunicorn -w 2 (uvicorn_worker)"),
        b.peer(SupervisordPeer, "supervisord + uvicorn"),
    ]


def long_outage(b: Bench, runs: int = 3, seconds: float = 15.0) -> None:
    """Figure 1d: MySQL stopped for 15 s: how much of /api/test, which needs no DB, still
    answered 200, and how soon /api/health did once MySQL was back."""
    for peer in long_outage_peers(b):
        served: list[float | None] = []
        back_after: list[float | None] = []
        _ready(peer.start())
        try:
            for run in range(runs):
                time.sleep(1.0)
                with Timeline(peer.url + "/api/test") as plain:
                    down = time.monotonic()
                    b.db.stop()
                    time.sleep(max(0.0, down + seconds - time.monotonic()))
                    b.db.start()
                    back = time.monotonic()
                    back_after.append(first(peer.url + "/api/health", "200", back, 60))
                served.append(_share(plain, "200", down, back))
                if run == 0:
                    b.timelines.setdefault("/api/test, MySQL stopped for 15 s", {})[peer.name] = _relative(
                        plain.points, down
                    )
        finally:
            if not b.db.running:
                b.db.start()
            peer.stop()
        b.add(
            Row("1d long outage", peer.name, "/api/test answered 200 during a 15 s outage", served, "%"),
            Row("1d long outage", peer.name, "MySQL back after 15 s -> first 200 on /api/health", back_after),
        )


def late_boot(b: Bench) -> None:
    """Figure 1b: MySQL starts 30 s after the service; all peers side by side, same DB start."""
    results: dict[str, list[float | None]] = {}
    for _ in range(RUNS):
        b.db.stop()
        peers = [p.start() for p in outage_peers(b)]
        try:
            time.sleep(30)
            b.db.start()
            back = time.monotonic()
            with concurrent.futures.ThreadPoolExecutor(len(peers)) as pool:
                done = pool.map(lambda p, back=back: first(p.url + "/api/health", "200", back, 60), peers)
                for peer, took in zip(peers, done, strict=True):
                    results.setdefault(peer.name, []).append(took)
        finally:
            for peer in peers:
                peer.stop()
    for name, values in results.items():
        b.add(Row("1b late boot", name, "MySQL up 30 s late -> first 200", values))


def late_boot_empty(b: Bench, runs: int = 3) -> None:
    """Figure 1c: first boot on an empty database that comes up 30 s late: the migration must
    run before the first 200 (the launcher only: the others do not migrate)."""
    values: list[float | None] = []
    for _ in range(runs):
        for table in ("users", "notes", "alembic_version"):  # every table the migrations make
            b.db.execute(f"DROP TABLE IF EXISTS app.{table}")
        b.db.stop()
        peer = b.peer(LauncherPeer, "launcher").start()
        try:
            time.sleep(30)
            b.db.start()
            values.append(first(peer.url + "/api/health", "200", time.monotonic(), 60))
        finally:
            peer.stop()
    b.add(Row("1c late boot, empty DB", "launcher", "MySQL up 30 s late, migration runs -> first 200", values))


def child_crash(b: Bench) -> None:
    """Figure 3: kill -9 of the server process -> first 200 again, refused connections between.
    A fresh peer for each run: a crash after a healthy period, not a crash loop's backoff."""
    kinds = [
        (LauncherPeer, "launcher"),
        (LegacyPeer, "original (wait_for_db + restart: always)"),
        (SupervisordPeer, "supervisord + uvicorn"),
        (BarePeer, "bare uvicorn"),
    ]
    for kind, name in kinds:
        back: list[float | None] = []
        refused: list[float | None] = []
        for run in range(RUNS):
            peer = _ready(b.peer(kind, name).start())
            try:
                time.sleep(1.0)
                pid = peer.server_pid()
                assert pid is not None, f"{name}: no server process"
                with Timeline(peer.url + "/api/health") as seen:
                    killed = time.monotonic()
                    os.kill(pid, signal.SIGKILL)
                    back.append(first(peer.url + "/api/health", "200", killed, 15))
                refused.append(float(seen.count("refused", killed)))
                if run == 0:
                    timeline = b.timelines.setdefault("/api/health, server process killed (-9)", {})
                    timeline[name] = _relative(seen.points, killed)
            finally:
                peer.stop()
            if back[-1] is None:
                break  # it does not come back: once is enough to say so
        b.add(
            Row("3 child crash", name, "kill -9 -> first 200", back),
            Row("3 child crash", name, "refused connections (20 ms polls)", refused, "count"),
        )


def cold_start(b: Bench) -> None:
    """Figure 4: start with the DB up -> first 200, against bare uvicorn."""
    kinds = [
        (BarePeer, "bare uvicorn", {}),
        (LauncherPeer, "launcher", {}),
        (LauncherPeer, "launcher (no prestart step)", {"LAUNCHER_CONFIG": str(_no_prestart(b))}),
    ]
    for kind, name, extra in kinds:
        values = []
        for _ in range(RUNS):
            peer = b.peer(kind, name, None, **extra)
            started = time.monotonic()
            peer.start()
            values.append(first(peer.url + "/api/health", "200", started, 60))
            peer.stop()
        b.add(Row("4 cold start", name, "start -> first 200", values))


def _no_prestart(b: Bench) -> Path:
    path = b.workdir / "no-prestart.yaml"
    text = Path("config.yaml").read_text()
    path.write_text(re.sub(r"(?ms)^prestart:\n.*?(?=^\S)", "prestart:\n  steps: []\n", text))
    return path


def idle_cost(b: Bench, seconds: float = 60.0) -> None:
    """Figure 5: the supervisor's own RSS and CPU while idle, side by side for the same minute."""
    peers = [_ready(b.peer(LauncherPeer, "launcher").start()), _ready(b.peer(SupervisordPeer, "supervisord").start())]
    try:
        time.sleep(2)
        procs = [psutil.Process(p.supervisor_pid) for p in peers]
        before = [p.cpu_times() for p in procs]
        samples: list[list[float]] = [[] for _ in peers]
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            for i, proc in enumerate(procs):
                samples[i].append(proc.memory_info().rss / 2**20)
            time.sleep(1)
        for peer, proc, t0, rss in zip(peers, procs, before, samples, strict=True):
            t1 = proc.cpu_times()
            cpu = 100.0 * ((t1.user - t0.user) + (t1.system - t0.system)) / seconds
            b.add(
                Row("5 idle cost", peer.name, "CPU of one core", [cpu], "%"),
                Row("5 idle cost", peer.name, "RSS of the supervisor process", [max(rss)], "MB"),
            )
    finally:
        for peer in peers:
            peer.stop()


def throughput(b: Bench, seconds: int = 5) -> None:
    """Figure 6: GET /api/test with concurrent clients; every peer installed as its users install
    it, so the launcher's workers are compared on what each peer really runs."""
    wrk = shutil.which("wrk")
    if wrk is None:
        raise RuntimeError("wrk is missing: apt-get install wrk (./dev bench does it)")
    peers = [
        _ready(b.peer(BarePeer, "bare uvicorn").start()),
        _ready(b.peer(LauncherPeer, "launcher").start()),
        _ready(b.peer(LauncherPeer, "launcher (2 workers)", LAUNCHER_SERVER_WORKERS="2").start()),
        _ready(b.peer(UvicornWorkersPeer, "uvicorn --workers 2").start()),
        _ready(b.peer(GunicornPeer, "gunicorn -w 2 (uvicorn_worker)").start()),
        _ready(b.peer(GranianPeer, "granian --workers 2").start()),
    ]
    results: dict[str, list[float | None]] = {p.name: [] for p in peers}
    try:
        for peer in peers:
            _wrk(wrk, peer.url, 2)  # warm-up
        for _ in range(RUNS):
            for peer in peers:  # interleaved, so drift on the machine hits both alike
                results[peer.name].append(_wrk(wrk, peer.url, seconds))
    finally:
        for peer in peers:
            peer.stop()
    for name, values in results.items():
        b.add(Row("6 throughput", name, "GET /api/test", values, "req/s"))


def _wrk(wrk: str, url: str, seconds: int) -> float:
    out = subprocess.run(
        [wrk, "-t2", "-c32", f"-d{seconds}s", url + "/api/test"], capture_output=True, text=True, check=True
    ).stdout
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if match is None:
        raise RuntimeError(f"wrk printed no rate: {out}")
    return float(match.group(1))


def clean_stop(b: Bench) -> None:
    """Figure 7: SIGTERM with a 2 s request in flight: time to exit, exit code, request completed."""
    app = {"LAUNCHER_SERVER_APP": "bench.apps:app"}
    for kind, name, extra in [(LauncherPeer, "launcher", app)]:
        took, codes, completed = [], [], []
        for _ in range(RUNS):
            peer = _ready(b.peer(kind, name, None, **extra).start())
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                pending = pool.submit(outcome, peer.url + "/bench/slow/2", 10.0)
                time.sleep(0.5)
                stopped = time.monotonic()
                codes.append(float(peer.stop() or 0))
                took.append(time.monotonic() - stopped)
                completed.append(100.0 if pending.result() == "200" else 0.0)
        b.add(
            Row("7 clean stop", name, "SIGTERM -> exit (2 s request in flight)", took),
            Row("7 clean stop", name, "exit code", codes, ""),
            Row("7 clean stop", name, "in-flight request completed", completed, "%"),
        )


def pool_peers(b: Bench) -> list[Peer]:
    """What FastAPI users deploy for more than one worker, each with two."""
    return [
        b.peer(LauncherPeer, "launcher (2 workers)", LAUNCHER_SERVER_WORKERS="2"),
        b.peer(UvicornWorkersPeer, "uvicorn --workers 2"),
        b.peer(GunicornPeer, "gunicorn -w 2 (uvicorn_worker)"),
        b.peer(GunicornPeer, "gunicorn -w 2 --preload (uvicorn_worker)", options={"preload": True}),
    ]


def _workers_up(peer: Peer, count: int = 2, limit: float = 30.0) -> None:
    if _until(lambda: len(worker_pids(peer)) >= count, time.monotonic(), limit) is None:
        raise RuntimeError(f"{peer.name}: not {count} workers after {limit:g}s: {worker_pids(peer)}")


def _non_200_around(peer: Peer, act: Callable[[], None], after: float = 2.5) -> float:
    """Answers other than 200 on /api/test, polled every 20 ms, from 0.5 s before `act` to `after` it."""
    with Timeline(peer.url + "/api/test") as seen:
        time.sleep(0.5)
        act()
        time.sleep(after)
    return float(len(seen.points) - seen.count("200"))


def worker_crash(b: Bench) -> None:
    """Figure 9: kill -9 of one worker of two (and, for the launcher, of its template): what
    a client polling every 20 ms saw."""
    for peer in pool_peers(b):
        bad: list[float | None] = []
        template: list[float | None] = []
        _ready(peer.start())
        try:
            _workers_up(peer)
            for _ in range(RUNS):
                time.sleep(1.0)
                victim = worker_pids(peer)[0]
                bad.append(_non_200_around(peer, functools.partial(os.kill, victim, signal.SIGKILL)))
                _workers_up(peer)
        finally:
            peer.stop()
        if isinstance(peer, LauncherPeer):  # a fresh launcher: a template's end counts against the crash budget
            _ready(peer.start())
            try:
                _workers_up(peer)
                for run in range(RUNS):  # each kill waits for the template rebuilt after the one before
                    if _until(functools.partial(_templates_past, peer, run), time.monotonic(), 30) is None:
                        raise RuntimeError(f"{peer.name}: no template ready after kill {run}")
                    time.sleep(1.0)
                    victim = _template_pid(peer)
                    template.append(_non_200_around(peer, functools.partial(os.kill, victim, signal.SIGKILL)))
            finally:
                peer.stop()
        b.add(Row("9 worker crash", peer.name, "kill -9 of one of 2 workers: non-200 answers", bad, "count"))
        if template:
            b.add(Row("9 worker crash", peer.name, "kill -9 of the template: non-200 answers", template, "count"))


def _templates_ready(peer: Peer) -> int:
    return len(re.findall(r"template \d+ ready in", peer.log_path.read_text(errors="replace")))


def _templates_past(peer: Peer, count: int) -> bool:
    return _templates_ready(peer) > count


def _template_pid(peer: Peer) -> int:
    found = _until(
        lambda: any(p.name() == "template" for p in psutil.Process(peer.supervisor_pid).children()),
        time.monotonic(),
        30,
    )
    if found is None:
        raise RuntimeError(f"{peer.name}: no template")
    return next(p.pid for p in psutil.Process(peer.supervisor_pid).children() if p.name() == "template")


def pool_memory(b: Bench, requests: int = 1000) -> None:
    """Figure 10: total PSS of the serving process tree (supervisor or master, template, two
    workers) after 1000 requests, the same way for every peer."""
    for peer in pool_peers(b):
        values: list[float | None] = []
        for _ in range(3):
            _ready(peer.start())
            try:
                _workers_up(peer)
                for _ in range(requests):
                    outcome(peer.url + "/api/test")
                time.sleep(1.0)
                values.append(_tree_pss(peer) / 2**20)
            finally:
                peer.stop()
        b.add(Row("10 memory", peer.name, f"PSS of the whole tree after {requests} requests", values, "MB"))


def _tree_pss(peer: Peer) -> int:
    """From the launcher down, or from the master down (not the Docker stand-in above it)."""
    top = psutil.Process(peer.supervisor_pid)
    roots = [top] if isinstance(peer, LauncherPeer) else top.children()
    procs = [p for root in roots for p in [root, *root.children(recursive=True)]]
    return sum(p.memory_full_info().pss for p in procs)


def flood(b: Bench, seconds: float = 5.0) -> None:
    """Figure 8: the launcher's RSS while it answers 503 itself, idle, during a 5 s flood of
    half-sent request heads, and 10 s after it."""
    b.db.stop()
    peer = b.peer(LauncherPeer, "launcher").start()
    try:
        if first(peer.url + "/api/health", "503", time.monotonic(), 30) is None:
            raise RuntimeError("the launcher never answered 503 while the DB was down")
        proc = psutil.Process(peer.supervisor_pid)
        time.sleep(2)
        idle, peak, after = [], [], []
        for _ in range(RUNS):
            idle.append(proc.memory_info().rss / 2**20)
            with concurrent.futures.ThreadPoolExecutor(4) as pool:
                floods = [pool.submit(_flood, peer.port, seconds) for _ in range(4)]
                highest = idle[-1]
                while not all(f.done() for f in floods):
                    highest = max(highest, proc.memory_info().rss / 2**20)
                    time.sleep(0.1)
            peak.append(highest)
            time.sleep(10)
            after.append(proc.memory_info().rss / 2**20)
    finally:
        peer.stop()
        b.db.start()
    base = sorted(idle)[len(idle) // 2]
    b.add(
        Row("8 flood", "launcher", "RSS idle, answering 503", idle, "MB"),
        Row(
            "8 flood",
            "launcher",
            "RSS peak during a 5 s flood of half-sent heads",
            peak,
            "MB",
            target="< idle + 30 MB",
            met=max(peak) < base + 30,
        ),
        Row(
            "8 flood",
            "launcher",
            "RSS 10 s after the flood",
            after,
            "MB",
            target="<= idle + 5 MB",
            met=max(after) <= base + 5,
        ),
    )


def _flood(port: int, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as conn:
                conn.sendall(b"GET /" + b"a" * 9000)
        except OSError:
            pass


def _relative(points: list[tuple[float, str]], zero: float) -> list[tuple[float, str]]:
    return [(t - zero, r) for t, r in points]


def all_figures() -> list[Callable[[Bench], None]]:
    """In the order they run; the newer ones live in more_figures.py."""
    from bench import more_figures

    return [
        cold_start,
        child_crash,
        recovery_and_detection,
        long_outage,
        late_boot,
        late_boot_empty,
        idle_cost,
        throughput,
        clean_stop,
        flood,
        worker_crash,
        pool_memory,
        more_figures.worker_limits,
        more_figures.reload_mode,
        more_figures.image_size,
    ]
