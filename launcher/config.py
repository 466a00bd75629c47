"""config.yaml + environment + *_FILE secrets -> one validated, immutable object.

Every problem becomes a ConfigError whose lines name the key, the value, where the
value came from and what is allowed, so a user never has to read a traceback.

Validation is a table of plain dataclass fields, each with a parser and its bounds,
rather than pydantic: the launcher stays resident for the container's whole life, and
pydantic with the built schemas cost it 20 MB of its 46 MB and 0.3 s before the first
child could be spawned.
"""
from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field, fields
from enum import StrEnum
from typing import Any, Callable, Mapping

import yaml

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}

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

Loc = tuple[str, ...]
FilePath = str | os.PathLike[str]  # no pathlib: it would stay resident (DESIGN.md, Resident cost)


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
    """What to do with a serving child when the database is lost."""

    RESTART = "restart"
    SWAP = "swap"
    KEEP = "keep"
    EXIT = "exit"


def parse_duration(value: Any) -> float:
    """Accept seconds as a number, or '500ms', '2s', '1m', '1h'."""
    if isinstance(value, bool):
        raise ValueError("expected a duration like 500ms, 2s or 1m")
    if isinstance(value, (int, float)):
        return float(value)
    match = _DURATION.match(str(value))
    if not match:
        raise ValueError("expected a duration like 500ms, 2s or 1m")
    return float(match.group(1)) * _UNITS[match.group(2)]


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError("expected non-empty text")
    return value


def _whole(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)) or not re.fullmatch(r"\s*-?\d+\s*", str(value)):
        raise ValueError("expected a whole number")
    return int(value)


