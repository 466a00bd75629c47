"""Config: every bad input gets one line naming the key, the value, its source and the fix."""

from __future__ import annotations

import os
from dataclasses import fields, is_dataclass
from pathlib import Path

import pytest
import yaml

from launcher.config import Config, ConfigError, Policy, load, masked, parse_duration, validate
from launcher.config.parsers import available_cpus
from tests.support import ROOT


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


BAD_FILES = [
    ("probe: [unclosed", "invalid YAML at line 1"),
    ("- just\n- a list\n", "expected a mapping of sections at the top, got list"),
    ("probe:\n  intervall: 1s\n", "probe.intervall (in "),
    ("probe:\n  intervall: 1s\n", "unknown key; remove it or check its spelling"),
    ("colour: blue\n", "colour (in "),
    ("probe:\n  interval: soon\n", "probe.interval = 'soon'"),
    ("probe:\n  interval: soon\n", "expected a duration like 500ms, 2s or 1m"),
    ("probe:\n  interval: -1s\n", "probe.interval = '-1s'"),
    ("probe:\n  interval: 0\n", "probe.interval = 0 (in"),
    ("probe:\n  interval: 0\n", "greater than 0"),
    ("server:\n  port: 70000\n", "server.port = 70000"),
    ("server:\n  port: 70000\n", "less than or equal to 65535"),
    ("server:\n  port: eighty\n", "server.port = 'eighty'"),
    ("server:\n  app: not-an-import-path\n", "server.app = 'not-an-import-path'"),
    ("on_db_loss: reboot\n", "on_db_loss = 'reboot'"),
    ("on_db_loss: reboot\n", "'restart', 'swap', 'keep' or 'exit'"),
    ("probe:\n  failures_before_down: 0\n", "probe.failures_before_down = 0"),
    ("restart:\n  jitter: 2\n", "restart.jitter = 2"),
    ("log:\n  format: xml\n", "log.format = 'xml'"),
    ("prestart:\n  steps:\n    - name: migrate\n", "prestart.steps.0.command (in "),
    ("prestart:\n  steps:\n    - name: migrate\n", "required key is missing"),
    ("prestart:\n  steps:\n    - name: x\n      command: []\n", "prestart.steps.0.command = []"),
    ("prestart:\n  - name: migrate\n", "prestart = [{'name': 'migrate'}]"),
    ("server:\n  access_log: maybe\n", "server.access_log = 'maybe'"),
    ("database: 5\n", "database (in "),
]


@pytest.mark.parametrize(("text", "expected"), BAD_FILES)
def test_bad_config_file_names_the_problem(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        load(write(tmp_path, text), {})
    assert expected in str(err.value)


def test_bad_environment_value_names_the_variable() -> None:
    with pytest.raises(ConfigError) as err:
        load(None, {"LAUNCHER_PROBE_TIMEOUT": "fast"})
    assert "probe.timeout = 'fast' (from LAUNCHER_PROBE_TIMEOUT)" in str(err.value)


def test_bad_mysql_port_names_the_services_own_variable() -> None:
    with pytest.raises(ConfigError) as err:
        load(None, {"MYSQL_PORT": "0"})
    assert "database.port (from MYSQL_PORT; value not shown): must be greater than or equal to 1" in str(err.value)


def test_every_problem_is_reported_not_only_the_first(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load(write(tmp_path, "server:\n  port: -1\nprobe:\n  timeout: x\n"), {})
    assert len(str(err.value).splitlines()) == 2


def test_missing_explicit_config_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the config file"):
        load(tmp_path / "nope.yaml", {})


def test_config_file_that_is_not_utf8_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_bytes(b"probe:\n  interval: \xff\xfe\n")
    with pytest.raises(ConfigError, match="not UTF-8 text"):
        load(path, {})


def test_unreadable_password_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="MYSQL_PASSWORD_FILE=.*cannot read the password file"):
        load(None, {"MYSQL_PASSWORD_FILE": str(tmp_path / "missing")})


def test_password_is_never_echoed_in_an_error() -> None:
    with pytest.raises(ConfigError) as err:
        load(None, {"MYSQL_PASSWORD": "hunter2", "LAUNCHER_DATABASE_PASSWORD": "x", "MYSQL_PORT": "x"})
    assert "hunter2" not in str(err.value)


def test_durations_accept_units() -> None:
    assert [parse_duration(v) for v in ("500ms", "2s", "1m", "1h", 3, "1.5")] == [0.5, 2, 60, 3600, 3, 1.5]


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "probe:\n  interval: 5s\non_db_loss: keep\n")
    cfg = load(path, {"LAUNCHER_PROBE_INTERVAL": "750ms", "LAUNCHER_ON_DB_LOSS": "swap", "MYSQL_HOST": "db"})
    assert (cfg.probe.interval, cfg.on_db_loss, cfg.database.host) == (0.75, Policy.SWAP, "db")


