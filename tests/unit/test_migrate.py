"""The migration step's fast path: it may skip alembic only when the history is linear and known."""

from __future__ import annotations

from pathlib import Path

from api.migrate import VERSIONS, head_revision


def revision(folder: Path, rev: str, down: object) -> None:
    (folder / f"{rev}.py").write_text(f"revision = {rev!r}\ndown_revision = {down!r}\n")


def test_head_of_a_linear_history(tmp_path: Path) -> None:
    revision(tmp_path, "a1", None)
    revision(tmp_path, "b2", "a1")
    assert head_revision(tmp_path) == "b2"


def test_two_heads_leave_the_decision_to_alembic(tmp_path: Path) -> None:
    revision(tmp_path, "a1", None)
    revision(tmp_path, "b2", "a1")
    revision(tmp_path, "c3", "a1")
    assert head_revision(tmp_path) is None


def test_a_merge_leaves_the_decision_to_alembic(tmp_path: Path) -> None:
    revision(tmp_path, "a1", None)
    revision(tmp_path, "b2", "a1")
    revision(tmp_path, "c3", "a1")
    revision(tmp_path, "d4", ("b2", "c3"))
    assert head_revision(tmp_path) is None


def test_the_projects_own_migrations_have_one_head() -> None:
    assert head_revision(VERSIONS) == "0002"
