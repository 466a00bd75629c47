"""`launcher run`: what happens before the event loop, in the order that makes failures cheap.

The public port is bound first, so a port in use fails at second zero rather than after the
DB is up; the descriptor limit is raised before anything is opened; the first template is
spawned before the supervisor's own imports, so that the app's import overlaps them.
"""

from __future__ import annotations

import errno
import resource
import socket

from launcher import runtime, signals
from launcher.config import Config, Source
from launcher.exitcodes import ExitCode
from launcher.supervisor import logs
from launcher.supervisor.spawn import child_environment, kill_descendants, spawn_template


def bind(cfg: Config) -> socket.socket:
    family = socket.AF_INET6 if ":" in cfg.server.host else socket.AF_INET
    return socket.create_server((cfg.server.host, cfg.server.port), family=family, backlog=cfg.server.backlog)


def raise_descriptor_limit() -> int:
    """The soft limit up to the hard one, as nginx and most servers do: a container's default
    soft limit (1024) is what a few hundred idle clients exhaust. The children inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            return hard
        except (ValueError, OSError):
            pass
    return soft


def run(source: Source, cfg: Config) -> int:
    signals.hold()  # already held when started as `python -m launcher`; main() may be called directly
    log = logs.Log(cfg.log.format, cfg.log.level)
    if not cfg.server.app:
        log.error("no app to serve: give it as module:attr (launcher main:app) or set server.app in the config")
        return ExitCode.CONFIG
    limit = raise_descriptor_limit()
    try:
        listener = bind(cfg)
    except OSError as err:
        hint = "stop what holds the port or set server.port" if err.errno == errno.EADDRINUSE else "check server.host"
        log.error("cannot listen on %s:%d: %s; %s", cfg.server.host, cfg.server.port, err.strerror, hint)
        return ExitCode.OS_ERROR
    host, port = listener.getsockname()[:2]
    db = cfg.database
    waiting = f"waiting for MySQL at {db.user}@{db.host}:{db.port}/{db.name}" if db.gate else "no DB gate"
    log.info(
        "listening on %s:%d (%d descriptors); serving %s; %s (on_db_loss=%s)",
        host,
        port,
        limit,
        cfg.server.app,
        waiting,
        cfg.on_db_loss.value,
    )
    published = runtime.publish(host, port, cfg.server.ssl_certfile != "")
    try:
        return _supervise(source, cfg, listener, log)
    finally:
        runtime.withdraw(published)


def _supervise(source: Source, cfg: Config, listener: socket.socket, log: logs.Log) -> int:
    from launcher.cli import where

    try:
        first = spawn_template(cfg, listener, child_environment(cfg, source.environ))
    except OSError:
        first = None  # the machine starts one itself, and decides what a failure means
    # Imported only now, so that the template imports the app while we import these.
    from launcher.supervisor.libc import become_subreaper, one_malloc_arena, release_free_memory
    from launcher.supervisor.shell import Supervisor

    become_subreaper()
    one_malloc_arena()  # before the watcher threads exist
    try:
        supervisor = Supervisor(source, cfg, listener, log, first)
        release_free_memory()
        code = supervisor.run()
    except Exception as err:
        kill_descendants()  # the supervisor cleans up on its way out; this covers a failure before it ran
        log.error(
            "internal error: %s; stopped everything the launcher started. Please report it. Exiting with %d",
            where(err),
            ExitCode.INTERNAL,
        )
        return ExitCode.INTERNAL
    log.info("exiting with %d", code)
    return code
