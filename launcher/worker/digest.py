"""Which code a template loaded: a digest of the bytes the import system read for the app's own
modules while the template imported it.

The launcher compares it across templates: a template rebuilt after a crash that loaded
other code than the serving workers run (new code on disk, no SIGHUP) must not serve beside
them; the launcher rolls the whole set to it instead; and a reload queued behind another is
skipped only when its code is the same (docs/design.md, Reloads). Reading the files again
after the import would be wrong: a file saved while a slow import ran would be counted as
loaded. So the bytes are recorded as the loader reads them (the source, or its cached
bytecode, whose header names the source's size and time), under the app's directory only.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class Recorder:
    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root) + os.sep
        installed = {os.path.abspath(p) + os.sep for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}
        self.installed = tuple(installed)
        self.read: dict[str, str] = {}

    def mine(self, path: str) -> bool:
        parts = path.split(os.sep)
        return (
            path.startswith(self.root)
            and not path.startswith(self.installed)
            and "site-packages" not in parts
            and "dist-packages" not in parts
        )

    @contextmanager
    def recording(self) -> Iterator[None]:
        loader = importlib.machinery.SourceFileLoader
        original = loader.get_data
        recorder = self

        def get_data(self: Any, path: str) -> bytes:
            data: bytes = original(self, path)
            absolute = os.path.abspath(path)
            if recorder.mine(absolute):
                recorder.read[absolute] = hashlib.sha256(data).hexdigest()
            return data

        loader.get_data = get_data  # type: ignore[method-assign]
        try:
            yield
        finally:
            loader.get_data = original  # type: ignore[method-assign]

    def digest(self) -> str:
        total = hashlib.sha256()
        for path in sorted(self.read):
            total.update(f"{path}\0{self.read[path]}\0".encode(errors="replace"))
        return total.hexdigest()[:16]
