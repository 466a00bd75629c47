"""Reload mode (`--reload`): an edit is served without a refused or reset request, a broken
save keeps the old code serving, and a first start that does not import shows its traceback
on the 503 page until the next save fixes it (issue "Install it for any ASGI app", 3)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.app_sources import versioned
from tests.integration.test_pool import Poller
from tests.support import Launcher, wait_until

Start = Callable[..., Launcher]


def save(folder: Path, text: str) -> None:
    (folder / "main.py").write_text(text)


def start(launcher: Start, folder: Path, text: str) -> Launcher:
    save(folder, text)
    return launcher(config=f"server:\n  app: main:app\n  app_dir: {folder}\n  reload: true\ndatabase:\n  gate: false\n")


def test_an_edit_is_served_within_2s_and_no_request_fails(launcher: Start, tmp_path: Path) -> None:
    service = start(launcher, tmp_path, versioned("one"))
    service.wait_status(200, "/")
    with Poller(service, "/") as poller:
        save(tmp_path, versioned("two"))
        saved = time.monotonic()
        wait_until(lambda: service.get("/").text == "two", 10, what="the edit served")
        took = time.monotonic() - saved
    assert set(poller.seen) == {200}, poller.seen
    assert took < 2.0, f"the edit took {took:.2f}s to be served"
    assert "reload requested (main.py changed)" in service.log()


def test_a_broken_save_keeps_the_old_code_and_the_fix_swaps(launcher: Start, tmp_path: Path) -> None:
    service = start(launcher, tmp_path, versioned("one"))
    service.wait_status(200, "/")
    with Poller(service, "/") as poller:
        save(tmp_path, "def app(:\n")
        service.wait_log("reload failed: template")
        assert service.get("/").text == "one"
        save(tmp_path, versioned("fixed"))
        wait_until(lambda: service.get("/").text == "fixed", 10, what="the fix served")
    assert set(poller.seen) == {200}
    assert service.log().count("SyntaxError") == 2, "the traceback once, and once in the reload failed line"


def test_a_first_start_that_does_not_import_shows_its_traceback_until_a_save_fixes_it(
    launcher: Start, tmp_path: Path
) -> None:
    service = start(launcher, tmp_path, "import does_not_exist\n")
    service.wait_log("waiting for the next change to the source")
    page = httpx.get(service.url + "/", timeout=5)
    assert page.status_code == 503 and page.headers["content-type"].startswith("text/plain")
    assert "ModuleNotFoundError: No module named 'does_not_exist'" in page.text
    assert "Traceback" in page.text
    time.sleep(2)
    assert service.log().count("Traceback") == 1, "printed once: no retry until the code changes"
    save(tmp_path, versioned("one"))
    service.wait_status(200, "/", timeout=10)


def test_outside_reload_mode_a_broken_app_never_shows_its_code(launcher: Start, tmp_path: Path) -> None:
    save(tmp_path, "import does_not_exist\n")
    service = launcher(config=f"server:\n  app: main:app\n  app_dir: {tmp_path}\ndatabase:\n  gate: false\n")
    service.wait_log("template 1 exited before it was ready")
    page = httpx.get(service.url + "/", timeout=5)
    assert page.status_code == 503 and "does_not_exist" not in page.text and "Traceback" not in page.text
