"""Hostile or careless configuration: every input ends in a config or one ConfigError, exit 78
with a short message naming the key, never a traceback, a hang or a flood of output."""

from __future__ import annotations

import os
import string
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from launcher.config import Config, ConfigError, load
from tests.support import ROOT

BAD_FILES = {
    "infinite duration": ("probe:\n  startup_timeout: .inf\n", "probe.startup_timeout = inf"),
    "overflowing duration": ("probe:\n  startup_timeout: 1.0e+309\n", "probe.startup_timeout = inf"),
    "duration past the loop's timers": ("probe:\n  startup_timeout: 600h\n", "less than or equal to 604800"),
    "not a number": ("probe:\n  interval: .nan\n", "probe.interval = nan"),
    "backoff start past its cap": (
        "restart:\n  backoff_initial: 1m\n  backoff_max: 10s\n",
        "restart.backoff_initial = '1m' (in",
    ),
    "probe timeout not below its interval": (
        "probe:\n  interval: 1s\n  timeout: 2s\n",
        "must be less than interval of the same section (1s)",
    ),
    "liveness timeout not below its interval": ("liveness:\n  interval: 1s\n  timeout: 1s\n", "liveness.timeout"),
    "frantic retry": ("probe:\n  retry_interval: 1ms\n", "greater than or equal to 0.05"),
    "NUL in the password": ('database:\n  password: "a\\0b"\n', "database.password (in "),
    "NUL in server.host": ('server:\n  host: "0.0.0.0\\0"\n', "server.host = '0.0.0.0\\x00'"),
    "NUL in a prestart command": (
        'prestart:\n  steps:\n    - name: m\n      command: [python, "-c\\0"]\n',
        "prestart.steps.0.command",
    ),
    "integer of 5000 digits": ("server:\n  port: " + "9" * 5000 + "\n", "server.port = '9999"),
    "explicit date tag": ("database:\n  name: !!timestamp 2024-02-30\n", "invalid YAML at line 2"),
    "integer tag on no integer": ("server:\n  port: !!int 0x\n", "invalid YAML value"),
    "nested 500 levels": ("a: " + "[" * 500 + "]" * 500 + "\n", "nested deeper than 32 levels"),
    "alias bomb": (
        "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
        + "".join(
            f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
            f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n"
            for i in range(8)
        ),
        "expands to more than 10000 values",
    ),
    "password far too long": ("database:\n  password: " + "p" * 200_000 + "\n", "at most 4096"),
}


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def run_config(*args: str, env: dict[str, str] | None = None, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "launcher", *args, "config"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={"PATH": os.environ["PATH"], **(env or {})},
    )


def assert_one_clear_error(done: subprocess.CompletedProcess[str], expected: str | None) -> None:
    assert done.returncode == 78, done.stderr
    assert "Traceback" not in done.stderr
    assert len(done.stderr) < 2000, done.stderr[:2000]
    if expected:
        assert expected in done.stderr


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_hostile_config_file_exits_78_with_a_short_message(tmp_path: Path, case: str) -> None:
    text, expected = BAD_FILES[case]
    assert_one_clear_error(run_config("--config", str(write(tmp_path, text))), expected)


def test_date_shaped_name_is_plain_text(tmp_path: Path) -> None:
    cfg = load(write(tmp_path, "database:\n  name: 2024-02-30\n"), {})
    assert cfg.database.name == "2024-02-30"


@pytest.mark.parametrize(
    ("var", "value", "expected"),
    [
        ("MYSQL_DATABASE", "2024-02-30", None),
        ("MYSQL_PORT", "9" * 5000, "database.port (from MYSQL_PORT; value not shown): expected a whole number"),
        ("MYSQL_USER", "app\x01", "database.user"),
        ("LAUNCHER_PROBE_STARTUP_TIMEOUT", "1e309", "probe.startup_timeout"),
        ("MYSQL_PASSWORD", "x" * 5000, "at most 4096"),
    ],
)
def test_hostile_environment_value_exits_78(var: str, value: str, expected: str | None) -> None:
    done = run_config(env={var: value})
    if expected is None:
        assert done.returncode == 0, done.stderr
    else:
        assert_one_clear_error(done, expected)


@pytest.mark.parametrize(
    ("var", "value", "field"),
    [
        ("MYSQL_DATABASE", "1234", ("database", "name")),
        ("MYSQL_DATABASE", "0x1F", ("database", "name")),
        ("MYSQL_USER", "yes", ("database", "user")),
        ("MYSQL_HOST", "10:20:30", ("database", "host")),
        ("MYSQL_PASSWORD", "0123", ("database", "password")),
    ],
)
def test_environment_values_are_text_for_text_fields(var: str, value: str, field: tuple[str, str]) -> None:
    section = getattr(load(None, {var: value}), field[0])
    got = getattr(section, field[1])
    assert (got.reveal() if field[1] == "password" else got) == value


def test_environment_numbers_and_flags_are_parsed_by_their_field() -> None:
    cfg = load(None, {"MYSQL_PORT": "3307", "LAUNCHER_SERVER_ACCESS_LOG": "false", "LAUNCHER_RESTART_JITTER": "0.5"})
    assert (cfg.database.port, cfg.server.access_log, cfg.restart.jitter) == (3307, False, 0.5)


