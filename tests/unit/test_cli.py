"""The command line as a user meets it: exit codes and one clear line, never a traceback."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ROOT


def launcher(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "launcher", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, env=env)


def test_help_lists_the_commands_and_exits_0() -> None:
    done = launcher("--help")
    assert done.returncode == 0
    assert all(command in done.stdout for command in ("run", "config", "check-db", "healthcheck", "--config PATH"))


@pytest.mark.parametrize(("args", "problem"), [
    (("reboot",), "unknown command 'reboot'"),
    (("--verbose",), "unknown option --verbose"),
    (("--config",), "--config needs a path"),
    (("config", "run"), "one command at most"),
])
def test_bad_command_line_exits_64_with_the_usage(args: tuple[str, ...], problem: str) -> None:
    done = launcher(*args)
    assert done.returncode == 64
    assert done.stderr.startswith("usage: python -m launcher")
    assert problem in done.stderr
    assert "Traceback" not in done.stderr


def test_config_command_prints_the_resolved_config_with_the_password_masked(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("probe:\n  interval: 2s\n")
    done = launcher(f"--config={path}", "config", env={"MYSQL_PASSWORD": "hunter2", "PATH": ""})
    assert done.returncode == 0, done.stderr
    assert '"interval": 2.0' in done.stdout and '"password": "***"' in done.stdout
    assert "hunter2" not in done.stdout
