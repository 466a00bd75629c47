"""The supervisor's event loop: timers in order, cancellation that frees memory, calls from
threads, and real signals through the wake-up channel."""

from __future__ import annotations

import gc
import os
import signal
import threading
import time

from launcher.supervisor.loop import COMPACT_AT, Loop


def test_timers_fire_in_time_order_and_cancelled_ones_never() -> None:
    loop = Loop()
    fired: list[str] = []
    now = loop.time()
    loop.call_at(now + 0.03, lambda: fired.append("c"))
    loop.call_at(now + 0.01, lambda: fired.append("a"))
    loop.call_at(now + 0.02, lambda: fired.append("b"))
    loop.call_at(now + 0.015, lambda: fired.append("never")).cancel()
    loop.run(until=lambda: len(fired) == 3, deadline=now + 2)
    loop.close()
    assert fired == ["a", "b", "c"]


def test_cancelled_timers_do_not_pile_up_in_the_heap() -> None:
    loop = Loop()
    for _ in range(50_000):
        loop.call_later(3600, lambda: None).cancel()
    assert loop.pending_timers() < 2 * COMPACT_AT
    loop.close()


class _Owner:
    """Holds its timer, whose callback is its own bound method: the cycle of a connection."""

    def __init__(self, loop: Loop) -> None:
        self.timer = loop.call_later(3600, self.close)

    def close(self) -> None:
        self.timer.cancel()


def test_a_cancelled_timer_breaks_the_cycle_with_its_owner() -> None:
    loop = Loop()
    gc.disable()
    try:
        for _ in range(1000):
            _Owner(loop).close()
        alive = sum(isinstance(o, _Owner) for o in gc.get_objects())
    finally:
        gc.enable()
        loop.close()
    assert alive == 0


def test_a_fired_timer_breaks_the_cycle_with_its_owner() -> None:
    loop = Loop()
    owners = [_Owner(loop) for _ in range(100)]
    for owner in owners:
        owner.timer.cancel()
        owner.timer = loop.call_later(0, owner.close)
    del owners, owner
    gc.disable()
    try:
        loop.run(until=lambda: False, deadline=loop.time() + 0.2)
        alive = sum(isinstance(o, _Owner) for o in gc.get_objects())
    finally:
        gc.enable()
        loop.close()
    assert alive == 0


def test_call_soon_threadsafe_wakes_a_loop_waiting_on_nothing() -> None:
    loop = Loop()
    done = threading.Event()
    threading.Timer(0.05, lambda: loop.call_soon_threadsafe(done.set)).start()
    loop.run(until=done.is_set, deadline=loop.time() + 5)
    loop.close()
    assert done.is_set()


def test_a_real_signal_is_handled_in_the_loop() -> None:
    loop = Loop()
    got: list[str] = []
    loop.add_signal_handler(signal.SIGUSR1, lambda: got.append("usr1"))
    threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGUSR1)).start()
    try:
        loop.run(until=lambda: bool(got), deadline=loop.time() + 5)
    finally:
        loop.close()
    assert got == ["usr1"]


def test_a_timer_set_already_due_waits_for_the_next_poll() -> None:
    """So a callback that keeps rescheduling itself cannot starve I/O and signals."""
    loop = Loop()
    ran = []
    woke = threading.Event()

    def again() -> None:
        ran.append(1)
        loop.call_later(0, again)

    loop.call_later(0, again)
    threading.Timer(0.05, lambda: loop.call_soon_threadsafe(woke.set)).start()
    loop.run(until=woke.is_set, deadline=loop.time() + 5)
    loop.close()
    assert woke.is_set() and ran


def test_every_signal_delivered_during_one_wake_up_counts() -> None:
    """Three SIGTTIN while the loop is busy are three more workers, not one."""
    loop = Loop()
    got: list[str] = []
    loop.add_signal_handler(signal.SIGTTIN, lambda: got.append("ttin"))

    def busy() -> None:
        for _ in range(3):  # each delivered on its own while the loop works
            os.kill(os.getpid(), signal.SIGTTIN)
            time.sleep(0.05)

    loop.call_soon_threadsafe(busy)
    try:
        loop.run(until=lambda: len(got) >= 3, deadline=loop.time() + 5)
    finally:
        loop.close()
    assert got == ["ttin"] * 3
