"""The command line: `launcher [run] [module:attr] [options]`, `launcher config`,
`launcher check-db`, `launcher healthcheck`. Every failure is one clear line and a sysexits code.

Written by hand from a table rather than with argparse, which would stay resident for the
container's life (docs/design.md, Resident cost). A flag wins over the environment, which
wins over the config file.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from launcher import __version__, signals
from launcher.config import ConfigError, Loc, Source
from launcher.exitcodes import ExitCode
from launcher.supervisor import logs

PROG = "launcher"
COMMANDS = ("run", "config", "check-db", "healthcheck")
TAKES = object()  # the flag takes the next word as its value


@dataclass(frozen=True)
class Flag:
    key: Loc
    value: Any  # TAKES, or the value the switch sets
    help: str


FLAGS = {
    "--host": Flag(("server", "host"), TAKES, "address to bind (server.host)"),
    "--port": Flag(("server", "port"), TAKES, "port to bind (server.port)"),
    "--workers": Flag(("server", "workers"), TAKES, "workers, or auto for the CPUs this process may use"),
    "--max-workers": Flag(("server", "max_workers"), TAKES, "the most workers SIGTTIN may reach"),
    "--app-dir": Flag(("server", "app_dir"), TAKES, "where the app's modules are (default: here)"),
    "--reload": Flag(("server", "reload"), True, "reload when the app's source changes (development)"),
    "--no-db": Flag(("database", "gate"), False, "do not wait for MySQL: for an app that needs none"),
    "--log-level": Flag(("server", "log_level"), TAKES, "uvicorn's log level in the workers"),
    "--no-access-log": Flag(("server", "access_log"), False, "no access log in the workers"),
    "--backlog": Flag(("server", "backlog"), TAKES, "listen backlog"),
    "--root-path": Flag(("server", "root_path"), TAKES, "ASGI root_path, behind a proxy that strips a prefix"),
    "--proxy-headers": Flag(("server", "proxy_headers"), True, "trust X-Forwarded-* from forwarded_allow_ips"),
    "--no-proxy-headers": Flag(("server", "proxy_headers"), False, "ignore X-Forwarded-*"),
    "--forwarded-allow-ips": Flag(("server", "forwarded_allow_ips"), TAKES, "proxies whose X-Forwarded-* count"),
    "--timeout-keep-alive": Flag(("server", "timeout_keep_alive"), TAKES, "idle keep-alive connection bound"),
    "--limit-concurrency": Flag(("server", "limit_concurrency"), TAKES, "requests in flight per worker, then 503"),
    "--ssl-certfile": Flag(("server", "ssl_certfile"), TAKES, "serve HTTPS with this certificate"),
    "--ssl-keyfile": Flag(("server", "ssl_keyfile"), TAKES, "and this key"),
}

USAGE = f"usage: {PROG} [run] [module:attr] [options] | {PROG} config | {PROG} check-db | {PROG} healthcheck"


def help_text() -> str:
    options = "\n".join(
        f"  {name + (' VALUE' if flag.value is TAKES else ''):<27}{flag.help}" for name, flag in FLAGS.items()
    )
    return f"""{USAGE}

Serve an ASGI app with a pool of uvicorn workers that comes back by itself: it waits for
MySQL, replaces workers that die, reloads on SIGHUP without a refused request.

commands:
  run            supervise the service (the default)
  config         print the effective configuration, password masked, and where each value came from
  check-db       probe the database once: exit 0, or 69 with the reason
  healthcheck    GET server.health_path where the launcher listens: 0 only for a 200

arguments:
  module:attr    the ASGI app (server.app), as for uvicorn

options:
  -h, --help                 show this help and exit
  --version                  show the version and exit
  --config PATH              config file (default: $LAUNCHER_CONFIG, else ./config.yaml if present)
  --json                     `config` prints JSON
{options}

