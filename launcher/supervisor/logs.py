"""The launcher's own log lines: text or JSON on stderr, one line each.

A dozen lines instead of the logging package, which the resident launcher would keep in
memory for the container's whole life to format one stream. Each line is written with a
single write() on stderr, so lines show at once in `docker logs` and never interleave
with a child's output mid-line.

Nothing masks secrets here: the password is a `Secret` that no message formats. Replacing
its every occurrence in every line would garble the log (a password `1` turns
127.0.0.1 into ***27.0.0.***) and so give a short password away.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable

LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}


def _text(level: str, message: str, now: float) -> str:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now))
    return f"{stamp}.{int(now * 1000) % 1000:03d}Z launcher {level.upper():<7} {message}"


def _json(level: str, message: str, now: float) -> str:
    return json.dumps({"ts": now, "logger": "launcher", "level": level, "message": message})


FORMATS: dict[str, Callable[[str, str, float], str]] = {"text": _text, "json": _json}


class Log:
    def __init__(self, fmt: str = "text", level: str = "info") -> None:
        self._format = FORMATS[fmt]
        self._threshold = LEVELS[level]

    def log(self, level: str, message: str, *args: object) -> None:
        if LEVELS[level] < self._threshold:
            return
        text = message % args if args else message
        line = self._format(level, text, time.time()) + "\n"
        try:
            os.write(sys.stderr.fileno(), line.encode(errors="replace"))
        except (OSError, ValueError):
            pass  # stderr closed: nowhere left to say it

    def debug(self, message: str, *args: object) -> None:
        self.log("debug", message, *args)

    def info(self, message: str, *args: object) -> None:
        self.log("info", message, *args)

    def warning(self, message: str, *args: object) -> None:
        self.log("warning", message, *args)

    def error(self, message: str, *args: object) -> None:
        self.log("error", message, *args)
