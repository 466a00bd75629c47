"""The launcher's own log lines: text or JSON on stderr, one line each, secrets masked.

stderr is line-buffered in Python 3.9+ even when it is not a terminal, and each
record is flushed by the handler, so lines show up at once in `docker logs`.
"""
from __future__ import annotations

import json
import logging
import sys
import time

LOGGER = logging.getLogger("launcher")


class _Masking(logging.Filter):
    """Replace every known secret in a record's text, whatever code logged it."""

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s]

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        for secret in self.secrets:
            message = message.replace(secret, "***")
        record.msg, record.args = message, None
        return True


class _Text(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        return f"{stamp}.{int(record.msecs):03d}Z launcher {record.levelname:<7} {record.getMessage()}"


class _Json(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps({"ts": record.created, "logger": "launcher", "level": record.levelname.lower(),
                           "message": record.getMessage()})


FORMATS = {"text": _Text, "json": _Json}


def setup(fmt: str = "text", level: str = "info", secrets: list[str] | None = None) -> logging.Logger:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(FORMATS[fmt]())
    handler.addFilter(_Masking(secrets or []))
    LOGGER.handlers[:] = [handler]
    LOGGER.setLevel(level.upper())
    LOGGER.propagate = False
    return LOGGER
