"""Every thread the launcher runs outlives any exception inside it: one log line, and it goes on."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from launcher.config import DatabaseConfig, load
from launcher.supervisor import threads
from launcher.supervisor.dbprobe import ProbeResult
from launcher.supervisor.dbwatch import DbWatcher, ProbeSettings
from launcher.supervisor.sourcewatch import SourceWatcher


def test_a_guarded_thread_logs_a_failure_once_and_carries_on() -> None:
    calls: list[int] = []
    logged: list[str] = []

    class Flaky(threads.Guarded):
        def once(self) -> None:
            calls.append(1)
            if len(calls) < 5:
                raise KeyError("gone")
            self.halt.wait(0.01)

    thread = Flaky("flaky", logged.append, retry_after=0.01)
    thread.start()
    deadline = time.monotonic() + 5
    while len(calls) < 10 and time.monotonic() < deadline:
        time.sleep(0.01)
    thread.stop()
    thread.join(5)
    assert len(calls) >= 10, "it went on after the failures"
    assert logged == ["flaky thread: KeyError: 'gone'; carrying on"], "one line for the same failure"


def test_the_db_probe_thread_survives_a_probe_that_raises() -> None:
    results: list[ProbeResult] = []
    logged: list[str] = []
    calls = iter(range(1000))

    def check(db: DatabaseConfig, timeout: float) -> ProbeResult:
        if next(calls) == 0:
            raise RuntimeError("a bug in the probe")
        return ProbeResult(ok=True)

    cfg = load(None, {})
    settings = ProbeSettings(cfg.database, 0.1, 0.05, 0.05)
    watcher = DbWatcher(lambda: settings, results.append, logged.append, check)
    watcher.retry_after = 0.01
    watcher.start()
    deadline = time.monotonic() + 5
    while not results and time.monotonic() < deadline:
        time.sleep(0.01)
    watcher.stop()
    watcher.join(5)
    assert results and results[0].ok
    assert logged == ["db-probe thread: RuntimeError: a bug in the probe; carrying on"]


def test_the_source_watcher_survives_a_filter_that_raises(tmp_path: Path) -> None:
    logged: list[str] = []
    seen = threading.Event()
    cfg = load(None, {"LAUNCHER_SERVER_APP_DIR": str(tmp_path)}).server
    watcher = SourceWatcher(cfg, logged.append, lambda why: seen.set())
    original = watcher.filter
    broken = iter([True])

    def filter_once(watchfiles: Any) -> Callable[[Any, str], bool]:
        if next(broken, False):
            raise OSError(28, "No space left on device")
        return original(watchfiles)

    watcher.filter = filter_once  # type: ignore[method-assign]
    watcher.retry_after = 0.05
    watcher.start()
    time.sleep(0.5)
    (tmp_path / "main.py").write_text("x = 1\n")
    assert seen.wait(10), "it watches after the failure"
    watcher.stop()
    watcher.join(10)
    assert logged == ["source-watch thread: OSError: [Errno 28] No space left on device; carrying on"]
