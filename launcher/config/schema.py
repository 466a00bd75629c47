"""The configuration's shape: frozen dataclasses whose fields carry their parser and bounds.

A table of plain dataclass fields rather than pydantic: the launcher stays resident for
the container's whole life, and pydantic with the built schemas cost it 20 MB of its 46 MB
and 0.3 s before the first child could be spawned (docs/design.md, Resident cost).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from enum import StrEnum
from typing import Any, ClassVar

from launcher.config import parsers
from launcher.config.files import PASSWORD_LIMIT
from launcher.config.parsers import duration, flag, matching, number, one_of, size, text, whole, within, words

Loc = tuple[str, ...]
UNKNOWN = "unknown key; remove it or check its spelling against config.yaml"
MISSING = "required key is missing; add it"


class Problems(Exception):
    """Every (key path, message) found in one mapping, so all are reported at once."""

    def __init__(self, found: list[tuple[Loc, str]]) -> None:
        super().__init__(found)
        self.found = found


@dataclass(frozen=True)
class Secret:
    """A password that never shows in a repr, a log line or an error."""

    value: str = field(default="", repr=False)

    def reveal(self) -> str:
        return self.value


class Policy(StrEnum):
    """What to do with the serving workers when the database is lost."""

    RESTART = "restart"
    SWAP = "swap"
    KEEP = "keep"
    EXIT = "exit"


class SslMode(StrEnum):
    """MySQL client semantics (`--ssl-mode`)."""

    DISABLED = "disabled"
    PREFERRED = "preferred"
    REQUIRED = "required"
    VERIFY_CA = "verify_ca"
    VERIFY_IDENTITY = "verify_identity"


@dataclass(frozen=True)
class Rule:
    """A cross-field bound within a section: `lesser` < `greater` (or <= unless strict)."""

    lesser: str
    greater: str
    strict: bool = True

    def problem(self, section: Any) -> tuple[Loc, str] | None:
        low, high = getattr(section, self.lesser), getattr(section, self.greater)
        if low < high or (low == high and not self.strict):
            return None
        relation = "less than" if self.strict else "at most"
        unit = "s" if isinstance(high, float) else ""
        return (self.lesser,), f"must be {relation} {self.greater} of the same section ({high:g}{unit})"


@dataclass(frozen=True)
class Needs:
    """A rule between keys that are not numbers: `key` must be set when `when(section)` holds."""

    key: str
    when: Callable[[Any], bool]
    message: str

    def problem(self, section: Any) -> tuple[Loc, str] | None:
        return ((self.key,), self.message) if self.when(section) and not getattr(section, self.key) else None


def _secret(value: Any) -> Secret:
    """Text, or a number YAML read from an unquoted password. The children get it in their
    environment, so it can hold no NUL byte; PyMySQL sends it as Latin-1, so a character
    outside Latin-1 could never log in (it used to wait forever, classified `protocol`)."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError("expected text")
    secret = str(value)
    if "\0" in secret:
        raise ValueError("must not contain a NUL byte")
    size_ = len(secret.encode("utf-8", "surrogateescape"))
    if size_ > PASSWORD_LIMIT:
        raise ValueError(f"is {size_} bytes long; a password may have at most {PASSWORD_LIMIT}")
    try:
        secret.encode("latin-1")
    except UnicodeEncodeError:
        raise ValueError(
            "has characters outside Latin-1, which PyMySQL cannot send; "
            "choose a password of Latin-1 characters (ALTER USER ... IDENTIFIED BY ...)"
        ) from None
    return Secret(secret)


def _enum(kind: type[StrEnum]) -> Callable[[Any], Any]:
    choose = one_of(*(member.value for member in kind))
    return lambda value: kind(choose(value))


def knob(default: Any, parse: Callable[[Any], Any], env: bool = True) -> Any:
    """`env`: whether LAUNCHER_<SECTION>_<KEY> may set it."""
    return field(default=default, metadata={"parse": parse, "env": env})


def _required(parse: Callable[[Any], Any]) -> Any:
    return field(metadata={"parse": parse, "env": False})


def parse_at(key: str, parse: Callable[[Any], Any], value: Any, found: list[tuple[Loc, str]]) -> Any:
    """parse(value), with its problems added to `found` under `key` instead of raised."""
    try:
        return parse(value)
    except ValueError as err:
        found.append(((key,), str(err)))
    except Problems as inner:
        found.extend(((key, *loc), message) for loc, message in inner.found)
    return None


