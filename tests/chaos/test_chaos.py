"""Faults under continuous client load: a client gets a real answer or a fast, honest 503.

Each scenario runs the launcher against the suite's MariaDB (through a proxy that can
black-hole the path), injects its fault three times, each time waiting for recovery,
then sends SIGTERM in the middle of a fourth. Until that SIGTERM every request must
get 200/201/503 within 3 s; requests in flight at the SIGTERM must complete; every
acknowledged note must be readable; nothing may be left behind; the launcher's fds
and memory must not grow.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import psutil
import pytest

from localdb.server import MariaDB
from tests.chaos.faults import DbFaults, DockerFaults, LocalFaults
from tests.chaos.load import Load, Outcome
from tests.docker.fixtures import Mysql
from tests.support import Launcher, alive, wait_until

pytestmark = pytest.mark.chaos

Start = Callable[..., Launcher]
REPEATS = 3
ANSWERS = {"200", "201", "503"}
MAX_REQUEST = 3.0  # no request may take longer
RECOVERY = 10.0  # back to 200 on /api/health within this after the fault ends
CHAOS_ENV = {
    "LAUNCHER_LIVENESS_INTERVAL": "500ms",
    "LAUNCHER_LIVENESS_TIMEOUT": "400ms",
    "LAUNCHER_LIVENESS_FAILURES": "2",
    "LAUNCHER_SERVER_APP": "tests.apps:api_with_exit",
}


@dataclass(frozen=True)
class DbFault:
    inject: Callable[[DbFaults], None]
    heal: Callable[[DbFaults], None]
    hold: float  # how long the fault lasts


DB_FAULTS = {
    "stopped": DbFault(lambda f: f.stop(), lambda f: f.start(), 3.0),
    "killed": DbFault(lambda f: f.kill(), lambda f: f.start(), 2.0),
    "frozen": DbFault(lambda f: f.freeze(), lambda f: f.thaw(), 15.0),
    "blackholed": DbFault(lambda f: f.blackhole(), lambda f: f.restore(), 15.0),
}


@dataclass
class Watch:
    """What the scenario observed of the launcher, besides the client outcomes."""

    service: Launcher
    pids: set[int]
    rss: int
    fds: int
    recoveries: list[float]
    growth: tuple[int, int] = (0, 0)  # RSS bytes and fds gained over the fault cycles

    @classmethod
    def begin(cls, service: Launcher) -> Watch:
        proc = psutil.Process(service.pid)
        return cls(service, set(), proc.memory_info().rss, proc.num_fds(), [])

    def note_processes(self) -> None:
        self.pids |= {p.pid for p in self.service.children()}

    def wait_recovered(self, since: float) -> None:
        self.service.wait_status(200, timeout=RECOVERY + 20)
        self.recoveries.append(time.monotonic() - since)
        self.note_processes()

    def measure_growth(self) -> None:
        proc = psutil.Process(self.service.pid)
        self.growth = (proc.memory_info().rss - self.rss, proc.num_fds() - self.fds)


@pytest.fixture
def local_faults(mariadb: MariaDB) -> Iterator[LocalFaults]:
    faults = LocalFaults(mariadb)
    yield faults
    faults.close()


def run_scenario(
    service: Launcher, load: Load, inject: Callable[[], float | None], heal: Callable[[], None], hold: float
) -> tuple[Watch, float]:
    """REPEATS fault/recovery cycles, then SIGTERM in the middle of one more fault.
    `inject` returns the moment a fault began to cut connections in flight, if it does."""
    watch = Watch.begin(service)
    time.sleep(1.0)
    for _ in range(REPEATS):
        inject()
        time.sleep(hold)
        heal()
        watch.wait_recovered(time.monotonic())
        time.sleep(1.0)
    watch.measure_growth()
    inject()
    time.sleep(min(hold, 2.0))
    stop_at = time.monotonic()
    service.signal(signal.SIGTERM)
    code = service.wait_exit(30)
    load.stop()
    heal()
    assert code == 0, service.log()
    return watch, stop_at


def check(outcomes: list[Outcome], stop_at: float, cut: list[tuple[float, float]], log: str) -> None:
    """Every request that connected before the stop: 200/201/503 in under 3 s, except those
    connected before and still open during a window in `cut`: a child that dies takes the
    connections it had accepted along, and nobody can answer those. Requests that connect
    after the launcher exited are refused, rightly."""

    def excused(o: Outcome) -> bool:
        return o.connecting is not None and any(o.connecting <= end and o.ended >= start for start, end in cut)

    def before_stop(o: Outcome) -> bool:
        return o.connecting is not None and o.connecting < stop_at

    before = [o for o in outcomes if before_stop(o) and not excused(o)]
    bad = [o for o in before if o.result not in ANSWERS or o.took > MAX_REQUEST]
    assert before, "the load made no request"
    assert not bad, f"{len(bad)} of {len(before)} requests failed, e.g. {bad[:5]}\n--- log:\n{log[-4000:]}"
    assert len([o for o in outcomes if before_stop(o) and excused(o)]) <= 10 * max(len(cut), 1)


def check_aftermath(watch: Watch, load: Load, note_ids: set[int]) -> None:
    acknowledged = {o.note_id for o in load.snapshot() if o.note_id is not None}
    assert acknowledged, "no note was written"
    assert acknowledged <= note_ids, f"acknowledged notes lost: {sorted(acknowledged - note_ids)[:10]}"
    assert alive(sorted(watch.pids)) == [], "processes left behind"
    assert max(watch.recoveries) < RECOVERY, watch.recoveries
    rss_growth, fd_growth = watch.growth
    assert rss_growth < 5 * 2**20, f"launcher RSS grew by {rss_growth / 2**20:.1f} MB"
    assert fd_growth <= 2, f"launcher fds grew by {fd_growth}"


def db_scenario(launcher: Start, faults: DbFaults, fault: DbFault, policy: str, workers: int = 1) -> None:
    service = launcher(
        env={**faults.env, **CHAOS_ENV, "LAUNCHER_ON_DB_LOSS": policy, "LAUNCHER_SERVER_WORKERS": str(workers)}
    )
    service.wait_status(200)
    with Load(service.url) as load:
        watch, stop_at = run_scenario(
            service, load, lambda: fault.inject(faults), lambda: fault.heal(faults), fault.hold
        )
    check(load.snapshot(), stop_at, [], service.log())
    check_aftermath(watch, load, faults.note_ids())
    print(f"recovery after the fault ended: {', '.join(f'{r:.2f}s' for r in watch.recoveries)}")


@pytest.mark.parametrize(("policy", "workers"), [("restart", 1), ("swap", 1), ("swap", 2)])
@pytest.mark.parametrize("fault", list(DB_FAULTS))
def test_mysql_fault_under_load(
    launcher: Start, local_faults: LocalFaults, fault: str, policy: str, workers: int
) -> None:
    db_scenario(launcher, local_faults, DB_FAULTS[fault], policy, workers)


# Child faults --------------------------------------------------------------------------


def _kill_child(service: Launcher, sig: signal.Signals) -> float:
    os.kill(service.server_pid(), sig)
    return time.monotonic()


def _kill_template(service: Launcher) -> None:
    os.kill(service.template_pid(), signal.SIGKILL)
    service.wait_log("building a new one while the workers keep serving", timeout=10)


def _exit_child_0(service: Launcher) -> float:
    import httpx

    httpx.get(service.url + "/__exit/0", timeout=5)
    return time.monotonic()


def _reload(service: Launcher) -> None:
    reloads = service.log().count("reload done")
    service.signal(signal.SIGHUP)
    wait_until(lambda: service.log().count("reload done") > reloads, 20, what="the new set serving")


CHILD_FAULTS: dict[str, Callable[[Launcher], float | None]] = {
    "killed": lambda s: _kill_child(s, signal.SIGKILL),
    "frozen": lambda s: _kill_child(s, signal.SIGSTOP),
    "exits_0": _exit_child_0,
    "sighup": lambda s: _reload(s),
    "template_killed": lambda s: _kill_template(s),
}
CUTS_NOTHING = ("sighup", "template_killed")


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("fault", list(CHILD_FAULTS))
def test_child_fault_under_load(launcher: Start, local_faults: LocalFaults, fault: str, workers: int) -> None:
    service = launcher(env={**local_faults.env, **CHAOS_ENV, "LAUNCHER_SERVER_WORKERS": str(workers)})
    service.wait_status(200)
    cut: list[tuple[float, float]] = []

    def inject() -> None:
        moment = CHILD_FAULTS[fault](service)
        if moment is not None:  # the signal went out just before `moment`; exit 0 comes 50 ms after
            cut.append((moment, moment + 0.15) if fault == "exits_0" else (moment - 0.05, moment))

    with Load(service.url) as load:
        watch, stop_at = run_scenario(service, load, inject, lambda: None, 0.5)
    check(load.snapshot(), stop_at, [] if fault in CUTS_NOTHING else cut, service.log())
    check_aftermath(watch, load, local_faults.note_ids())


# The same scenarios against a MariaDB container, through the docker SDK ------------------

DOCKER_FAULTS = {
    "stopped": DbFault(lambda f: f.stop(), lambda f: f.start(), 3.0),
    "killed": DbFault(lambda f: f.kill(), lambda f: f.start(), 2.0),
    "paused": DbFault(lambda f: f.freeze(), lambda f: f.thaw(), 5.0),
    "restarted": DbFault(lambda f: f.restart(), lambda f: None, 0.0),
}


@pytest.mark.docker
@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("fault", list(DOCKER_FAULTS))
def test_mysql_container_fault_under_load(launcher: Start, mysql: Mysql, fault: str, workers: int) -> None:
    faults = DockerFaults(mysql.container, mysql.env, ("127.0.0.1", mysql.port))
    try:
        db_scenario(launcher, faults, DOCKER_FAULTS[fault], "swap", workers)
    finally:
        faults.close()