Every setting can also come from the config file and from LAUNCHER_<SECTION>_<KEY>
variables; a flag wins over the environment, which wins over the file.
"""


class UsageError(Exception):
    """A bad command line; the message says what was wrong."""


@dataclass(frozen=True)
class Parsed:
    command: str
    config_path: str | None
    flags: dict[Loc, tuple[str, Any]]
    json: bool = False


def parse_args(argv: Sequence[str]) -> Parsed | str:
    """The parsed command line, or the text to print for --help or --version."""
    path: str | None = None
    flags: dict[Loc, tuple[str, Any]] = {}
    words: list[str] = []
    as_json = False
    args = iter(argv)
    for arg in args:
        name, has_value, inline = arg.partition("=") if arg.startswith("--") else (arg, "", "")
        if arg in ("-h", "--help"):
            return help_text()
        if arg == "--version":
            return f"{PROG} {__version__}\n"
        if arg == "--json":
            as_json = True
        elif name == "--config":
            path = inline if has_value else next(args, "")
            if not path:
                raise UsageError("--config needs a path")
        elif name in FLAGS:
            flags[FLAGS[name].key] = (name, _value(name, FLAGS[name], has_value, inline, args))
        elif arg.startswith("-"):
            raise UsageError(f"unknown option {name}; see {PROG} --help")
        else:
            words.append(arg)
    return _command(words, path, flags, as_json)


def _value(name: str, flag: Flag, has_value: str, inline: str, args: Any) -> Any:
    if flag.value is not TAKES:
        if has_value:
            raise UsageError(f"{name} takes no value")
        return flag.value
    value = inline if has_value else next(args, None)
    if value is None:
        raise UsageError(f"{name} needs a value")
    return value


def _command(words: list[str], path: str | None, flags: dict[Loc, tuple[str, Any]], as_json: bool) -> Parsed:
    commands = [w for w in words if w in COMMANDS]
    apps = [w for w in words if ":" in w and w not in COMMANDS]
    other = [w for w in words if w not in commands and w not in apps]
    if len(commands) > 1:
        raise UsageError(f"one command at most, got: {' '.join(commands)}")
    if other:
        raise UsageError(f"unknown command {other[0]!r}; choose {', '.join(COMMANDS)}, or give the app as module:attr")
    if len(apps) > 1:
        raise UsageError(f"one app at most, got: {' '.join(apps)}")
    if apps:
        flags[("server", "app")] = (apps[0], apps[0])
    return Parsed(commands[0] if commands else "run", path, flags, as_json)


def main(argv: Sequence[str] | None = None) -> int:
    """Every way out is an exit code; an unexpected error is one line, never a traceback."""
    try:
        return _main(sys.argv[1:] if argv is None else argv)
    except Exception as err:
        logs.Log().error("internal error: %s; please report it. Exiting with %d", where(err), ExitCode.INTERNAL)
        return ExitCode.INTERNAL


def console() -> int:
    """The `launcher` console script: as `python -m launcher`, signals held first."""
    signals.hold()
    return main()


def where(err: BaseException) -> str:
    """The error and the line that raised it, without the traceback module's cost or length."""
    tb = err.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    place = f" at {tb.tb_frame.f_code.co_filename}:{tb.tb_lineno}" if tb is not None else ""
    return f"{type(err).__name__}: {str(err)[:300]}{place}"


def _main(argv: Sequence[str]) -> int:
    try:
        parsed = parse_args(argv)
    except UsageError as err:
        print(f"{USAGE}\n{PROG}: error: {err}", file=sys.stderr)
        return ExitCode.USAGE
    if isinstance(parsed, str):
        print(parsed, end="")
        return ExitCode.OK
    source = Source.find(parsed.config_path, os.environ, parsed.flags)
    try:
        config, sources = source.explain()
    except ConfigError as err:
        print(f"{PROG}: invalid configuration:\n  " + str(err).replace("\n", "\n  "), file=sys.stderr)
        return ExitCode.CONFIG
    if parsed.command == "run":
        from launcher.supervisor.boot import run

        return run(source, config)
    signals.release()  # only `run` handles them itself
    from launcher.tools import check_db, healthcheck, show_config

    match parsed.command:
        case "config":
            return show_config.show(config, sources, source, parsed.json)
        case "check-db":
            return check_db.check(config)
        case _:
            return healthcheck.check(config)
