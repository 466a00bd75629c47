"""Liveness, in the launcher's own loop: every `liveness.interval` each serving worker gets a
ping on its private channel, which its event loop answers itself (launcher/worker/channel.py);
no answer within `liveness.timeout` is a failed check. With `liveness.app_path`, each also
gets an app-level check through the app, in process, whose failures are logged and only kill
when `liveness.app_failures_kill` says so.

No thread: the pings and answers are a few bytes on non-blocking sockets, and a timer per
round takes the place of a blocking read.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

from launcher import wire
from launcher.config import LivenessConfig
from launcher.supervisor.events import LivenessChecked
from launcher.supervisor.loop import Loop, Timer


@dataclass(frozen=True)
class Asked:
    proc: int
    app: bool  # an app check, not a ping
    warm: bool = False  # a warm-up: its answer does not matter


class Liveness:
    def __init__(
        self,
        loop: Loop,
        settings: Callable[[], LivenessConfig],
        targets: Callable[[], list[int]],
        send: Callable[[int, bytes], bool],
        deliver: Callable[[LivenessChecked], None],
    ) -> None:
        self.loop = loop
        self.settings = settings
        self.targets = targets  # the serving workers
        self.send = send  # to a worker's channel; False when it could not be sent
        self.deliver = deliver
        self.asked: dict[int, Asked] = {}  # outstanding question number -> what it was
        self.numbers = itertools.count(1)
        self.timer: Timer | None = None

    def start(self) -> None:
        self.timer = self.loop.call_later(self.settings().interval, self.round)

    def stop(self) -> None:
        if self.timer is not None:
            self.timer.cancel()

    def round(self) -> None:
        cfg = self.settings()
        waiting = {a.proc for a in self.asked.values() if not a.warm}
        for proc in self.targets():
            if proc in waiting:
                continue  # still waiting for the last answer: one question at a time
            self.ask(Asked(proc, app=False), "ping")
            if cfg.app_path:
                self.ask(Asked(proc, app=True), "check", cfg.app_path)
        self.loop.call_later(cfg.timeout, self.expire)
        self.timer = self.loop.call_later(cfg.interval, self.round)

    def warm(self, procs: tuple[int, ...], path: str) -> None:
        """GET `path` on each worker for the DB connect it costs it; the answer does not matter."""
        for proc in procs:
            self.ask(Asked(proc, app=True, warm=True), "check", path)

    def ask(self, asked: Asked, kind: str, *words: str) -> None:
        n = next(self.numbers)
        self.asked[n] = asked
        if not self.send(asked.proc, wire.encode(kind, n, *words)):
            self.answer(n, ok=False, reason="its channel is closed")

    def answered(self, message: wire.Message) -> None:
        """A pong or a checked from a worker's channel."""
        if message.kind == "pong":
            self.answer(message.number(0), ok=True, reason="")
        elif message.kind == "checked":
            status = message.number(1)
            self.answer(message.number(0), ok=status == 200, reason=f"answered {status}" if status else "no answer")

    def answer(self, n: int, ok: bool, reason: str) -> None:
        asked = self.asked.pop(n, None)
        if asked is not None and not asked.warm:
            self.deliver(LivenessChecked(self.loop.time(), asked.proc, ok, reason, app=asked.app))

    def expire(self) -> None:
        """Questions still unanswered after the timeout are failed checks."""
        timeout = self.settings().timeout
        for n in list(self.asked):
            self.answer(n, ok=False, reason=f"no answer within {timeout:g}s")

    def forget(self, proc: int) -> None:
        self.asked = {n: a for n, a in self.asked.items() if a.proc != proc}
