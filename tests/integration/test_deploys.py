"""Deploys that go wrong must never take a serving set down (issue "Never worse", 1-6): a new
app whose startup fails, whose import hangs, whose steps fail, a config that does not parse,
a deploy during a deploy, and new code found on disk by a rebuilt template."""

from __future__ import annotations

import functools
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

from localdb.server import MariaDB
from tests.integration.test_pool import Poller
from tests.support import Launcher, alive, wait_until

Start = Callable[..., Launcher]

DEPLOY = """
import os, time
VERSION = {version!r}
time.sleep({import_delay})


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup" and {fail_startup}:
                await send({{"type": "lifespan.startup.failed", "message": "RuntimeError: cannot reach the cache"}})
                return
            if message["type"] == "lifespan.startup":
                await send({{"type": "lifespan.startup.complete"}})
            else:
                await send({{"type": "lifespan.shutdown.complete"}})
                return
    body = VERSION if scope["path"] == "/" else str(os.getpid())
    await send({{"type": "http.response.start", "status": 200, "headers": []}})
    await send({{"type": "http.response.body", "body": body.encode()}})
"""

STEP = """
import os, sys
from deploy import VERSION
with open(os.path.join(os.path.dirname(__file__), "step-ran"), "a") as marker:
    marker.write(VERSION + "\\n")
sys.exit({code})
"""


def deploy(
    folder: Path, version: str, import_delay: float = 0, fail_startup: bool = False, step_code: int | None = None
) -> None:
    (folder / "deploy.py").write_text(
        DEPLOY.format(version=version, import_delay=import_delay, fail_startup=fail_startup)
    )
    if step_code is not None:
        (folder / "stepmod.py").write_text(STEP.format(code=step_code))


def start(
    launcher: Start,
    folder: Path,
    workers: int = 2,
    steps: bool = False,
    env: dict[str, str] | None = None,
    extra: str = "",
) -> Launcher:
    step = "    - name: record\n      command: [python, -m, stepmod]\n" if steps else ""
    config = (
        f"server:\n  app: deploy:app\n  app_dir: {folder}\n  workers: {workers}\n{extra}"
        f"prestart:\n  steps:{' []' if not steps else ''}\n{step}"
    )
    service = launcher(config=config, env=env)
    service.wait_status(200, "/")
    wait_until(lambda: len(service.workers()) == workers, 20, what=f"{workers} workers")
    return service


def versions(service: Launcher, times: int = 20) -> set[str]:
    return {service.get("/").text for _ in range(times)}


def failed_reloads(service: Launcher, count: int) -> bool:
    return service.log().count("reload failed") >= count


def test_a_deploy_whose_startup_fails_keeps_the_old_set_serving(launcher: Start, tmp_path: Path) -> None:
    deploy(tmp_path, "one")
    service = start(launcher, tmp_path, env={"LAUNCHER_RESTART_MAX_RESTARTS": "2"})
    old = [p.pid for p in service.workers()]
    deploy(tmp_path, "two", fail_startup=True)
    with Poller(service, "/") as poller:
        for attempt in range(1, 4):  # past the crash budget: a candidate spends none of it
            service.signal(signal.SIGHUP)
            wait_until(functools.partial(failed_reloads, service, attempt), 20, what="a failed reload")
    assert set(poller.seen) == {200} and versions(service) == {"one"}
    assert [p.pid for p in service.workers()] == old, "the serving set is untouched"
    assert "exited before it was ready (exit code 3: RuntimeError: cannot reach the cache)" in service.log()
    assert service.process is not None and service.process.poll() is None
    deploy(tmp_path, "three")
    service.signal(signal.SIGHUP)
    wait_until(lambda: versions(service) == {"three"}, 20, what="a later reload that works")


def test_a_deploy_whose_import_hangs_does_not_stall_the_pool(launcher: Start, tmp_path: Path) -> None:
    deploy(tmp_path, "one")
    service = start(launcher, tmp_path, workers=1, env={"LAUNCHER_SERVER_TEMPLATE_TIMEOUT": "4s"})
    deploy(tmp_path, "two", import_delay=3600)
    service.signal(signal.SIGHUP)
    service.wait_log("in a new template first")
    victim = service.server_pid()
    os.kill(victim, signal.SIGKILL)
    wait_until(
        lambda: service.status("/") == 200 and service.server_pid() != victim,
        10,
        what="the only worker replaced from the serving template while the new one imports",
    )
    service.signal(signal.SIGHUP)
    service.wait_log("it starts once the one under way ends")
    service.wait_log("reload failed: template", timeout=15)
    assert service.status("/") == 200 and versions(service, 5) == {"one"}


