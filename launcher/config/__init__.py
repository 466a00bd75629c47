"""config.yaml + environment + *_FILE secrets -> one validated, immutable object.

Every problem becomes a ConfigError whose lines name the key, the value (bounded, and
never from the database section), where the value came from and what is allowed, so
a user never has to read a traceback.

Validation is a table of plain dataclass fields, each with a parser and its bounds
(parsers.py), rather than pydantic: the launcher stays resident for the container's
whole life, and pydantic with the built schemas cost it 20 MB of its 46 MB and 0.3 s
before the first child could be spawned.
"""
from __future__ import annotations

import dataclasses
import os
import reprlib
from dataclasses import dataclass, field, fields
from enum import StrEnum
from typing import Any, Callable, ClassVar, Mapping

from launcher.config import parsers
from launcher.config.files import CONFIG_LIMIT, PASSWORD_LIMIT, FileProblem, parse_yaml, read_text
from launcher.config.parsers import duration, flag, matching, number, one_of, text, whole, within, words

# Environment variables the service already uses, kept under their old names.
MYSQL_ENV = {
    "MYSQL_HOST": ("database", "host"),
    "MYSQL_PORT": ("database", "port"),
    "MYSQL_DATABASE": ("database", "name"),
    "MYSQL_USER": ("database", "user"),
    "MYSQL_PASSWORD": ("database", "password"),
}
PASSWORD_FILE_ENV = "MYSQL_PASSWORD_FILE"
ENV_PREFIX = "LAUNCHER_"
UNKNOWN = "unknown key; remove it or check its spelling against config.yaml"
MISSING = "required key is missing; add it"
HIDDEN_SECTION = "database"  # its values are never echoed: a password may stand anywhere in it
MAX_LINES = 20  # problems listed in one error; the rest are counted

Loc = tuple[str, ...]
FilePath = str | os.PathLike[str]  # no pathlib: it would stay resident (docs/design.md, Resident cost)
parse_duration = duration


class ConfigError(Exception):
    """Invalid configuration: each line of the message is one problem and its fix."""


class _Problems(Exception):
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
        return (self.lesser,), f"must be {relation} {self.greater} of the same section ({high:g}s)"


def _secret(value: Any) -> Secret:
    """Text, or a number YAML read from an unquoted password. The children get it in their
    environment, so it can hold no NUL byte and must fit in one environment string."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError("expected text")
    secret = str(value)
    if "\0" in secret:
        raise ValueError("must not contain a NUL byte")
    size = len(secret.encode("utf-8", "surrogateescape"))
    if size > PASSWORD_LIMIT:
        raise ValueError(f"is {size} bytes long; a password may have at most {PASSWORD_LIMIT}")
    return Secret(secret)


def _policy(value: Any) -> Policy:
    return Policy(one_of(*(policy.value for policy in Policy))(value))


def _knob(default: Any, parse: Callable[[Any], Any], env: bool = True) -> Any:
    """`env`: whether LAUNCHER_<SECTION>_<KEY> may set it (scalars only)."""
    return field(default=default, metadata={"parse": parse, "env": env})


def _required(parse: Callable[[Any], Any]) -> Any:
    return field(metadata={"parse": parse, "env": False})


def _parse_at(key: str, parse: Callable[[Any], Any], value: Any, found: list[tuple[Loc, str]]) -> Any:
    """parse(value), with its problems added to `found` under `key` instead of raised."""
    try:
        return parse(value)
    except ValueError as err:
        found.append(((key,), str(err)))
    except _Problems as inner:
        found.extend(((key, *loc), message) for loc, message in inner.found)
    return None


def _section(cls: type) -> Callable[[Any], Any]:
    """A parser for a mapping of the section's keys, which reports every bad key, not the
    first, then checks the section's rules between its keys."""
    names = {f.name for f in fields(cls)}

    def parse(value: Any) -> Any:
        if not isinstance(value, dict):
            raise ValueError("expected a mapping of keys")
        found: list[tuple[Loc, str]] = [((str(key)[:80],), UNKNOWN) for key in value if key not in names]
        given = {}
        for f in fields(cls):
            if f.name in value:
                given[f.name] = _parse_at(f.name, f.metadata["parse"], value[f.name], found)
            elif f.default is dataclasses.MISSING:
                found.append(((f.name,), MISSING))
        if found:
            raise _Problems(found)
        section = cls(**given)
        found = [problem for rule in getattr(cls, "RULES", ()) if (problem := rule.problem(section))]
        if found:
            raise _Problems(found)
        return section
    return parse


def _list_of(parse: Callable[[Any], Any]) -> Callable[[Any], tuple]:
    def parse_all(value: Any) -> tuple:
        if not isinstance(value, list):
            raise ValueError("expected a list")
        found: list[tuple[Loc, str]] = []
        items = tuple(_parse_at(str(index), parse, item, found) for index, item in enumerate(value))
        if found:
            raise _Problems(found)
        return items
    return parse_all


