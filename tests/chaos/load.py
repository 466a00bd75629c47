"""A continuous, bounded client load (reads and note writes) that records what each request saw."""

from __future__ import annotations

import errno
import itertools
import threading
import time
from dataclasses import dataclass, field

import httpx

REQUEST_TIMEOUT = 10.0  # longer than the 3 s bound, so a hang is measured, not cut short
PAUSE = 0.02  # between requests of one client: load, not a flood
MAX_DURATION = 300.0  # a load that was never stopped ends by itself


@dataclass(frozen=True)
class Outcome:
    started: float
    ended: float
    path: str
    result: str  # an HTTP status as text, or refused / reset / hang / error:...
    note_id: int | None = None
    connecting: float | None = None  # when the TCP connect began, if it did

    @property
    def took(self) -> float:
        return self.ended - self.started


def classify(err: Exception) -> str:
    if isinstance(err, httpx.TimeoutException):
        return "hang"
    if isinstance(err, httpx.ConnectError):
        cause = err.__context__ or err.__cause__
        refused = isinstance(cause, ConnectionRefusedError) or getattr(cause, "errno", None) == errno.ECONNREFUSED
        return "refused" if refused or "refused" in str(err).lower() else "reset"
    if isinstance(err, (httpx.ReadError, httpx.RemoteProtocolError, httpx.WriteError)):
        return "reset"
    return f"error:{type(err).__name__}"


@dataclass
class Load:
    base_url: str
    clients: int = 3
    outcomes: list[Outcome] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __enter__(self) -> Load:
        for n in range(self.clients):
            thread = threading.Thread(target=self._run, args=(n,), daemon=True)
            self._threads.append(thread)
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(REQUEST_TIMEOUT + 5)

    def _run(self, n: int) -> None:
        # A new connection per request: keep-alive would add the race of HTTP/1.1 itself
        # (a server closing an idle connection as a request is sent on it) to what we measure.
        deadline = time.monotonic() + MAX_DURATION
        paths = itertools.cycle(["/api/test", "POST /api/notes", "/api/health"])
        for counter in itertools.count():
            if self._stop.is_set() or time.monotonic() > deadline:
                return
            self._record(self._one(next(paths), f"c{n}-{counter}"))
            time.sleep(PAUSE)

    def _one(self, path: str, text: str) -> Outcome:
        started = time.monotonic()
        connecting: list[float] = []

        def trace(event: str, info: object) -> None:
            if event == "connection.connect_tcp.started":
                connecting.append(time.monotonic())

        method, _, url = path.rpartition(" ")
        body = {"text": text} if method == "POST" else None
        try:
            with httpx.Client(timeout=REQUEST_TIMEOUT) as client:
                response = client.request(method or "GET", self.base_url + url, json=body, extensions={"trace": trace})
            note = response.json().get("id") if response.status_code == 201 else None
            result = str(response.status_code)
        except httpx.HTTPError as err:
            result, note = classify(err), None
        return Outcome(started, time.monotonic(), path, result, note, connecting[0] if connecting else None)

    def _record(self, outcome: Outcome) -> None:
        with self._lock:
            self.outcomes.append(outcome)

    def snapshot(self) -> list[Outcome]:
        with self._lock:
            return list(self.outcomes)
