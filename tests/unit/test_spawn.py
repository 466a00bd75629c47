"""Which prestart steps the template can run forked: `python -m module ...` only."""
from __future__ import annotations

import pytest

from launcher.supervisor.spawn import forkable_step


@pytest.mark.parametrize(("command", "forked"), [
    (("python", "-m", "api.migrate"), ["api.migrate"]),
    (("python", "-m", "alembic", "upgrade", "head"), ["alembic", "upgrade", "head"]),
    (("python", "manage.py"), None),
    (("sh", "-c", "python -m x"), None),
    (("python", "-m"), None),
])
def test_only_python_dash_m_steps_run_forked(command: tuple[str, ...], forked: list[str] | None) -> None:
    assert forkable_step(command) == forked
