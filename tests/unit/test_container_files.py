"""Dockerfile and compose.yaml, checked by parsing them (no Docker engine runs here)."""

from __future__ import annotations

import json
import re

import pytest
import yaml

from launcher.config import Config, parse_duration
from tests.support import ROOT


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    pairs = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            pairs.append((word.upper(), rest.strip()))
    return pairs


def instructions(name: str) -> list[str]:
    return [rest for word, rest in dockerfile() if word == name]


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


def test_launcher_is_the_exec_form_entrypoint_so_it_is_pid_1() -> None:
    (entry,) = instructions("ENTRYPOINT")
    assert json.loads(entry) == ["python", "-m", "launcher"]


def test_container_runs_as_a_non_root_user() -> None:
    users = instructions("USER")
    assert users and users[-1] not in ("root", "0")


def test_python_output_is_unbuffered() -> None:
    assert any("PYTHONUNBUFFERED=1" in env for env in instructions("ENV"))


def test_healthcheck_asks_the_launcher_in_exec_form() -> None:
    (check,) = instructions("HEALTHCHECK")
    assert json.loads(check.split("CMD", 1)[1]) == ["python", "-m", "launcher", "healthcheck"]


def test_dependencies_are_installed_in_a_layer_before_the_code() -> None:
    steps = dockerfile()
    install = next(i for i, (w, rest) in enumerate(steps) if w == "RUN" and "requirements.txt" in rest)
    copy_reqs = next(i for i, (w, rest) in enumerate(steps) if w == "COPY" and rest.startswith("requirements.txt"))
    copy_code = [i for i, (w, rest) in enumerate(steps) if w == "COPY" and ("launcher/" in rest or "api/" in rest)]
    assert copy_reqs < install < min(copy_code)


def test_compose_mysql_has_a_healthcheck_and_a_volume(compose: dict) -> None:
    mysql = compose["services"]["mysql"]
    assert mysql["healthcheck"]["test"]
    assert any(v.endswith(":/var/lib/mysql") for v in mysql["volumes"])
    assert set(compose["volumes"]) >= {v.split(":")[0] for v in mysql["volumes"]}


def test_compose_api_restarts_reads_env_file_and_outwaits_the_launchers_grace(compose: dict) -> None:
    api = compose["services"]["api"]
    assert api["restart"] in ("always", "unless-stopped", "on-failure")
    assert api["env_file"] == ".env" or ".env" in api["env_file"]
    assert parse_duration(api["stop_grace_period"]) > Config().server.stop_grace
    assert api["environment"]["MYSQL_HOST"] == "mysql"


def test_env_example_is_committed_and_env_is_ignored() -> None:
    example = (ROOT / ".env.example").read_text()
    for key in ("MYSQL_DATABASE", "MYSQL_USER", "MYSQL_PASSWORD"):
        assert re.search(rf"^{key}=", example, re.M), key
    assert ".env" in (ROOT / ".gitignore").read_text().split()
    assert ".env" in (ROOT / ".dockerignore").read_text().split()


def test_every_file_the_image_copies_exists() -> None:
    for rest in instructions("COPY"):
        for source in rest.split()[:-1]:
            assert (ROOT / source).exists(), source


def test_the_base_image_is_a_build_argument_with_the_official_image_by_default() -> None:
    assert "PYTHON_IMAGE=python:3.11-slim" in instructions("ARG")
    assert instructions("FROM") == ["${PYTHON_IMAGE}"]


def test_no_bytecode_is_written_at_run_time() -> None:
    assert any("PYTHONDONTWRITEBYTECODE=1" in env for env in instructions("ENV"))


def test_the_build_context_leaves_out_tests_benches_and_local_state() -> None:
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {"tests", "bench", "localdb", ".venv", ".localdb", ".git", ".env"} <= set(ignored)


def test_the_development_override_mounts_the_source_and_reloads() -> None:
    dev = yaml.safe_load((ROOT / "compose.dev.yaml").read_text())["services"]["api"]
    assert "--reload" in dev["command"] and any(v.startswith("./api:/app/api") for v in dev["volumes"])
