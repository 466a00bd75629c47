"""The server settings a template or worker gets from the launcher (one JSON argv word, the
config's `server` section), turned into uvicorn's Config with the app imported."""

from __future__ import annotations

import json
import logging
import os
import sys
from dataclasses import dataclass, field
from typing import Any

import uvicorn

from launcher.worker.protocol import Limits, guarded_protocol

# After SIGTERM the launcher kills a worker at stop_grace; uvicorn must give up on requests
# in flight before that, so that the app's lifespan shutdown (engine.dispose()) still runs.
SHUTDOWN_MARGIN = 1.5


@dataclass(frozen=True)
class Settings:
    values: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> Settings:
        return cls(json.loads(text))

    def __getitem__(self, key: str) -> Any:
        return self.values[key]

    @property
    def app_dir(self) -> str:
        return os.path.abspath(self.values.get("app_dir") or os.getcwd())

    def graceful_shutdown(self) -> float:
        grace = float(self["stop_grace"])
        return max(grace / 2, grace - SHUTDOWN_MARGIN)

    def uvicorn_config(self) -> uvicorn.Config:
        """The slow part, done once in the template: the app is imported here."""
        sys.path.insert(0, self.app_dir)
        limits = Limits(
            self["head_timeout"],
            self["max_head_size"],
            self["max_body_size"],
            self["limit_concurrency"],
            self["max_connections"],
        )
        config = uvicorn.Config(
            self["app"],
            log_level=self["log_level"],
            access_log=self["access_log"],
            lifespan="on",
            backlog=self["backlog"],
            timeout_keep_alive=self["timeout_keep_alive"],
            timeout_graceful_shutdown=self.graceful_shutdown(),  # type: ignore[arg-type]  # a float works
            proxy_headers=self["proxy_headers"],
            forwarded_allow_ips=self["forwarded_allow_ips"],
            root_path=self["root_path"],
            ssl_certfile=self["ssl_certfile"] or None,
            ssl_keyfile=self["ssl_keyfile"] or None,
            h11_max_incomplete_event_size=self["max_head_size"],
            http=guarded_protocol(limits),
        )
        logging.getLogger("uvicorn.error").addHandler(STARTUP_ERRORS)  # after Config() set up logging
        config.load()
        config.get_loop_factory()  # imports uvloop here, once, rather than in every worker
        return config


class StartupErrors(logging.Handler):
    """Keeps what uvicorn and the app log as errors before startup completes: a worker whose
    startup fails tells the launcher why, and the launcher says it in its `reload failed` line."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("%(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        if len(self.lines) < 20:
            self.lines.append(self.format(record))

    def text(self) -> str:
        return "\n".join(line for line in self.lines if "Application startup failed" not in line)


STARTUP_ERRORS = StartupErrors()