def section(cls: type) -> Callable[[Any], Any]:
    """A parser for a mapping of the section's keys, which reports every bad key, not the
    first, then checks the section's rules between its keys."""
    names = {f.name for f in fields(cls)}

    def parse(value: Any) -> Any:
        if not isinstance(value, dict):
            raise ValueError("expected a mapping of keys")
        found: list[tuple[Loc, str]] = [
            ((str(key)[:80],), RENAMED.get((cls.__name__, key), UNKNOWN)) for key in value if key not in names
        ]
        given = {}
        for f in fields(cls):
            if f.name in value:
                given[f.name] = parse_at(f.name, f.metadata["parse"], value[f.name], found)
            elif f.default is dataclasses.MISSING:
                found.append(((f.name,), MISSING))
        if found:
            raise Problems(found)
        built = cls(**given)
        found = [problem for rule in getattr(cls, "RULES", ()) if (problem := rule.problem(built))]
        if found:
            raise Problems(found)
        return built

    return parse


def _list_of(parse: Callable[[Any], Any]) -> Callable[[Any], tuple[Any, ...]]:
    def parse_all(value: Any) -> tuple[Any, ...]:
        if not isinstance(value, list):
            raise ValueError("expected a list")
        found: list[tuple[Loc, str]] = []
        items = tuple(parse_at(str(index), parse, item, found) for index, item in enumerate(value))
        if found:
            raise Problems(found)
        return items

    return parse_all


_PORT = within(whole, low=0, high=65535)
_SHORT = within(duration, above=0, high=600)
_LONG = within(duration, above=0, high=3600)
_DAY = within(duration, above=0, high=86400)
_WEEK = within(duration, above=0, high=parsers.DURATION_LIMIT)
_PATH = matching(r"/[\x21-\x7e]*", "/api/health", limit=2048)
_OPTIONAL_PATH = matching(r"(/[\x21-\x7e]*)?", "/api/health or nothing", limit=2048)
_HOST = text()
_FILE = matching(r"[^\x00-\x1f\x7f]*", "/run/secrets/ca.pem", limit=4096)
_APP = matching(r"([\w.]+:[\w.]+)?", "main:app")
_PATTERNS = parsers.patterns("['*.py', '*.html']")
_BYTES = within(size, low=1024, high=1 << 40)


@dataclass(frozen=True)
class ServerConfig:
    app: str = knob("", _APP)
    app_dir: str = knob("", _FILE)
    host: str = knob("0.0.0.0", _HOST)
    port: int = knob(8000, _PORT)
    workers: int = knob(1, parsers.workers)
    max_workers: int = knob(parsers.worker_ceiling("auto"), parsers.worker_ceiling)
    backlog: int = knob(2048, within(whole, low=1, high=65535))
    log_level: str = knob("info", one_of("critical", "error", "warning", "info", "debug", "trace"))
    access_log: bool = knob(True, flag)
    stop_grace: float = knob(10.0, _LONG)
    ready_timeout: float = knob(30.0, _LONG)
    template_timeout: float = knob(60.0, _LONG)
    health_path: str = knob("/", _PATH)
    reload: bool = knob(False, flag)
    reload_include: tuple[str, ...] = knob(("*.py",), _PATTERNS)
    reload_exclude: tuple[str, ...] = knob((), _PATTERNS)
    timeout_keep_alive: float = knob(5.0, _LONG)
    head_timeout: float = knob(10.0, _LONG)
    max_head_size: int = knob(32 * 1024, _BYTES)
    max_body_size: int = knob(10 * 1024 * 1024, _BYTES)
    limit_concurrency: int = knob(1000, within(whole, low=1, high=1_000_000))
    max_connections: int = knob(0, within(whole, low=0, high=1_000_000))
    proxy_headers: bool = knob(True, flag)
    forwarded_allow_ips: str = knob("127.0.0.1", _HOST)
    root_path: str = knob("", _OPTIONAL_PATH)
    ssl_certfile: str = knob("", _FILE)
    ssl_keyfile: str = knob("", _FILE)

    RULES: ClassVar[tuple[Rule | Needs, ...]] = (
        Rule("workers", "max_workers", strict=False),
        Needs("ssl_certfile", lambda s: bool(s.ssl_keyfile), "required when server.ssl_keyfile is set"),
        Needs("ssl_keyfile", lambda s: bool(s.ssl_certfile), "required when server.ssl_certfile is set"),
    )