def _number(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("expected a number")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError("expected a number") from None


def _flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError("expected true or false")
    return value


def _secret(value: Any) -> Secret:
    if not isinstance(value, (str, int, float)) or isinstance(value, bool):
        raise ValueError("expected text")
    return Secret(str(value))


def _command(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(w, str) and w for w in value):
        raise ValueError("expected a non-empty list of words, like [python, -m, api.migrate]")
    return tuple(value)


def _one_of(*choices: str) -> Callable[[Any], str]:
    allowed = ", ".join(repr(c) for c in choices[:-1]) + f" or {choices[-1]!r}"

    def parse(value: Any) -> str:
        if value not in choices:
            raise ValueError(f"expected {allowed}")
        return value
    return parse


def _matching(pattern: str, example: str) -> Callable[[Any], str]:
    compiled = re.compile(pattern)

    def parse(value: Any) -> str:
        if not isinstance(value, str) or not compiled.fullmatch(value):
            raise ValueError(f"expected something like {example}")
        return value
    return parse


def _within(parse: Callable[[Any], Any], low: float | None = None, high: float | None = None,
            above: float | None = None) -> Callable[[Any], Any]:
    """`parse`, then bounds: low <= value <= high, value > above; the message says which."""
    def bounded(value: Any) -> Any:
        result = parse(value)
        if above is not None and not result > above:
            raise ValueError(f"must be greater than {above:g}")
        if low is not None and not result >= low:
            raise ValueError(f"must be greater than or equal to {low:g}")
        if high is not None and not result <= high:
            raise ValueError(f"must be less than or equal to {high:g}")
        return result
    return bounded


def _knob(default: Any, parse: Callable[[Any], Any]) -> Any:
    return field(default=default, metadata={"parse": parse})


def _required(parse: Callable[[Any], Any]) -> Any:
    return field(metadata={"parse": parse})


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
    """A parser for a mapping of the section's keys, which reports every bad key, not the first."""
    names = {f.name for f in fields(cls)}

    def parse(value: Any) -> Any:
        if not isinstance(value, dict):
            raise ValueError("expected a mapping of keys")
        found: list[tuple[Loc, str]] = [((str(key),), UNKNOWN) for key in value if key not in names]
        given = {}
        for f in fields(cls):
            if f.name in value:
                given[f.name] = _parse_at(f.name, f.metadata["parse"], value[f.name], found)
            elif f.default is dataclasses.MISSING:
                found.append(((f.name,), MISSING))
        if found:
            raise _Problems(found)
        return cls(**given)
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


def _policy(value: Any) -> Policy:
    return Policy(_one_of(*(policy.value for policy in Policy))(value))


_PORT = _within(_whole, low=0, high=65535)
_SHORT = _within(parse_duration, above=0, high=600)
_LONG = _within(parse_duration, above=0, high=3600)
_PATH = _matching(r"/\S*", "/api/health")


@dataclass(frozen=True)
class ServerConfig:
    app: str = _knob("api.main:app", _matching(r"[\w.]+:[\w.]+", "api.main:app"))
    host: str = _knob("0.0.0.0", _text)
    port: int = _knob(8000, _PORT)
    backlog: int = _knob(2048, _within(_whole, low=1, high=65535))
    log_level: str = _knob("info", _one_of("critical", "error", "warning", "info", "debug", "trace"))
    access_log: bool = _knob(True, _flag)
    stop_grace: float = _knob(10.0, _LONG)
    ready_timeout: float = _knob(30.0, _LONG)
    health_path: str = _knob("/api/health", _PATH)


@dataclass(frozen=True)
class DatabaseConfig:
    host: str = _knob("127.0.0.1", _text)
    port: int = _knob(3306, _within(_whole, low=1, high=65535))
    user: str = _knob("app", _text)
    password: Secret = _knob(Secret(), _secret)
    name: str = _knob("app", _text)


@dataclass(frozen=True)
class ProbeConfig:
    interval: float = _knob(1.0, _LONG)
    retry_interval: float = _knob(0.25, _LONG)
    timeout: float = _knob(0.5, _SHORT)
    failures_before_down: int = _knob(2, _within(_whole, low=1, high=1000))
    startup_timeout: float = _knob(0.0, _within(parse_duration, low=0))


@dataclass(frozen=True)
class LivenessConfig:
    path: str = _knob("/api/live", _PATH)
    interval: float = _knob(5.0, _LONG)
    timeout: float = _knob(2.0, _SHORT)
    failures: int = _knob(3, _within(_whole, low=1, high=1000))


@dataclass(frozen=True)
class RestartConfig:
    backoff_initial: float = _knob(0.1, _LONG)
    backoff_max: float = _knob(30.0, _within(parse_duration, above=0, high=86400))
    jitter: float = _knob(0.2, _within(_number, low=0, high=1))
    reset_after: float = _knob(10.0, _within(parse_duration, above=0))
    max_restarts: int = _knob(10, _within(_whole, low=0))
    window: float = _knob(60.0, _within(parse_duration, above=0))


@dataclass(frozen=True)
class PrestartStep:
    name: str = _required(_text)
    command: tuple[str, ...] = _required(_command)
    timeout: float = _knob(60.0, _within(parse_duration, above=0, high=86400))


@dataclass(frozen=True)
class LogConfig:
    format: str = _knob("text", _one_of("text", "json"))
    level: str = _knob("info", _one_of("debug", "info", "warning", "error"))


@dataclass(frozen=True)
class PrestartConfig:
    steps: tuple[PrestartStep, ...] = _knob(
        (PrestartStep(name="migrate", command=("python", "-m", "api.migrate")),), _list_of(_section(PrestartStep)))
    after_db_loss: bool = _knob(False, _flag)


@dataclass(frozen=True)
class Config:
    server: ServerConfig = _knob(ServerConfig(), _section(ServerConfig))
    database: DatabaseConfig = _knob(DatabaseConfig(), _section(DatabaseConfig))
    probe: ProbeConfig = _knob(ProbeConfig(), _section(ProbeConfig))
    liveness: LivenessConfig = _knob(LivenessConfig(), _section(LivenessConfig))
    restart: RestartConfig = _knob(RestartConfig(), _section(RestartConfig))
    prestart: PrestartConfig = _knob(PrestartConfig(), _section(PrestartConfig))
    on_db_loss: Policy = _knob(Policy.RESTART, _policy)
    log: LogConfig = _knob(LogConfig(), _section(LogConfig))


_CONFIG = _section(Config)


def load(path: FilePath | None, environ: Mapping[str, str]) -> Config:
    """Read the file (a missing default file means all defaults), apply the environment, validate."""
    raw = _read_yaml(path) if path is not None else {}
    sources: dict[Loc, str] = {}
    _apply_env(raw, environ, sources)
    return validate(raw, sources, path)


def validate(raw: dict[str, Any], sources: Mapping[Loc, str] | None = None, path: FilePath | None = None) -> Config:
    try:
        return _CONFIG(raw)
    except _Problems as problems:
        lines = (_describe(loc, message, raw, sources or {}, path) for loc, message in problems.found)
        raise ConfigError("\n".join(lines)) from None


def _read_yaml(path: FilePath) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as file:
            text = file.read()
    except OSError as err:
        raise ConfigError(f"{path}: cannot read the config file ({err.strerror}); pass --config PATH") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text (byte {err.start}); save the config file as UTF-8") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err)
        raise ConfigError(f"{path}: invalid YAML{where}: {problem}; fix the syntax") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top, got {type(data).__name__}")
    return data


def _env_keys() -> dict[str, Loc]:
    """LAUNCHER_<SECTION>_<KEY> for every scalar knob, plus the service's MYSQL_* names."""
    keys: dict[str, Loc] = {}
    for section in fields(Config):
        if dataclasses.is_dataclass(section.default):
            for sub in fields(section.default):
                keys[f"{ENV_PREFIX}{section.name}_{sub.name}".upper()] = (section.name, sub.name)
        else:
            keys[f"{ENV_PREFIX}{section.name}".upper()] = (section.name,)
    keys.update(MYSQL_ENV)
    return keys


def _apply_env(raw: dict[str, Any], environ: Mapping[str, str], sources: dict[Loc, str]) -> None:
    for var, key in _env_keys().items():
        if var in environ:
            _set(raw, key, _scalar(environ[var], key), sources, var)
    password_file = environ.get(PASSWORD_FILE_ENV)
    if password_file:
        try:
            with open(password_file, encoding="utf-8") as file:
                secret = file.read().rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as err:
            why = getattr(err, "strerror", None) or "not UTF-8 text"
            raise ConfigError(
                f"{PASSWORD_FILE_ENV}={password_file}: cannot read the password file ({why}); "
                "mount the secret there or unset the variable"
            ) from None
        _set(raw, ("database", "password"), secret, sources, PASSWORD_FILE_ENV)


def _scalar(text: str, key: Loc) -> Any:
    """Environment values are YAML scalars ('5' is a number), but a password stays text."""
    if key == ("database", "password"):
        return text
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return value if isinstance(value, (str, int, float, bool)) else text


def _set(raw: dict[str, Any], key: Loc, value: Any, sources: dict[Loc, str], var: str) -> None:
    node = raw
    for part in key[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[key[-1]] = value
    sources[key] = var


def _describe(loc: Loc, message: str, raw: dict[str, Any], sources: Mapping[Loc, str], path: FilePath | None) -> str:
    key = ".".join(loc)
    where = f"from {sources[loc]}" if loc in sources else f"in {path}" if path else "in the defaults"
    if message in (UNKNOWN, MISSING):
        return f"{key} ({where}): {message}"
    value = "***" if loc[-1:] == ("password",) else _lookup(raw, loc)
    return f"{key} = {value!r} ({where}): {message}"


def _lookup(raw: Any, loc: Loc) -> Any:
    for part in loc:
        if isinstance(raw, dict):
            raw = raw.get(part)
        elif isinstance(raw, list) and part.isdigit() and int(part) < len(raw):
            raw = raw[int(part)]
        else:
            return None
    return raw


def masked(config: Config) -> dict[str, Any]:
    """The resolved configuration as plain data, password masked, for `launcher config`."""
    data = dataclasses.asdict(config)
    data["database"]["password"] = "***" if config.database.password.reveal() else ""
    data["on_db_loss"] = config.on_db_loss.value
    return data
