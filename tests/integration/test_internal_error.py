"""A bug inside the running launcher is one log line and a documented exit code, and
nothing it started is left running."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import psutil
import pytest

from localdb.server import MariaDB
from tests.support import FAST, ROOT

# The launcher as `python -m launcher` runs it, with a fault injected into its probe handler.
FAULTY = """
import sys
from launcher import signals
signals.hold()
import launcher.supervisor.shell
def broken(self, result):
    raise RuntimeError("injected fault")
launcher.supervisor.shell.Supervisor.on_probe = broken
from launcher.cli import main
sys.exit(main(["run"]))
"""


def servers() -> set[int]:
    found = set()
    for proc in psutil.process_iter(["cmdline"]):
        if "launcher.worker" in " ".join(proc.info["cmdline"] or ()):
            found.add(proc.pid)
    return found


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_an_unexpected_error_is_one_line_exit_1_and_nothing_left(mariadb: MariaDB, fmt: str) -> None:
    before = servers()
    env = {**os.environ, **FAST, **mariadb.env, "LAUNCHER_LOG_FORMAT": fmt, "LAUNCHER_SERVER_PORT": "0"}
    done = subprocess.run(
        [sys.executable, "-c", FAULTY],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if "internal error" in line]
    assert len(errors) == 1
    if fmt == "json":
        record = json.loads(errors[0])
        assert record["level"] == "error" and "RuntimeError: injected fault at " in record["message"]
    else:
        assert "RuntimeError: injected fault at " in errors[0]
    time.sleep(0.5)
    assert servers() - before == set()
