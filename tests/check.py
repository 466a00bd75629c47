"""`./dev check`: the checks a change must pass, in one place, run by the suite too
(tests/unit/test_checks.py): ruff's formatter and linter over the project, mypy --strict over
launcher/, and mypy over everything else."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHECKS = {
    "ruff format": [sys.executable, "-m", "ruff", "format", "--check", "."],
    "ruff check": [sys.executable, "-m", "ruff", "check", "."],
    "mypy --strict launcher": [sys.executable, "-m", "mypy", "--strict", "launcher"],
    "mypy": [sys.executable, "-m", "mypy"],
}


def run(name: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(CHECKS[name], cwd=ROOT, capture_output=True, text=True, timeout=600)


def main() -> int:
    failed = []
    for name in CHECKS:
        done = run(name)
        print(f"{'ok' if done.returncode == 0 else 'FAILED'}: {name}")
        if done.returncode:
            print((done.stdout + done.stderr).rstrip()[-6000:])
            failed.append(name)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