_PORT = within(whole, low=0, high=65535)
_SHORT = within(duration, above=0, high=600)
_LONG = within(duration, above=0, high=3600)
_DAY = within(duration, above=0, high=86400)
_WEEK = within(duration, above=0, high=parsers.DURATION_LIMIT)
_PATH = matching(r"/[\x21-\x7e]*", "/api/health", limit=2048)
_HOST = text()


@dataclass(frozen=True)
class ServerConfig:
    app: str = _knob("api.main:app", matching(r"[\w.]+:[\w.]+", "api.main:app"))
    host: str = _knob("0.0.0.0", _HOST)
    port: int = _knob(8000, _PORT)
    workers: int = _knob(1, parsers.workers)
    backlog: int = _knob(2048, within(whole, low=1, high=65535))
    log_level: str = _knob("info", one_of("critical", "error", "warning", "info", "debug", "trace"))
    access_log: bool = _knob(True, flag)
    stop_grace: float = _knob(10.0, _LONG)
    ready_timeout: float = _knob(30.0, _LONG)
    health_path: str = _knob("/api/health", _PATH)


@dataclass(frozen=True)
class DatabaseConfig:
    host: str = _knob("127.0.0.1", _HOST)
    port: int = _knob(3306, within(whole, low=1, high=65535))
    user: str = _knob("app", text(limit=80))
    password: Secret = _knob(Secret(), _secret)
    name: str = _knob("app", text(limit=64))


@dataclass(frozen=True)
class ProbeConfig:
    interval: float = _knob(1.0, _LONG)
    retry_interval: float = _knob(0.1, within(duration, low=0.05, high=3600))  # 1 ms costs half a core
    timeout: float = _knob(0.5, _SHORT)
    failures_before_down: int = _knob(2, within(whole, low=1, high=1000))
    startup_timeout: float = _knob(0.0, within(duration, low=0, high=parsers.DURATION_LIMIT))

    RULES: ClassVar[tuple[Rule, ...]] = (Rule("timeout", "interval"),)


@dataclass(frozen=True)
class LivenessConfig:
    path: str = _knob("/api/live", _PATH)
    interval: float = _knob(5.0, _LONG)
    timeout: float = _knob(2.0, _SHORT)
    failures: int = _knob(3, within(whole, low=1, high=1000))

    RULES: ClassVar[tuple[Rule, ...]] = (Rule("timeout", "interval"),)


@dataclass(frozen=True)
class RestartConfig:
    backoff_initial: float = _knob(0.1, _LONG)
    backoff_max: float = _knob(30.0, _DAY)
    jitter: float = _knob(0.2, within(number, low=0, high=1))
    reset_after: float = _knob(10.0, _WEEK)
    max_restarts: int = _knob(10, within(whole, low=0, high=1_000_000))
    window: float = _knob(60.0, _WEEK)

    RULES: ClassVar[tuple[Rule, ...]] = (Rule("backoff_initial", "backoff_max", strict=False),)


@dataclass(frozen=True)
class PrestartStep:
    name: str = _required(text())
    command: tuple[str, ...] = _required(words("[python, -m, api.migrate]"))
    timeout: float = _knob(60.0, _DAY)


@dataclass(frozen=True)
class LogConfig:
    format: str = _knob("text", one_of("text", "json"))
    level: str = _knob("info", one_of("debug", "info", "warning", "error"))


@dataclass(frozen=True)
class PrestartConfig:
    steps: tuple[PrestartStep, ...] = _knob(
        (PrestartStep(name="migrate", command=("python", "-m", "api.migrate")),),
        _list_of(_section(PrestartStep)), env=False)
    after_db_loss: bool = _knob(False, flag)


@dataclass(frozen=True)
class Config:
    server: ServerConfig = _knob(ServerConfig(), _section(ServerConfig))
    database: DatabaseConfig = _knob(DatabaseConfig(), _section(DatabaseConfig))
    probe: ProbeConfig = _knob(ProbeConfig(), _section(ProbeConfig))
    liveness: LivenessConfig = _knob(LivenessConfig(), _section(LivenessConfig))
    restart: RestartConfig = _knob(RestartConfig(), _section(RestartConfig))
    prestart: PrestartConfig = _knob(PrestartConfig(), _section(PrestartConfig))
    on_db_loss: Policy = _knob(Policy.SWAP, _policy)
    log: LogConfig = _knob(LogConfig(), _section(LogConfig))


_CONFIG = _section(Config)


