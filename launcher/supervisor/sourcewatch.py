"""Reload mode (`--reload`, `server.reload: true`): watch the app's source tree and ask for a
reload when a watched file changes, as SIGHUP would: the new code is imported in a new
template beside the serving workers, which keep serving if it does not import.

watchfiles (inotify, not polling) is imported only here, and this module only in reload
mode. Its debounce gathers the files of one save (an editor's rename and write, a `git
checkout`) into one reload. The virtualenv, .git and caches are never watched.
"""

from __future__ import annotations

import fnmatch
import os
import sys
from collections.abc import Callable
from typing import Any

from launcher.config import ServerConfig
from launcher.supervisor.threads import Guarded


class SourceWatcher(Guarded):
    def __init__(self, server: ServerConfig, log: Callable[[str], None], deliver: Callable[[str], None]) -> None:
        super().__init__("source-watch", log)
        self.root = os.path.abspath(server.app_dir or os.getcwd())
        self.include = server.reload_include
        self.exclude = server.reload_exclude
        self.deliver = deliver

    def once(self) -> None:
        import watchfiles

        for changes in watchfiles.watch(
            self.root, watch_filter=self.filter(watchfiles), stop_event=self.halt, raise_interrupt=False
        ):
            paths = sorted({os.path.relpath(path, self.root) for _, path in changes})
            more = f" and {len(paths) - 1} more" if len(paths) > 1 else ""
            self.deliver(f"{paths[0]} changed{more}")

    def filter(self, watchfiles: Any) -> Callable[[Any, str], bool]:
        installed = [p for p in {sys.prefix, sys.base_prefix} if os.path.abspath(p).startswith(self.root + os.sep)]
        base = watchfiles.DefaultFilter(ignore_paths=installed)

        def wanted(change: Any, path: str) -> bool:
            if not base(change, path):
                return False
            relative, name = os.path.relpath(path, self.root), os.path.basename(path)
            if any(fnmatch.fnmatch(relative, p) or fnmatch.fnmatch(name, p) for p in self.exclude):
                return False
            return any(fnmatch.fnmatch(name, p) or fnmatch.fnmatch(relative, p) for p in self.include)

        return wanted
