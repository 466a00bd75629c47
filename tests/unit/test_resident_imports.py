"""The launcher stays resident for the container's life: what it imports is paid for all along."""
from __future__ import annotations

import json
import subprocess
import sys

from tests.support import ROOT

RESIDENT = ("launcher.cli", "launcher.supervisor", "launcher.libc")
FORBIDDEN = ("asyncio", "pydantic", "logging", "argparse", "pathlib", "cryptography", "uvicorn", "fastapi",
             "sqlalchemy", "psutil")


def test_resident_modules_load_none_of_the_heavy_libraries() -> None:
    script = ("import json, sys\n" + "".join(f"import {module}\n" for module in RESIDENT)
              + f"print(json.dumps(sorted(m for m in {FORBIDDEN!r} if m in sys.modules)))")
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == []
