"""config.yaml + environment + *_FILE secrets -> one validated, immutable object.

Every problem becomes a ConfigError whose lines name the key, the value, where the
value came from and what is allowed, so a user never has to read a traceback.
"""
from __future__ import annotations

import os
import re
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal, Mapping

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, SecretStr, ValidationError

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


class ConfigError(Exception):
    """Invalid configuration: each line of the message is one problem and its fix."""


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


Duration = Annotated[float, BeforeValidator(parse_duration)]


class Policy(StrEnum):
    """What to do with a serving child when the database is lost."""

    RESTART = "restart"
    SWAP = "swap"
    KEEP = "keep"
    EXIT = "exit"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerConfig(_Section):
    app: str = Field("api.main:app", pattern=r"^[\w.]+:[\w.]+$")
    host: str = Field("0.0.0.0", min_length=1)
    port: int = Field(8000, ge=0, le=65535)
    backlog: int = Field(2048, ge=1, le=65535)
    log_level: Literal["critical", "error", "warning", "info", "debug", "trace"] = "info"
    access_log: bool = True
    stop_grace: Duration = Field(10.0, gt=0, le=3600)
    ready_timeout: Duration = Field(30.0, gt=0, le=3600)
    health_path: str = Field("/api/health", pattern=r"^/\S*$")


class DatabaseConfig(_Section):
    host: str = Field("127.0.0.1", min_length=1)
    port: int = Field(3306, ge=1, le=65535)
    user: str = Field("app", min_length=1)
    password: SecretStr = SecretStr("")
    name: str = Field("app", min_length=1)


class ProbeConfig(_Section):
    interval: Duration = Field(1.0, gt=0, le=3600)
    retry_interval: Duration = Field(0.25, gt=0, le=3600)
    timeout: Duration = Field(0.5, gt=0, le=600)
    failures_before_down: int = Field(2, ge=1, le=1000)
    startup_timeout: Duration = Field(0.0, ge=0)


class LivenessConfig(_Section):
    path: str = Field("/api/live", pattern=r"^/\S*$")
    interval: Duration = Field(5.0, gt=0, le=3600)
    timeout: Duration = Field(2.0, gt=0, le=600)
    failures: int = Field(3, ge=1, le=1000)


class RestartConfig(_Section):
    backoff_initial: Duration = Field(0.1, gt=0, le=3600)
    backoff_max: Duration = Field(30.0, gt=0, le=86400)
    jitter: float = Field(0.2, ge=0, le=1)
    reset_after: Duration = Field(10.0, gt=0)
    max_restarts: int = Field(10, ge=0)
    window: Duration = Field(60.0, gt=0)


class PrestartStep(_Section):
    name: str = Field(min_length=1)
    command: list[str] = Field(min_length=1)
    timeout: Duration = Field(60.0, gt=0, le=86400)


class LogConfig(_Section):
    format: Literal["text", "json"] = "text"
    level: Literal["debug", "info", "warning", "error"] = "info"


class PrestartConfig(_Section):
    steps: tuple[PrestartStep, ...] = (
        PrestartStep(name="migrate", command=["python", "-m", "api.migrate"]),
    )
    after_db_loss: bool = False


class Config(_Section):
    server: ServerConfig = ServerConfig()
    database: DatabaseConfig = DatabaseConfig()
    probe: ProbeConfig = ProbeConfig()
    liveness: LivenessConfig = LivenessConfig()
    restart: RestartConfig = RestartConfig()
    prestart: PrestartConfig = PrestartConfig()
    on_db_loss: Policy = Policy.RESTART
    log: LogConfig = LogConfig()


def load(path: Path | None, environ: Mapping[str, str]) -> Config:
    """Read the file (a missing default file means all defaults), apply the environment, validate."""
    raw = _read_yaml(path) if path is not None else {}
    sources: dict[tuple[str, ...], str] = {}
    _apply_env(raw, environ, sources)
    try:
        return Config.model_validate(raw)
    except ValidationError as err:
        raise ConfigError("\n".join(_describe(e, raw, sources, path) for e in err.errors())) from None


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as err:
        raise ConfigError(f"{path}: cannot read the config file ({err.strerror}); pass --config PATH") from None
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


def _env_keys() -> dict[str, tuple[str, ...]]:
    """LAUNCHER_<SECTION>_<KEY> for every scalar knob, plus the service's MYSQL_* names."""
    keys: dict[str, tuple[str, ...]] = {}
    for name, field in Config.model_fields.items():
        model = field.annotation
        if isinstance(model, type) and issubclass(model, _Section):
            for sub in model.model_fields:
                keys[f"{ENV_PREFIX}{name}_{sub}".upper()] = (name, sub)
        else:
            keys[f"{ENV_PREFIX}{name}".upper()] = (name,)
    keys.update(MYSQL_ENV)
    return keys


def _apply_env(raw: dict[str, Any], environ: Mapping[str, str], sources: dict[tuple[str, ...], str]) -> None:
    for var, key in _env_keys().items():
        if var in environ:
            _set(raw, key, _scalar(environ[var], key), sources, var)
    password_file = environ.get(PASSWORD_FILE_ENV)
    if password_file:
        try:
            secret = Path(password_file).read_text().rstrip("\r\n")
        except OSError as err:
            raise ConfigError(
                f"{PASSWORD_FILE_ENV}={password_file}: cannot read the password file ({err.strerror}); "
                "mount the secret there or unset the variable"
            ) from None
        _set(raw, ("database", "password"), secret, sources, PASSWORD_FILE_ENV)


def _scalar(text: str, key: tuple[str, ...]) -> Any:
    """Environment values are YAML scalars ('5' is a number), but a password stays text."""
    if key == ("database", "password"):
        return text
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return value if isinstance(value, (str, int, float, bool)) else text


def _set(raw: dict[str, Any], key: tuple[str, ...], value: Any, sources: dict, var: str) -> None:
    node = raw
    for part in key[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[key[-1]] = value
    sources[key] = var


def _describe(error: Mapping[str, Any], raw: dict[str, Any], sources: dict, path: Path | None) -> str:
    loc = tuple(str(p) for p in error["loc"])
    key = ".".join(loc) or "(top level)"
    where = f"from {sources[loc]}" if loc in sources else f"in {path}" if path else "in the defaults"
    if error["type"] == "extra_forbidden":
        return f"{key} ({where}): unknown key; remove it or check its spelling against config.yaml"
    if error["type"] == "missing":
        return f"{key} ({where}): required key is missing; add it"
    value = "***" if loc[-1:] == ("password",) else _lookup(raw, loc)
    return f"{key} = {value!r} ({where}): {error['msg'].removeprefix('Value error, ')}"


def _lookup(raw: Any, loc: tuple[str, ...]) -> Any:
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
    data = config.model_dump(mode="json")
    data["database"]["password"] = "***" if config.database.password.get_secret_value() else ""
    return data
