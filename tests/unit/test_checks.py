"""The project passes its own checks (./dev check), not only writes them down."""

from __future__ import annotations

import pytest

from tests.check import CHECKS, run


@pytest.mark.parametrize("name", list(CHECKS))
def test_the_project_passes(name: str) -> None:
    done = run(name)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