def test_a_frozen_template_is_rebuilt_and_clients_get_a_503_meanwhile(launcher: Start, tmp_path: Path) -> None:
    deploy(tmp_path, "one")
    service = start(launcher, tmp_path, workers=1)
    template = service.template_pid()
    os.kill(template, signal.SIGSTOP)
    os.kill(service.server_pid(), signal.SIGKILL)
    time.sleep(1.5)
    started = time.monotonic()
    response = service.get("/", timeout=5)
    assert response.status_code == 503 and time.monotonic() - started < 1, "answered at once, not left queued"
    assert response.json()["detail"] == "starting"
    service.wait_log("did not fork worker", timeout=15)
    service.wait_status(200, "/", timeout=20)
    wait_until(lambda: not alive([template]), 5, what="the frozen template killed")


def test_a_reload_runs_the_new_codes_prestart_steps_first(launcher: Start, tmp_path: Path) -> None:
    deploy(tmp_path, "one", step_code=0)
    service = start(launcher, tmp_path, steps=True)
    deploy(tmp_path, "two", step_code=0)
    service.signal(signal.SIGHUP)
    wait_until(lambda: versions(service, 5) == {"two"}, 20, what="the new code")
    assert (tmp_path / "step-ran").read_text().split() == ["one", "two"], "the step ran again, from the new code"
    deploy(tmp_path, "three", step_code=4)
    service.signal(signal.SIGHUP)
    service.wait_log("reload failed: prestart step 'record' failed (exit code 4)")
    assert versions(service) == {"two"}


def test_sighup_reads_a_rotated_password_and_the_new_set_uses_it(
    launcher: Start, tmp_path: Path, mariadb: MariaDB
) -> None:
    mariadb.execute("CREATE USER IF NOT EXISTS 'rotator'@'%' IDENTIFIED BY 'first-secret'")
    mariadb.execute("GRANT ALL ON app.* TO 'rotator'@'%'")
    secret = tmp_path / "password"
    secret.write_text("first-secret\n")
    env = {"MYSQL_USER": "rotator", "MYSQL_PASSWORD_FILE": str(secret)}
    service = launcher(env={**env, "LAUNCHER_SERVER_WORKERS": "2"})
    service.wait_status(200)
    try:
        mariadb.execute("ALTER USER 'rotator'@'%' IDENTIFIED BY 'second-secret'")
        secret.write_text("second-secret\n")
        old = [p.pid for p in service.workers()]
        service.signal(signal.SIGHUP)
        wait_until(lambda: not alive(old), 30, what="the old set retired")
        service.wait_status(200)  # new workers, new pools: they log in with the new password
        assert "database lost" not in service.log(), "a refused login is not a lost DB"
        for worker in service.workers():
            assert "first-secret" not in " ".join(worker.cmdline())
    finally:
        mariadb.execute("DROP USER IF EXISTS 'rotator'@'%'")


def test_an_invalid_config_on_sighup_is_a_failed_reload(launcher: Start, tmp_path: Path) -> None:
    deploy(tmp_path, "one")
    service = start(launcher, tmp_path, workers=1)
    config = Path(service.args[1])
    good = config.read_text()
    config.write_text(good + "restart:\n  jitter: lots\n")  # a key the tests' environment does not set
    old = service.server_pid()
    service.signal(signal.SIGHUP)
    service.wait_log(
        "reload failed: invalid configuration, the serving workers and their config stay: restart.jitter = 'lots'"
    )
    assert service.server_pid() == old
    config.write_text(good.replace("workers: 1", "workers: 2\n  reload: true"))
    service.signal(signal.SIGHUP)
    service.wait_log("reload: server.reload (False -> True) needs a restart; ignored until then")
    wait_until(
        lambda: len(service.workers()) == 2 and old not in [p.pid for p in service.workers()],
        20,
        what="the new set with the new worker count",
    )
    assert service.status("/") == 200


def test_a_deploy_during_a_deploy_is_loaded_once_that_one_ends(launcher: Start, tmp_path: Path) -> None:
    deploy(tmp_path, "one")
    service = start(launcher, tmp_path)
    deploy(tmp_path, "two", import_delay=2)
    with Poller(service, "/") as poller:
        service.signal(signal.SIGHUP)
        time.sleep(0.5)
        deploy(tmp_path, "three")
        service.signal(signal.SIGHUP)
        wait_until(lambda: versions(service, 5) == {"three"}, 30, what="the latest deploy")
    assert set(poller.seen) == {200}


def test_a_template_rebuilt_on_new_code_rolls_the_whole_set(launcher: Start, tmp_path: Path) -> None:
    deploy(tmp_path, "one")
    service = start(launcher, tmp_path)
    deploy(tmp_path, "two")
    with Poller(service, "/") as poller:
        os.kill(service.template_pid(), signal.SIGKILL)
        service.wait_log("loaded other code than the serving workers")
        wait_until(lambda: versions(service, 5) == {"two"}, 20, what="the whole set on the new code")
    assert set(poller.seen) == {200}
    answers = [service.get("/").text for _ in range(20)]
    assert answers == ["two"] * 20, "never a mixed pool"
