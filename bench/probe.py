"""What a client sees: one request's outcome, polling timelines, first-200 timing."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import httpx

POLL = 0.02  # 20 ms between polls
HUNG_AFTER = 1.0  # a request without an answer by then counts as hung


def outcome(url: str, timeout: float = HUNG_AFTER) -> str:
    """'200', '503', ..., 'refused', 'reset' or 'hung'."""
    try:
        return str(httpx.get(url, timeout=timeout).status_code)
    except httpx.TimeoutException:
        return "hung"
    except httpx.ConnectError as err:
        return "refused" if "refused" in str(err).lower() else "reset"
    except httpx.HTTPError:
        return "reset"


def first(url: str, wanted: str, since: float, limit: float) -> float | None:
    """Seconds from `since` until `url` first answers `wanted` (None: not within `limit`)."""
    deadline = since + limit
    while time.monotonic() < deadline:
        if outcome(url) == wanted:
            return time.monotonic() - since
        time.sleep(POLL)
    return None


def first_not(url: str, unwanted: str, since: float, limit: float) -> float | None:
    deadline = since + limit
    while time.monotonic() < deadline:
        if outcome(url) != unwanted:
            return time.monotonic() - since
        time.sleep(POLL)
    return None


@dataclass
class Timeline:
    """Polls a URL every 20 ms in a thread and keeps (time, outcome) pairs."""

    url: str
    points: list[tuple[float, str]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> Timeline:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(5)

    def _run(self) -> None:
        deadline = time.monotonic() + 600
        while not self._stop.is_set() and time.monotonic() < deadline:
            self.points.append((time.monotonic(), outcome(self.url)))
            time.sleep(POLL)

    def count(self, result: str, start: float = 0.0, end: float = float("inf")) -> int:
        return sum(1 for t, r in self.points if r == result and start <= t <= end)
