"""Each peer installed the way its users install it, in a virtualenv of its own.

A shared venv hid a dependency choice once: the launcher's bare `uvicorn` ran the pure-Python
HTTP parser and asyncio's loop (2,117 req/s) beside gunicorn's and uvicorn's 3,382 and 3,534.
Now every peer gets exactly its own requirements (bench/requirements/), and the launcher the
project's (requirements.txt, what `pip install launcher` brings). The venvs are kept under
.bench-venvs/ by the hash of their requirements, so a machine builds each once.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REQUIREMENTS = ROOT / "bench" / "requirements"
CACHE = ROOT / ".bench-venvs"


def _text(name: str) -> str:
    """The requirements with the files they include, for the hash."""
    text = (REQUIREMENTS / f"{name}.txt").read_text()
    included = [line.split(maxsplit=1)[1] for line in text.splitlines() if line.startswith("-r ")]
    return text + "".join((REQUIREMENTS / path).read_text() for path in included)


def python(name: str) -> str:
    """The interpreter of the peer environment `name` (bench/requirements/<name>.txt), built once."""
    key = hashlib.sha256(_text(name).encode()).hexdigest()[:12]
    folder = CACHE / f"{name}-{key}"
    interpreter = folder / "bin" / "python"
    if not interpreter.exists():
        print(f"  installing the {name} environment ({folder.name})", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True)
        subprocess.run(
            [
                str(interpreter),
                "-m",
                "pip",
                "install",
                "-q",
                "--disable-pip-version-check",
                "-r",
                str(REQUIREMENTS / f"{name}.txt"),
            ],
            check=True,
        )
    return str(interpreter)


def versions(name: str, *packages: str) -> str:
    """`package version` of each, as installed in that environment (for the report's header)."""
    script = "import importlib.metadata as m, sys; print(', '.join(f'{p} {m.version(p)}' for p in sys.argv[1:]))"
    return subprocess.run(
        [python(name), "-c", script, *packages], capture_output=True, text=True, check=True
    ).stdout.strip()
