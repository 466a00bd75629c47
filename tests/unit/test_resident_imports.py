"""The launcher stays resident for the container's life: what it imports is paid for all along.
Everything outside launcher/worker/ (the app's processes) and launcher/tools/ (short-lived
commands) is resident, and must not load the heavy libraries, nor an optional feature's."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.support import ROOT

FORBIDDEN = (
    "asyncio",
    "pydantic",
    "logging",
    "argparse",
    "pathlib",
    "tempfile",  # it brings shutil, bz2 and lzma: 0.45 MB resident
    "shutil",
    "lzma",
    "cryptography",
    "uvicorn",
    "fastapi",
    "sqlalchemy",
    "psutil",
    "uvloop",
    "httptools",
    "watchfiles",
    "argon2",
    "launcher.worker",
    "launcher.tools",
)
NOT_RESIDENT = ("worker", "tools")


def resident_modules() -> list[str]:
    package = ROOT / "launcher"
    return sorted(
        "launcher." + ".".join(path.relative_to(package).with_suffix("").parts).removesuffix(".__init__")
        for path in package.rglob("*.py")
        if not set(NOT_RESIDENT) & set(path.relative_to(package).parts) and path.name != "__main__.py"
    )


def test_resident_modules_load_none_of_the_heavy_libraries() -> None:
    modules = resident_modules()
    assert {"launcher.supervisor.shell", "launcher.supervisor.sourcewatch", "launcher.config.files"} <= set(modules)
    script = (
        "import json, sys\n"
        + "".join(f"import {module}\n" for module in modules)
        + f"print(json.dumps(sorted(m for m in {FORBIDDEN!r} if m in sys.modules)))"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == []
