"""A template's digest is of the code it loaded, not of what is on disk after its import."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

from launcher.worker.digest import Recorder


def load(folder: Path, name: str, recorder: Recorder) -> None:
    sys.path.insert(0, str(folder))
    try:
        with recorder.recording():
            importlib.import_module(name)
    finally:
        sys.path.remove(str(folder))
        sys.modules.pop(name, None)


def test_the_digest_follows_the_code_loaded(tmp_path: Path) -> None:
    (tmp_path / "appmod_a.py").write_text("VERSION = 1\n")
    first, second, third = Recorder(str(tmp_path)), Recorder(str(tmp_path)), Recorder(str(tmp_path))
    load(tmp_path, "appmod_a", first)
    load(tmp_path, "appmod_a", second)
    (tmp_path / "appmod_a.py").write_text("VERSION = 2  # a new deploy\n")
    load(tmp_path, "appmod_a", third)
    assert first.digest() == second.digest() != third.digest()


def test_a_file_saved_after_the_import_does_not_change_the_digest(tmp_path: Path) -> None:
    (tmp_path / "appmod_b.py").write_text("VERSION = 1\n")
    recorder = Recorder(str(tmp_path))
    load(tmp_path, "appmod_b", recorder)
    before = recorder.digest()
    (tmp_path / "appmod_b.py").write_text("VERSION = 2\n")
    assert recorder.digest() == before


def test_installed_packages_are_not_the_apps_code(tmp_path: Path) -> None:
    recorder = Recorder("/")
    with recorder.recording():
        importlib.import_module("launcher.worker.protocol")
    assert not any("site-packages" in path for path in recorder.read)
