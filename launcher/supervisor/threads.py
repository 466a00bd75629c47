"""The launcher's few threads: each blocks on I/O the loop must not wait for, and each must
outlive anything that goes wrong inside it, or its job would stop for the container's life
without a word. A failure is one log line (once per distinct failure), and the thread goes on."""

from __future__ import annotations

import threading
from collections.abc import Callable

RETRY_AFTER = 1.0


class Guarded(threading.Thread):
    """A daemon thread that calls `once()` until stopped; `once()` waits on `halt` itself."""

    def __init__(self, name: str, log: Callable[[str], None], retry_after: float = RETRY_AFTER) -> None:
        super().__init__(name=name, daemon=True)
        self.halt = threading.Event()
        self.retry_after = retry_after
        self._log = log
        self._last_failure = ""

    def stop(self) -> None:
        self.halt.set()

    def once(self) -> None:
        raise NotImplementedError

    def run(self) -> None:
        while not self.halt.is_set():
            try:
                self.once()
            except Exception as err:  # anything at all: said once, then the thread carries on
                failure = f"{type(err).__name__}: {str(err)[:300]}"
                if failure != self._last_failure:
                    self._log(f"{self.name} thread: {failure}; carrying on")
                    self._last_failure = failure
                self.halt.wait(self.retry_after)