def load(path: FilePath | None, environ: Mapping[str, str]) -> Config:
    """Read the file (a missing default file means all defaults), apply the environment, validate."""
    raw = _read_config(path) if path is not None else {}
    sources: dict[Loc, str] = {}
    _apply_env(raw, environ, sources)
    return validate(raw, sources, path)


def validate(raw: dict[str, Any], sources: Mapping[Loc, str] | None = None, path: FilePath | None = None) -> Config:
    try:
        return _CONFIG(raw)
    except _Problems as problems:
        found = problems.found
        lines = [_describe(loc, message, raw, sources or {}, path) for loc, message in found[:MAX_LINES]]
        if len(found) > MAX_LINES:
            lines.append(f"... and {len(found) - MAX_LINES} more problems")
        raise ConfigError("\n".join(lines)) from None


def _read_config(path: FilePath) -> dict[str, Any]:
    shown = _path(path)
    try:
        content = read_text(path, CONFIG_LIMIT)
    except FileProblem as problem:
        raise ConfigError(f"{shown}: cannot read the config file ({problem}); pass --config PATH") from None
    try:
        data = parse_yaml(content)
    except FileProblem as problem:
        raise ConfigError(f"{shown}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{shown}: expected a mapping of sections at the top, got {type(data).__name__}")
    return data


def _env_keys() -> dict[str, Loc]:
    """LAUNCHER_<SECTION>_<KEY> for every scalar knob, plus the service's MYSQL_* names."""
    keys: dict[str, Loc] = {}
    for section in fields(Config):
        if dataclasses.is_dataclass(section.default):
            for sub in fields(section.default):
                if sub.metadata["env"]:
                    keys[f"{ENV_PREFIX}{section.name}_{sub.name}".upper()] = (section.name, sub.name)
        else:
            keys[f"{ENV_PREFIX}{section.name}".upper()] = (section.name,)
    keys.update(MYSQL_ENV)
    return keys


def _apply_env(raw: dict[str, Any], environ: Mapping[str, str], sources: dict[Loc, str]) -> None:
    """Each value stays text: the field's own parser reads it, as it reads the file's values."""
    for var, key in _env_keys().items():
        if var in environ:
            _set(raw, key, environ[var], sources, var)
    password_file = environ.get(PASSWORD_FILE_ENV)
    if password_file:
        try:
            secret = read_text(password_file, PASSWORD_LIMIT).rstrip("\r\n")
        except FileProblem as problem:
            raise ConfigError(
                f"{PASSWORD_FILE_ENV}={_path(password_file)}: cannot read the password file ({problem}); "
                "mount the secret there as a file, or unset the variable"
            ) from None
        _set(raw, ("database", "password"), secret, sources, PASSWORD_FILE_ENV)


def _set(raw: dict[str, Any], key: Loc, value: Any, sources: dict[Loc, str], var: str) -> None:
    """Put an environment value into the raw data; a section that the file gave as something
    other than a mapping stays as it is, for validation to report."""
    node = raw
    for part in key[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            return
    node[key[-1]] = value
    sources[key] = var


def _describe(loc: Loc, message: str, raw: dict[str, Any], sources: Mapping[Loc, str], path: FilePath | None) -> str:
    key = ".".join(loc)
    where = f"from {sources[loc]}" if loc in sources else f"in {_path(path)}" if path else "in the defaults"
    if message in (UNKNOWN, MISSING):
        return f"{key} ({where}): {message}"
    value = _lookup(raw, loc)
    if value is _ABSENT:
        return f"{key} (the default): {message}"
    if loc[0] == HIDDEN_SECTION:
        return f"{key} ({where}; value not shown): {message}"
    return f"{key} = {_bounded(value)} ({where}): {message}"


def _bounded(value: Any) -> str:
    """A repr short enough for one line, whatever the value: deep, huge or aliased."""
    shown = reprlib.Repr()
    shown.maxlevel, shown.maxstring, shown.maxother, shown.maxlist, shown.maxdict, shown.maxlong = 2, 80, 80, 4, 4, 40
    return shown.repr(value)


def _path(path: FilePath) -> str:
    """A file name as given, unless it is too long or holds characters that would break the line."""
    name = os.fspath(path)
    return name if name.isprintable() and len(name) <= 200 else _bounded(name)


_ABSENT = object()


def _lookup(raw: Any, loc: Loc) -> Any:
    for part in loc:
        if isinstance(raw, dict) and part in raw:
            raw = raw[part]
        elif isinstance(raw, list) and part.isdigit() and int(part) < len(raw):
            raw = raw[int(part)]
        else:
            return _ABSENT
    return raw


def masked(config: Config) -> dict[str, Any]:
    """The resolved configuration as plain data, password masked, for `launcher config`."""
    data = dataclasses.asdict(config)
    data["database"]["password"] = "***" if config.database.password.reveal() else ""
    data["on_db_loss"] = config.on_db_loss.value
    return data
