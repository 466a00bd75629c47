"""The image built from the repository's Dockerfile, run under a real Docker engine: PID 1, a
non-root user, no zombie, HEALTHCHECK through a MySQL outage, `docker stop`, `docker kill -s
HUP`, `docker restart`, a read-only root filesystem, and the fault table's rows in a real
container (issue "The container, for real")."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from localdb.server import free_port
from tests.app_sources import versioned
from tests.docker.fixtures import Images, Mysql, run
from tests.support import ROOT, wait_until

pytestmark = pytest.mark.docker

TESTS_APP = {"LAUNCHER_SERVER_APP": "tests.apps:controllable"}


class Api:
    """The application container and what a client of it sees."""

    def __init__(self, engine: Any, built: Images, mysql: Mysql, env: dict[str, str] | None = None, **kw: Any) -> None:
        self.port = free_port()
        environment = {
            **mysql.env,
            "LAUNCHER_SERVER_PORT": str(self.port),
            "LAUNCHER_SERVER_HOST": "127.0.0.1",
            **(env or {}),
        }
        self.container = run(engine, built.app, environment=environment, **kw)

    def status(self, path: str = "/api/health") -> int | None:
        try:
            return httpx.get(f"http://127.0.0.1:{self.port}{path}", timeout=5).status_code
        except httpx.HTTPError:
            return None

    def text(self, path: str) -> str:
        return httpx.get(f"http://127.0.0.1:{self.port}{path}", timeout=5).text

    def wait(self, code: int = 200, path: str = "/api/health", timeout: float = 60) -> None:
        wait_until(lambda: self.status(path) == code, timeout, what=f"{path} -> {code}\n{self.logs()}")

    def logs(self) -> str:
        return self.container.logs().decode(errors="replace")[-4000:]

    def exec(self, *command: str) -> str:
        code, out = self.container.exec_run(list(command))
        return str(out.decode(errors="replace"))

    def processes(self) -> dict[int, str]:
        """pid -> name of every process in the container, read from its /proc."""
        listing = self.exec("sh", "-c", "for d in /proc/[0-9]*; do echo ${d#/proc/} $(cat $d/comm 2>/dev/null); done")
        pairs = (line.partition(" ") for line in listing.splitlines())
        return {int(pid): name for pid, _, name in pairs if pid.isdigit() and name}

    def health(self) -> str:
        self.container.reload()
        return str(self.container.attrs["State"].get("Health", {}).get("Status", ""))


@pytest.fixture
def api(engine: Any, built: Images, mysql: Mysql) -> Iterator[Api]:
    service = Api(
        engine,
        built,
        mysql,
        healthcheck={"interval": 500_000_000, "timeout": 3_000_000_000, "retries": 2, "start_period": 1_000_000_000},
    )
    yield service
    service.container.remove(force=True, v=True)


def mounted(engine: Any, built: Images, mysql: Mysql, env: dict[str, str], volumes: dict[str, Any], **kw: Any) -> Api:
    return Api(engine, built, mysql, env={**TESTS_APP, **env}, volumes=volumes, **kw)


TESTS = {str(ROOT / "tests"): {"bind": "/app/tests", "mode": "ro"}}


def test_the_launcher_is_pid_1_as_a_non_root_user_with_its_template_and_workers(api: Api) -> None:
    api.wait()
    assert api.exec("id", "-u").strip() == "10001"
    assert api.exec("cat", "/proc/1/cmdline").split("\0")[:3] == ["python", "-m", "launcher"]
    names = sorted(api.processes().values())
    assert {"template", "worker"} <= set(names)
    assert api.processes()[1] == "python"


def test_an_app_that_abandons_children_leaves_no_zombie(engine: Any, built: Images, mysql: Mysql) -> None:
    service = mounted(engine, built, mysql, {}, TESTS)
    try:
        service.wait(path="/api/pid")
        orphans = [int(service.text("/api/orphan")) for _ in range(3)]
        time.sleep(1.5)  # the orphans' sleeps end; PID 1 must reap them
        states = service.exec("sh", "-c", "cat /proc/[0-9]*/stat")
        assert " Z " not in states, states
        assert not set(orphans) & set(service.processes())
    finally:
        service.container.remove(force=True, v=True)


def test_the_healthcheck_follows_the_service_through_a_mysql_outage(api: Api, mysql: Mysql) -> None:
    wait_until(lambda: api.health() == "healthy", 60, what=f"healthy\n{api.logs()}")
    mysql.container.stop(timeout=10)
    wait_until(lambda: api.health() == "unhealthy", 30, what="unhealthy: /api/health answers 503 (exit 75)")
    assert api.status("/api/") == 200, "what needs no DB stays up"
    mysql.container.start()
    mysql.wait()
    wait_until(lambda: api.health() == "healthy", 60, what="healthy again")


def test_docker_stop_lets_slow_requests_finish_and_exits_0(engine: Any, built: Images, mysql: Mysql) -> None:
    service = mounted(engine, built, mysql, {}, TESTS)
    try:
        service.wait(path="/api/pid")
        with ThreadPoolExecutor(3) as pool:
            pending = [pool.submit(service.status, "/api/slow/3") for _ in range(3)]
            time.sleep(0.5)
            started = time.monotonic()
            service.container.stop(timeout=20)
            took = time.monotonic() - started
            assert [p.result() for p in pending] == [200, 200, 200]
        service.container.reload()
        assert service.container.attrs["State"]["ExitCode"] == 0
        assert took < 10, "within the launcher's stop_grace"
    finally:
        service.container.remove(force=True, v=True)


@contextmanager
def polling(service: Api, path: str) -> Iterator[list[int | None]]:
    seen: list[int | None] = []
    halt = threading.Event()

    def poll() -> None:
        while not halt.is_set():
            seen.append(service.status(path))
            time.sleep(0.02)

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        halt.set()
        thread.join(10)


def test_docker_kill_hup_serves_new_code_without_a_refused_request(
    engine: Any, built: Images, mysql: Mysql, tmp_path: Path
) -> None:
    (tmp_path / "versioned.py").write_text(versioned("one"))
    tmp_path.chmod(0o755)
    service = mounted(
        engine,
        built,
        mysql,
        {"LAUNCHER_SERVER_APP": "versioned:app", "LAUNCHER_SERVER_APP_DIR": "/srv", "LAUNCHER_SERVER_WORKERS": "2"},
        {str(tmp_path): {"bind": "/srv", "mode": "ro"}},
    )
    try:
        service.wait(path="/")
        (tmp_path / "versioned.py").write_text(versioned("two"))
        with polling(service, "/") as seen:
            service.container.kill(signal="HUP")
            wait_until(lambda: service.text("/") == "two", 30, what=f"the new code\n{service.logs()}")
        assert set(seen) == {200}, seen
    finally:
        service.container.remove(force=True, v=True)


def test_docker_restart_comes_back(api: Api) -> None:
    api.wait()
    api.container.restart(timeout=20)
    api.wait()


def test_a_read_only_root_filesystem_with_a_tmpfs_tmp_serves(engine: Any, built: Images, mysql: Mysql) -> None:
    service = Api(engine, built, mysql, read_only=True, tmpfs={"/tmp": "rw,size=16m"})
    try:
        service.wait()
        assert service.exec("python", "-m", "launcher", "healthcheck").strip().endswith('{"status":"ok","db":"ok"}')
    finally:
        service.container.remove(force=True, v=True)


def test_a_worker_killed_in_the_container_is_replaced_while_the_other_serves(
    engine: Any, built: Images, mysql: Mysql
) -> None:
    service = Api(engine, built, mysql, env={"LAUNCHER_SERVER_WORKERS": "2"})
    try:
        service.wait()
        wait_until(lambda: list(service.processes().values()).count("worker") == 2, 20, what="two workers")
        victim = next(pid for pid, name in service.processes().items() if name == "worker")
        with polling(service, "/api/") as seen:
            service.exec("sh", "-c", f"kill -9 {victim}")  # kill is a shell builtin: no procps in the image
            wait_until(
                lambda: list(service.processes().values()).count("worker") == 2 and victim not in service.processes(),
                20,
                what="the replacement",
            )
        assert set(seen) <= {200, None} and seen.count(None) <= 1, "only a request in flight on the victim is cut"
    finally:
        service.container.remove(force=True, v=True)


def test_the_image_has_no_compiler(api: Api) -> None:
    assert api.exec("sh", "-c", "command -v gcc cc clang || echo none").strip() == "none"
