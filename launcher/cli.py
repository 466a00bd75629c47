"""Command line: run (default), config, check-db, healthcheck. Every failure is one clear line and a sysexits code."""
from __future__ import annotations

import errno
import json
import os
import socket
import sys
from typing import Sequence

from launcher import config as configuration
from launcher.supervisor import logs
from launcher.config import Config, ConfigError
from launcher.supervisor.spawn import child_environment, kill_descendants, spawn_template
from launcher.exitcodes import ExitCode
from launcher import signals

DEFAULT_CONFIG = "config.yaml"
HEALTHCHECK_TIMEOUT = 3.0


USAGE = "usage: python -m launcher [-h] [--config PATH] [run | config | check-db | healthcheck]"
HELP = f"""{USAGE}

Supervise an ASGI service that needs MySQL.

commands:
  run            supervise the service (the default)
  config         print the resolved configuration, password masked
  check-db       probe the database once
  healthcheck    GET the service's health route; 0 only for a 200 (for Docker's HEALTHCHECK)

options:
  -h, --help     show this help and exit
  --config PATH  config file (default: $LAUNCHER_CONFIG, else ./config.yaml if present)
"""


class UsageError(Exception):
    """A bad command line; the message says what was wrong."""


def parse_args(argv: Sequence[str]) -> tuple[str | None, str] | None:
    """(config path, command), or None for --help. Two arguments do not justify argparse,
    which would stay resident for the container's life (docs/design.md, Resident cost)."""
    path: str | None = None
    words: list[str] = []
    args = iter(argv)
    for arg in args:
        if arg in ("-h", "--help"):
            return None
        if arg == "--config":
            path = next(args, None)
            if not path:
                raise UsageError("--config needs a path")
        elif arg.startswith("--config="):
            path = arg.removeprefix("--config=")
        elif arg.startswith("-"):
            raise UsageError(f"unknown option {arg}")
        else:
            words.append(arg)
    if len(words) > 1:
        raise UsageError(f"one command at most, got: {' '.join(words)}")
    command = words[0] if words else "run"
    if command not in COMMANDS:
        raise UsageError(f"unknown command {command!r}; choose run, config, check-db or healthcheck")
    return path, command


def main(argv: Sequence[str] | None = None) -> int:
    """Every way out is an exit code; an unexpected error is one line, never a traceback."""
    try:
        return _main(argv)
    except Exception as err:
        logs.Log().error("internal error: %s; please report it. Exiting with %d", where(err), ExitCode.INTERNAL)
        return ExitCode.INTERNAL


def where(err: BaseException) -> str:
    """The error and the line that raised it, without the traceback module's cost or length."""
    tb = err.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    place = f" at {tb.tb_frame.f_code.co_filename}:{tb.tb_lineno}" if tb is not None else ""
    return f"{type(err).__name__}: {str(err)[:300]}{place}"


def _main(argv: Sequence[str] | None) -> int:
    try:
        parsed = parse_args(sys.argv[1:] if argv is None else argv)
    except UsageError as err:
        print(f"{USAGE}\npython -m launcher: error: {err}", file=sys.stderr)
        return ExitCode.USAGE
    if parsed is None:
        print(HELP, end="")
        return ExitCode.OK
    path, command = parsed
    try:
        cfg = _load(path)
    except ConfigError as err:
        print("launcher: invalid configuration:\n  " + str(err).replace("\n", "\n  "), file=sys.stderr)
        return ExitCode.CONFIG
    if command != "run":
        signals.release()  # only `run` handles them itself
    return COMMANDS[command](cfg)


def _load(path: str | None) -> Config:
    env_path = os.environ.get("LAUNCHER_CONFIG")
    if path is None and env_path:
        path = env_path
    if path is None and os.path.exists(DEFAULT_CONFIG):
        path = DEFAULT_CONFIG
    return configuration.load(path, os.environ)


def show_config(cfg: Config) -> int:
    print(json.dumps(configuration.masked(cfg), indent=2))
    return ExitCode.OK


def check_db(cfg: Config) -> int:
    from launcher.supervisor.dbprobe import probe

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
    log = logs.Log(cfg.log.format, cfg.log.level)
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
        first = spawn_template(cfg, listener, env)
    except OSError as err:
        log.error("cannot start the template: %s", err)
        return ExitCode.OS_ERROR
    # Imported only now, so that the template imports the app while we import these.
    from launcher.supervisor.libc import become_subreaper, one_malloc_arena
    from launcher.supervisor.shell import Supervisor

    become_subreaper()
    one_malloc_arena()  # before the watcher threads exist
    try:
        code = Supervisor(cfg, listener, env, log, first).run()
    except Exception as err:
        kill_descendants()  # the supervisor cleans up on its way out; this covers a failure before it ran
        log.error("internal error: %s; stopped everything the launcher started. Please report it. "
                  "Exiting with %d", where(err), ExitCode.INTERNAL)
        return ExitCode.INTERNAL
    log.info("exiting with %d", code)
    return code


COMMANDS = {"run": run, "config": show_config, "check-db": check_db, "healthcheck": healthcheck}
