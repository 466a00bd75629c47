"""The process table's races, scripted in every order that can happen (the style of gunicorn's
test_arbiter.py reap tests): forked, pid reported, stopped, reaped, forgotten, pid reused."""

from __future__ import annotations

import signal

from launcher.supervisor.events import ExitStatus
from launcher.supervisor.processes import Claim, ProcessTable

DIED = ExitStatus(code=3)
KILLED = ExitStatus(signal=signal.SIGKILL)
PID, START = 4242, 777


def test_a_pid_reported_then_reaped_is_the_process_that_exited() -> None:
    table = ProcessTable()
    table.add(7, now=0.0)
    assert table.claim(7, PID, START) == Claim()
    assert table.reaped(PID, START, DIED, now=1.0) == 7


def test_a_process_reaped_before_it_reported_its_pid_is_dispatched_at_the_claim() -> None:
    table = ProcessTable()
    table.add(7, now=0.0)
    assert table.reaped(PID, START, DIED, now=0.1) is None, "not known yet: kept"
    assert table.claim(7, PID, START) == Claim(status=DIED)
    assert not table.unclaimed


def test_a_stop_asked_before_the_pid_is_known_is_sent_when_it_is() -> None:
    table = ProcessTable()
    table.add(7, now=0.0)
    assert table.signal(7, signal.SIGTERM) is None
    assert table.claim(7, PID, START) == Claim(signal=signal.SIGTERM)
    assert table.signal(7, signal.SIGKILL) == PID


def test_a_kill_asked_after_a_stop_wins_while_the_pid_is_unknown() -> None:
    table = ProcessTable()
    table.add(7, now=0.0)
    table.signal(7, signal.SIGKILL)
    table.signal(7, signal.SIGTERM)
    assert table.claim(7, PID, START) == Claim(signal=signal.SIGKILL)


def test_a_process_forgotten_before_it_was_born_is_not_claimed() -> None:
    table = ProcessTable()
    table.add(7, now=0.0)
    table.forget(7)
    assert table.claim(7, PID, START) is None, "the shell kills that pid"


def test_a_stale_status_is_never_matched_to_a_new_process_with_a_reused_pid() -> None:
    table = ProcessTable()
    assert table.reaped(PID, 100, DIED, now=0.0) is None, "an orphan that once had this pid"
    table.add(7, now=5.0)
    assert table.claim(7, PID, 200) == Claim(), "same pid, other start: another process"
    assert table.reaped(PID, 200, KILLED, now=9.0) == 7


def test_without_start_times_only_a_status_reaped_after_the_request_matches() -> None:
    table = ProcessTable()
    table.reaped(PID, 0, DIED, now=1.0)
    table.add(7, now=5.0)
    assert table.claim(7, PID, 0) == Claim()
    table.add(8, now=10.0)
    table.reaped(PID + 1, 0, KILLED, now=10.5)
    assert table.claim(8, PID + 1, 0) == Claim(status=KILLED)


def test_a_reaped_pid_whose_start_differs_from_the_claim_is_an_orphan() -> None:
    table = ProcessTable()
    table.add(7, now=0.0, pid=PID, start=START)
    assert table.reaped(PID, START + 1, DIED, now=1.0) is None
    assert table.reaped(PID, START, DIED, now=1.0) == 7


def test_unclaimed_statuses_are_bounded_in_number() -> None:
    table = ProcessTable(limit=64)
    for pid in range(1000, 1200):
        table.reaped(pid, pid, DIED, now=1.0)
    assert len(table.unclaimed) == 64 and min(table.unclaimed) == 1136, "the oldest go first"


def test_unclaimed_statuses_are_bounded_in_age() -> None:
    table = ProcessTable(max_age=60.0)
    table.reaped(PID, START, DIED, now=0.0)
    table.reaped(PID + 1, START, DIED, now=61.0)
    assert list(table.unclaimed) == [PID + 1]
    table.add(7, now=61.5)
    assert table.claim(7, PID, START) == Claim()


def test_a_pid_said_twice_counts_once() -> None:
    table = ProcessTable()
    table.add(7, now=0.0)
    table.claim(7, PID, START)
    assert table.claim(7, PID + 5, START) == Claim()
    assert table.reaped(PID, START, DIED, now=1.0) == 7


def test_a_spawned_process_is_known_by_its_pid_at_once() -> None:
    table = ProcessTable()
    table.add(3, now=0.0, pid=PID, start=START)
    assert table.signal(3, signal.SIGTERM) == PID
    assert table.reaped(PID, START, DIED, now=1.0) == 3
    assert table.forget(3) is not None and table.forget(3) is None