def test_password_file_is_read_and_its_newline_dropped(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    cfg = load(None, {"MYSQL_PASSWORD_FILE": str(secret), "MYSQL_PASSWORD": "ignored"})
    assert cfg.database.password.reveal() == "s3cret"


def test_numeric_looking_password_stays_text() -> None:
    assert load(None, {"MYSQL_PASSWORD": "0123"}).database.password.reveal() == "0123"


def test_masked_config_hides_the_password() -> None:
    shown = masked(load(None, {"MYSQL_PASSWORD": "hunter2"}))
    assert shown["database"]["password"] == "***"
    assert "hunter2" not in repr(shown)


# What the repository's config.yaml sets for its own service; every other value is the default.
SERVICE_KEYS = {("server", "app"), ("server", "health_path"), ("prestart", "steps")}


def test_config_yaml_holds_every_knob_with_its_default() -> None:
    """The shipped file documents the defaults: it lists them all, unchanged but for the service's own."""
    data = yaml.safe_load((ROOT / "config.yaml").read_text())
    shipped, defaults = validate(data), Config()
    for section in fields(Config):
        if is_dataclass(section.default):
            assert set(data[section.name]) == {knob.name for knob in fields(section.default)}, section.name
            for knob in fields(section.default):
                if (section.name, knob.name) not in SERVICE_KEYS:
                    assert getattr(getattr(shipped, section.name), knob.name) == getattr(
                        getattr(defaults, section.name), knob.name
                    ), (section.name, knob.name)
    assert set(data) == {section.name for section in fields(Config)}
    assert shipped.on_db_loss == defaults.on_db_loss and shipped.log == defaults.log


def test_every_knob_has_a_comment() -> None:
    for line in (ROOT / "config.yaml").read_text().splitlines():
        exempt = ("-", "#", "command", "timeout", "steps")
        if line.startswith("  ") and ":" in line and not line.lstrip().startswith(exempt):
            assert "#" in line, f"no comment on: {line}"


@pytest.mark.parametrize(("value", "expected"), [("2", 2), ("auto", available_cpus()), (" auto ", available_cpus())])
def test_workers_is_a_count_or_auto(value: str, expected: int) -> None:
    assert load(None, {"LAUNCHER_SERVER_WORKERS": value}).server.workers == expected


def test_auto_workers_are_at_most_the_cpus_this_process_may_use() -> None:
    assert 1 <= available_cpus() <= len(os.sched_getaffinity(0))


@pytest.mark.parametrize("value", ["0", "257", "lots", "-1", "1.5"])
def test_workers_out_of_range_names_what_is_allowed(value: str) -> None:
    with pytest.raises(ConfigError, match=r"server.workers = .* expected auto or a whole number from 1 to 256"):
        load(None, {"LAUNCHER_SERVER_WORKERS": value})


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        (
            {"MYSQL_SSL_MODE": "verify_ca"},
            "database.ssl_ca (the default): required when database.ssl_mode is verify_ca",
        ),
        (
            {"MYSQL_SSL_MODE": "sometimes"},
            "database.ssl_mode (from MYSQL_SSL_MODE; value not shown): expected 'disabled'",
        ),
        ({"MYSQL_SSL_CERT": "/c.pem"}, "database.ssl_key (the default): required when database.ssl_cert is set"),
        (
            {"LAUNCHER_SERVER_SSL_KEYFILE": "/k.pem"},
            "server.ssl_certfile (the default): required when server.ssl_keyfile",
        ),
        (
            {"LAUNCHER_SERVER_MAX_BODY_SIZE": "lots"},
            "server.max_body_size = 'lots' (from LAUNCHER_SERVER_MAX_BODY_SIZE)",
        ),
        ({"LAUNCHER_SERVER_WORKERS": "9", "LAUNCHER_SERVER_MAX_WORKERS": "4"}, "must be at most max_workers"),
    ],
)
def test_new_settings_are_checked_like_the_rest(env: dict[str, str], expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        load(None, env)
    assert expected in str(err.value)


def test_a_password_pymysql_cannot_send_is_a_config_error_naming_the_key() -> None:
    with pytest.raises(ConfigError) as err:
        load(None, {"MYSQL_PASSWORD": "pässwörd-日本"})
    message = str(err.value)
    assert "database.password (from MYSQL_PASSWORD; value not shown): has characters outside Latin-1" in message
    assert "日本" not in message
    assert load(None, {"MYSQL_PASSWORD": "pässwörd"}).database.password.reveal() == "pässwörd", "Latin-1 is fine"


def test_sizes_take_binary_units() -> None:
    cfg = load(None, {"LAUNCHER_SERVER_MAX_BODY_SIZE": "64k", "LAUNCHER_SERVER_MAX_HEAD_SIZE": "1M"})
    assert (cfg.server.max_body_size, cfg.server.max_head_size) == (64 * 1024, 1024 * 1024)


def test_patterns_come_as_a_list_or_as_commas_from_the_environment(tmp_path: Path) -> None:
    assert load(None, {"LAUNCHER_SERVER_RELOAD_INCLUDE": "*.py, *.html"}).server.reload_include == ("*.py", "*.html")
    assert load(write(tmp_path, "server:\n  reload_exclude: [tests/*]\n"), {}).server.reload_exclude == ("tests/*",)


def test_a_renamed_key_says_what_it_became(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"liveness.path \(in .*\): liveness checks no longer need a route"):
        load(write(tmp_path, "liveness:\n  path: /api/live\n"), {})
