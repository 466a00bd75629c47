"""Command line: run (default), config, check-db. Every failure is one clear line and a sysexits code."""
from __future__ import annotations

import argparse
import errno
import json
import os
import socket
import sys
from pathlib import Path
from typing import NoReturn, Sequence

from launcher import config as configuration
from launcher import logs
from launcher.config import Config, ConfigError
from launcher.child import child_environment, spawn_server
from launcher.machine import ExitCode
from launcher import signals
from launcher.reaper import become_subreaper

DEFAULT_CONFIG = Path("config.yaml")
HEALTHCHECK_TIMEOUT = 3.0


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(ExitCode.USAGE, f"{self.prog}: error: {message}\n")


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m launcher", description="Supervise an ASGI service that needs MySQL.")
    p.add_argument("--config", type=Path, default=None,
                   help="config file (default: $LAUNCHER_CONFIG, else ./config.yaml if present)")
    p.add_argument("command", nargs="?", default="run", choices=list(COMMANDS),
                   help="run: supervise the service; config: print the resolved config; "
                        "check-db: probe the database once; healthcheck: GET the service's health route")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        cfg = _load(args.config)
    except ConfigError as err:
        print(f"launcher: invalid configuration:\n  " + str(err).replace("\n", "\n  "), file=sys.stderr)
        return ExitCode.CONFIG
    if args.command != "run":
        signals.release()  # only `run` handles them itself
    return COMMANDS[args.command](cfg)


def _load(path: Path | None) -> Config:
    env_path = os.environ.get("LAUNCHER_CONFIG")
    if path is None and env_path:
        path = Path(env_path)
    if path is None and DEFAULT_CONFIG.exists():
        path = DEFAULT_CONFIG
    return configuration.load(path, os.environ)


def show_config(cfg: Config) -> int:
    print(json.dumps(configuration.masked(cfg), indent=2))
    return ExitCode.OK


def check_db(cfg: Config) -> int:
    from launcher.dbprobe import probe

    result = probe(cfg.database, cfg.probe.timeout)
    target = f"{cfg.database.user}@{cfg.database.host}:{cfg.database.port}/{cfg.database.name}"
    if result.ok:
        print(f"ok: {target} answered SELECT 1")
        return ExitCode.OK
    print(f"{result.reason}: {target}: {result.detail}", file=sys.stderr)
    return ExitCode.DB_UNAVAILABLE


def healthcheck(cfg: Config) -> int:
    """For Docker's HEALTHCHECK: one line and 0 only when the service answers 200."""
    import urllib.error
    import urllib.request

    url = f"http://127.0.0.1:{cfg.server.port}{cfg.server.health_path}"
    try:
        with urllib.request.urlopen(url, timeout=HEALTHCHECK_TIMEOUT) as response:
            print(f"{url}: {response.status}")
            return ExitCode.OK
    except urllib.error.HTTPError as err:
        print(f"{url}: {err.code} {err.read(512).decode(errors='replace')}")
    except (urllib.error.URLError, OSError) as err:
        print(f"{url}: {getattr(err, 'reason', err)}")
    return 1


def bind(cfg: Config) -> socket.socket:
    """Bind the public port first, so a port in use fails at second zero, not after the DB is up."""
    family = socket.AF_INET6 if ":" in cfg.server.host else socket.AF_INET
    return socket.create_server((cfg.server.host, cfg.server.port), family=family, backlog=cfg.server.backlog)


def run(cfg: Config) -> int:
    signals.hold()  # already held when started as `python -m launcher`; main() may be called directly
    log = logs.setup(cfg.log.format, cfg.log.level, [cfg.database.password.reveal()])
    try:
        listener = bind(cfg)
    except OSError as err:
        hint = "stop what holds the port or set server.port" if err.errno == errno.EADDRINUSE else "check server.host"
        log.error("cannot listen on %s:%d: %s; %s", cfg.server.host, cfg.server.port, err.strerror, hint)
        return ExitCode.OS_ERROR
    host, port = listener.getsockname()[:2]
    db = cfg.database
    log.info("listening on %s:%d; waiting for MySQL at %s@%s:%d/%s (on_db_loss=%s)",
             host, port, db.user, db.host, db.port, db.name, cfg.on_db_loss.value)
    env = child_environment(cfg, os.environ)
    try:
        first = spawn_server(cfg, listener, env, "1")
    except OSError as err:
        log.error("cannot start the server child: %s", err)
        return ExitCode.OS_ERROR
    # Imported only now, so that the first child imports the app while we import these.
    from launcher.supervisor import Supervisor

    become_subreaper()
    code = Supervisor(cfg, listener, env, log, first).run()
    log.info("exiting with %d", code)
    return code


COMMANDS = {"run": run, "config": show_config, "check-db": check_db, "healthcheck": healthcheck}