def test_invalid_section_is_reported_even_with_an_environment_override(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"server = 5 \(in .*expected a mapping of keys"):
        load(write(tmp_path, "server: 5\n"), {"LAUNCHER_SERVER_PORT": "8001"})


def test_database_section_values_are_never_echoed(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load(write(tmp_path, "database: S3cr3tPa55\n"), {})
    assert "S3cr3tPa55" not in str(err.value)
    assert "database (in " in str(err.value)


def test_a_fifo_config_file_is_refused_at_once(tmp_path: Path) -> None:
    fifo = tmp_path / "config.yaml"
    os.mkfifo(fifo)
    done = run_config("--config", str(fifo), timeout=10)
    assert_one_clear_error(done, "it is a FIFO, not a regular file")


def test_a_fifo_password_file_is_refused_at_once(tmp_path: Path) -> None:
    fifo = tmp_path / "secret"
    os.mkfifo(fifo)
    done = run_config(env={"MYSQL_PASSWORD_FILE": str(fifo)}, timeout=10)
    assert_one_clear_error(done, "MYSQL_PASSWORD_FILE=")


def test_dev_zero_is_refused_without_reading_it() -> None:
    assert_one_clear_error(run_config("--config", "/dev/zero", timeout=10), "a character device")


def test_a_huge_config_file_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "# " + "x" * (2 << 20) + "\n")
    assert_one_clear_error(run_config("--config", str(path)), "larger than 1048576 bytes")


def test_a_password_file_holds_at_most_4_kib(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("p" * 5000)
    assert_one_clear_error(run_config(env={"MYSQL_PASSWORD_FILE": str(secret)}), "larger than 4096 bytes")


def test_many_problems_are_counted_not_all_printed(tmp_path: Path) -> None:
    text = "server:\n" + "".join(f"  knob{i}: 1\n" for i in range(500))
    with pytest.raises(ConfigError) as err:
        load(write(tmp_path, text), {})
    lines = str(err.value).splitlines()
    assert len(lines) == 21 and lines[-1] == "... and 480 more problems"


# Property: whatever the document and the environment, load returns a Config or raises ConfigError.

_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=20),
    st.sampled_from(["1s", "500ms", ".inf", "0", "-1", "yes", "2024-02-30", "0x1F", "10:20:30"]),
)
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)
_keys = st.sampled_from(
    [
        "server",
        "database",
        "probe",
        "liveness",
        "restart",
        "prestart",
        "on_db_loss",
        "log",
        "port",
        "host",
        "interval",
        "timeout",
        "steps",
        "command",
        "name",
        "password",
        "x",
    ]
)
_documents = st.dictionaries(_keys, st.one_of(_values, st.dictionaries(_keys, _values, max_size=6)), max_size=8)
_env_names = st.sampled_from(
    [
        "MYSQL_HOST",
        "MYSQL_PORT",
        "MYSQL_DATABASE",
        "MYSQL_USER",
        "MYSQL_PASSWORD",
        "LAUNCHER_PROBE_INTERVAL",
        "LAUNCHER_PROBE_TIMEOUT",
        "LAUNCHER_SERVER_PORT",
        "LAUNCHER_ON_DB_LOSS",
        "LAUNCHER_SERVER_ACCESS_LOG",
        "LAUNCHER_RESTART_JITTER",
        "LAUNCHER_PRESTART_STEPS",
        "LAUNCHER_LOG_FORMAT",
    ]
)
_env_values = st.text(alphabet=st.characters(blacklist_characters="\0", blacklist_categories=["Cs"]), max_size=30)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(document=_documents, environ=st.dictionaries(_env_names, _env_values, max_size=5))
def test_any_document_and_environment_give_a_config_or_a_config_error(
    tmp_path_factory: pytest.TempPathFactory, document: dict, environ: dict
) -> None:
    path = tmp_path_factory.mktemp("h") / "config.yaml"
    path.write_text(yaml.safe_dump(document, allow_unicode=True))
    try:
        assert isinstance(load(path, environ), Config)
    except ConfigError as err:
        assert 0 < len(str(err)) < 5000


@settings(max_examples=300, deadline=None)
@given(text=st.text(alphabet=string.printable + "&*!|>[]{}:-#'\"\\é\0", max_size=200))
def test_any_text_as_a_config_file_gives_a_config_or_a_config_error(
    tmp_path_factory: pytest.TempPathFactory, text: str
) -> None:
    path = tmp_path_factory.mktemp("t") / "config.yaml"
    path.write_text(text)
    try:
        assert isinstance(load(path, {}), Config)
    except ConfigError as err:
        assert 0 < len(str(err)) < 5000


def test_config_is_loaded_without_waiting_on_a_writer(tmp_path: Path) -> None:
    """A FIFO with a writer attached still is no config: the load neither blocks nor reads it."""
    fifo = tmp_path / "config.yaml"
    os.mkfifo(fifo)
    writer = threading.Thread(target=lambda: open(fifo, "w").close(), daemon=True)
    writer.start()
    with pytest.raises(ConfigError, match="FIFO"):
        load(fifo, {})
