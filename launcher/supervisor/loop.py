"""A small event loop on selectors: readable fds, timers, signals, and calls from threads.

The launcher lives as long as its container, so what it imports stays resident; asyncio
(4 MB) bought it nothing that these few lines don't: it waits on a handful of pipes and
sockets and runs short callbacks, and its blocking work runs in threads (watchers.py).
"""

from __future__ import annotations

import heapq
import itertools
import selectors
import signal
import socket
import time
from collections import deque
from collections.abc import Callable, Iterable

Callback = Callable[[], object]  # what a callback returns is ignored


# The heap is rebuilt without cancelled timers once they are this many and over half of it
# (asyncio's rule): a flood of short-lived connections cancels a timer each.
COMPACT_AT = 100


def _nothing() -> None:
    """What a timer calls once it is cancelled or has fired."""


class Timer:
    """Drops its callback once cancelled or fired: the callback is often a bound method of
    the object that holds the timer, and that cycle would keep both alive until the cyclic GC."""

    __slots__ = ("when", "callback", "cancelled", "_heap")

    def __init__(self, loop: Loop, when: float, callback: Callback) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False
        self._heap: Loop | None = loop  # None once popped from the loop's heap

    def cancel(self) -> None:
        if self.cancelled:
            return
        self.cancelled = True
        self.callback = _nothing
        if self._heap is not None:
            self._heap._timer_cancelled()

    def fire(self) -> None:
        callback, self.callback = self.callback, _nothing
        callback()


class Loop:
    def __init__(self) -> None:
        self._selector = selectors.DefaultSelector()
        self._timers: list[tuple[float, int, Timer]] = []
        self._cancelled = 0  # cancelled timers still in the heap
        self._order = itertools.count()
        self._calls: deque[Callback] = deque()  # appended from threads; deque.append is atomic
        # One wake-up channel: threads write b"\0", the C signal handler writes the signal's number.
        self._wake_r, self._wake_w = socket.socketpair()
        for end in (self._wake_r, self._wake_w):
            end.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, self._on_wake)
        self._signal_handlers: dict[int, Callback] = {}

    @staticmethod
    def time() -> float:
        return time.monotonic()

    def add_reader(self, fd: int | socket.socket, callback: Callback) -> None:
        self._selector.register(fd, selectors.EVENT_READ, callback)

    def remove_reader(self, fd: int | socket.socket) -> None:
        try:
            self._selector.unregister(fd)
        except (KeyError, ValueError):
            pass

    def call_at(self, when: float, callback: Callback) -> Timer:
        timer = Timer(self, when, callback)
        heapq.heappush(self._timers, (when, next(self._order), timer))
        return timer

    def call_later(self, delay: float, callback: Callback) -> Timer:
        return self.call_at(self.time() + delay, callback)

    def pending_timers(self) -> int:
        """How many timers the heap holds, cancelled ones included (bounded by compaction)."""
        return len(self._timers)

    def _timer_cancelled(self) -> None:
        self._cancelled += 1
        if self._cancelled >= COMPACT_AT and 2 * self._cancelled > len(self._timers):
            self._compact()

    def _compact(self) -> None:
        kept = []
        for entry in self._timers:
            if entry[2].cancelled:
                entry[2]._heap = None
            else:
                kept.append(entry)
        heapq.heapify(kept)
        self._timers = kept
        self._cancelled = 0

    def call_soon_threadsafe(self, callback: Callback) -> None:
        self._calls.append(callback)
        try:
            self._wake_w.send(b"\0")
        except (BlockingIOError, OSError):
            pass  # the channel is full or closing: the loop is awake anyway

    def add_signal_handler(self, sig: int, callback: Callback) -> None:
        """Handled in the loop, never in signal context: Python's handler does nothing, the
        C-level one writes the signal's number to the wake-up channel."""
        self._signal_handlers[sig] = callback
        signal.signal(sig, _ignore)
        signal.set_wakeup_fd(self._wake_w.fileno(), warn_on_full_buffer=False)

    def run(self, until: Callable[[], bool], deadline: float | None = None) -> None:
        """Dispatch events until `until()` holds or the deadline passes."""
        while not until():
            now = self.time()
            if deadline is not None and now >= deadline:
                return
            _dispatch(self._selector.select(self._timeout(now, deadline)))
            self._run_due()
            while self._calls:
                self._calls.popleft()()

    def close(self) -> None:
        for sig in self._signal_handlers:
            signal.signal(sig, signal.SIG_DFL)
        if self._signal_handlers:
            signal.set_wakeup_fd(-1)
        self._selector.close()
        self._wake_r.close()
        self._wake_w.close()

    def _timeout(self, now: float, deadline: float | None) -> float | None:
        if self._calls:
            return 0
        wake = [t for t in (self._timers[0][0] if self._timers else None, deadline) if t is not None]
        return max(0.0, min(wake) - now) if wake else None

    def _run_due(self) -> None:
        """Timers due now; one that a callback sets already due runs after the next poll, so
        a timer can never starve signals and I/O."""
        now = self.time()
        due = []
        while self._timers and self._timers[0][0] <= now:
            timer = heapq.heappop(self._timers)[2]
            timer._heap = None
            if timer.cancelled:
                self._cancelled -= 1
            else:
                due.append(timer)
        for timer in due:
            if not timer.cancelled:
                timer.fire()

    def _on_wake(self) -> None:
        try:
            data = self._wake_r.recv(4096)
        except BlockingIOError:
            return
        for sig in _signals(data):
            handler = self._signal_handlers.get(sig)
            if handler is not None:
                handler()


def _dispatch(events: list[tuple[selectors.SelectorKey, int]]) -> None:
    """In a function of its own, so that no frame keeps the last callback (and the connection
    it belongs to) alive until the next wake-up."""
    for key, _ in events:
        key.data()


def _signals(data: bytes) -> Iterable[int]:
    """Every signal delivered, in order: three SIGTTIN in one wake-up are three more workers.
    (The kernel itself merges a signal sent while the same one is pending.)"""
    return (byte for byte in data if byte)


def _ignore(signum: int, frame: object) -> None:
    """Python-level handler; the work happens in the loop."""
