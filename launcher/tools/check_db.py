"""`launcher check-db`: one probe, as the launcher makes them; 0, or 69 with the classified reason."""

from __future__ import annotations

import sys

from launcher.config import Config
from launcher.exitcodes import ExitCode
from launcher.supervisor.dbprobe import probe


def check(config: Config) -> int:
    db = config.database
    result = probe(db, config.probe.timeout)
    where = db.socket or f"{db.host}:{db.port}"
    target = f"{db.user}@{where}/{db.name}"
    if result.ok:
        print(f"ok: {target} answered SELECT 1")
        return ExitCode.OK
    print(f"{result.reason}: {target}: {result.detail}", file=sys.stderr)
    return ExitCode.DB_UNAVAILABLE