@dataclass(frozen=True)
class DatabaseConfig:
    gate: bool = knob(True, flag)
    host: str = knob("127.0.0.1", _HOST)
    port: int = knob(3306, within(whole, low=1, high=65535))
    socket: str = knob("", _FILE)
    user: str = knob("app", text(limit=80))
    password: Secret = knob(Secret(), _secret)
    name: str = knob("app", text(limit=64))
    ssl_mode: SslMode = knob(SslMode.PREFERRED, _enum(SslMode))
    ssl_ca: str = knob("", _FILE)
    ssl_cert: str = knob("", _FILE)
    ssl_key: str = knob("", _FILE)

    RULES: ClassVar[tuple[Needs, ...]] = (
        Needs(
            "ssl_ca",
            lambda d: d.ssl_mode in (SslMode.VERIFY_CA, SslMode.VERIFY_IDENTITY),
            "required when database.ssl_mode is verify_ca or verify_identity: the CA that signed the server's "
            "certificate",
        ),
        Needs("ssl_key", lambda d: bool(d.ssl_cert), "required when database.ssl_cert is set"),
    )


@dataclass(frozen=True)
class ProbeConfig:
    interval: float = knob(1.0, _LONG)
    retry_interval: float = knob(0.1, within(duration, low=0.05, high=3600))  # 1 ms costs half a core
    timeout: float = knob(0.5, _SHORT)
    failures_before_down: int = knob(2, within(whole, low=1, high=1000))
    startup_timeout: float = knob(0.0, within(duration, low=0, high=parsers.DURATION_LIMIT))

    RULES: ClassVar[tuple[Rule, ...]] = (Rule("timeout", "interval"),)


@dataclass(frozen=True)
class LivenessConfig:
    interval: float = knob(5.0, _LONG)
    timeout: float = knob(2.0, _SHORT)
    failures: int = knob(3, within(whole, low=1, high=1000))
    app_path: str = knob("", _OPTIONAL_PATH)
    app_failures_kill: bool = knob(False, flag)

    RULES: ClassVar[tuple[Rule, ...]] = (Rule("timeout", "interval"),)


@dataclass(frozen=True)
class RestartConfig:
    backoff_initial: float = knob(0.1, _LONG)
    backoff_max: float = knob(30.0, _DAY)
    jitter: float = knob(0.2, within(number, low=0, high=1))
    reset_after: float = knob(10.0, _WEEK)
    max_restarts: int = knob(10, within(whole, low=0, high=1_000_000))
    window: float = knob(60.0, _WEEK)

    RULES: ClassVar[tuple[Rule, ...]] = (Rule("backoff_initial", "backoff_max", strict=False),)


@dataclass(frozen=True)
class PrestartStep:
    name: str = _required(text())
    command: tuple[str, ...] = _required(words("[python, -m, api.migrate]"))
    timeout: float = knob(60.0, _DAY)

    def module_argv(self) -> list[str] | None:
        """`python -m module args...` as [module, args...]: a step a template can run forked."""
        if len(self.command) >= 3 and self.command[:2] == ("python", "-m"):
            return list(self.command[2:])
        return None


@dataclass(frozen=True)
class LogConfig:
    format: str = knob("text", one_of("text", "json"))
    level: str = knob("info", one_of("debug", "info", "warning", "error"))


@dataclass(frozen=True)
class PrestartConfig:
    steps: tuple[PrestartStep, ...] = knob((), _list_of(section(PrestartStep)), env=False)
    after_db_loss: bool = knob(False, flag)


@dataclass(frozen=True)
class Config:
    server: ServerConfig = knob(ServerConfig(), section(ServerConfig))
    database: DatabaseConfig = knob(DatabaseConfig(), section(DatabaseConfig))
    probe: ProbeConfig = knob(ProbeConfig(), section(ProbeConfig))
    liveness: LivenessConfig = knob(LivenessConfig(), section(LivenessConfig))
    restart: RestartConfig = knob(RestartConfig(), section(RestartConfig))
    prestart: PrestartConfig = knob(PrestartConfig(), section(PrestartConfig))
    on_db_loss: Policy = knob(Policy.SWAP, _enum(Policy))
    log: LogConfig = knob(LogConfig(), section(LogConfig))


# Keys that moved, so an old config file gets the new name instead of "unknown key".
RENAMED = {
    ("LivenessConfig", "path"): "liveness checks no longer need a route (each worker's event loop answers them "
    "itself); for an app-level check that logs but never kills, use liveness.app_path",
}

# What a reload cannot change: the socket is bound once, before anything else.
RESTART_ONLY: tuple[Loc, ...] = (("server", "host"), ("server", "port"), ("server", "reload"))

parse_config = section(Config)
