"""The command line as a user meets it: exit codes and one clear line, never a traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from launcher import __version__
from launcher.cli import Parsed, UsageError, parse_args
from tests.support import ROOT


def launcher(*args: str, env: dict[str, str] | None = None, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "launcher", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "", "PYTHONPATH": str(ROOT), **(env or {})},
    )


def test_help_lists_the_commands_and_the_options_and_exits_0() -> None:
    done = launcher("--help")
    assert done.returncode == 0
    for word in (
        "run",
        "config",
        "check-db",
        "healthcheck",
        "module:attr",
        "--config PATH",
        "--workers VALUE",
        "--reload",
        "--no-db",
        "--app-dir VALUE",
        "--host VALUE",
        "--port VALUE",
    ):
        assert word in done.stdout, word


def test_version_says_the_version() -> None:
    assert launcher("--version").stdout == f"launcher {__version__}\n"


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (("reboot",), "unknown command 'reboot'"),
        (("--verbose",), "unknown option --verbose"),
        (("--config",), "--config needs a path"),
        (("--port",), "--port needs a value"),
        (("--reload=yes",), "--reload takes no value"),
        (("config", "run"), "one command at most"),
        (("a:app", "b:app"), "one app at most"),
    ],
)
def test_bad_command_line_exits_64_with_the_usage(args: tuple[str, ...], problem: str) -> None:
    done = launcher(*args)
    assert done.returncode == 64
    assert done.stderr.startswith("usage: launcher")
    assert problem in done.stderr
    assert "Traceback" not in done.stderr


def test_the_app_and_flags_are_read_as_uvicorn_users_write_them() -> None:
    parsed = parse_args(["main:app", "--host", "::", "--port=9000", "--workers", "3", "--reload", "--no-db"])
    assert isinstance(parsed, Parsed) and parsed.command == "run"
    assert {key: value for key, (_, value) in parsed.flags.items()} == {
        ("server", "app"): "main:app",
        ("server", "host"): "::",
        ("server", "port"): "9000",
        ("server", "workers"): "3",
        ("server", "reload"): True,
        ("database", "gate"): False,
    }


def test_a_flag_wins_over_the_environment_which_wins_over_the_file(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("server:\n  port: 7000\n  workers: 2\n  host: 127.0.0.1\n")
    done = launcher(
        "--config",
        str(config),
        "config",
        "--port",
        "9000",
        "--json",
        env={"LAUNCHER_SERVER_PORT": "8000", "LAUNCHER_SERVER_WORKERS": "3"},
    )
    server = json.loads(done.stdout)["server"]
    assert (server["port"], server["workers"], server["host"]) == (9000, 3, "127.0.0.1")


def test_config_says_where_each_value_came_from(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("probe:\n  interval: 2s\n")
    done = launcher(
        "--config",
        str(config),
        "config",
        "main:app",
        "--workers",
        "2",
        env={"MYSQL_PASSWORD": "hunter2", "MYSQL_HOST": "db"},
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert f"probe.interval = 2.0  # in {config}" in lines
    assert 'server.app = "main:app"  # from main:app' in lines
    assert "server.workers = 2  # from --workers" in lines
    assert 'database.host = "db"  # from MYSQL_HOST' in lines
    assert 'database.password = "***"  # from MYSQL_PASSWORD' in lines
    assert "probe.timeout = 0.5  # default" in lines
    assert "hunter2" not in done.stdout


def test_with_no_config_file_at_all_the_defaults_apply(tmp_path: Path) -> None:
    done = launcher("config", env={}, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "# config file: none" in done.stdout and 'server.app = ""  # default' in done.stdout


def test_run_with_no_app_says_how_to_name_one(tmp_path: Path) -> None:
    done = launcher("--port", "0", env={}, cwd=tmp_path)
    assert done.returncode == 78
    assert "no app to serve: give it as module:attr (launcher main:app) or set server.app" in done.stderr


def test_a_bad_flag_value_names_the_flag() -> None:
    done = launcher("config", "--port", "eighty")
    assert done.returncode == 78
    assert "server.port = 'eighty' (from --port): expected a whole number" in done.stderr


def test_parse_raises_usage_errors_not_tracebacks() -> None:
    with pytest.raises(UsageError):
        parse_args(["--workers"])
