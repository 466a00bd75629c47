"""config.yaml + environment + *_FILE secrets + command-line flags -> one validated, immutable
object. A flag wins over the environment, which wins over the file.

Every problem becomes a ConfigError whose lines name the key, the value (bounded, and never
from the database section), where the value came from and what is allowed, so a user never
has to read a traceback. `Source` remembers where the configuration came from, so SIGHUP can
read it again and `launcher config` can say where each value came from.
"""

from __future__ import annotations

import dataclasses
import os
import reprlib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from launcher.config.files import CONFIG_LIMIT, PASSWORD_LIMIT, FileProblem, parse_yaml, read_text
from launcher.config.parsers import duration
from launcher.config.schema import (
    MISSING,
    RENAMED,
    RESTART_ONLY,
    UNKNOWN,
    Config,
    DatabaseConfig,
    LivenessConfig,
    Loc,
    LogConfig,
    Policy,
    PrestartConfig,
    PrestartStep,
    ProbeConfig,
    Problems,
    RestartConfig,
    Secret,
    ServerConfig,
    SslMode,
    parse_config,
)

__all__ = [
    "PASSWORD_FILE_ENV",
    "Config",
    "ConfigError",
    "DatabaseConfig",
    "LivenessConfig",
    "Loc",
    "LogConfig",
    "Policy",
    "PrestartConfig",
    "PrestartStep",
    "ProbeConfig",
    "RestartConfig",
    "Secret",
    "ServerConfig",
    "Source",
    "SslMode",
    "load",
    "masked",
    "parse_duration",
    "read_password_file",
    "restart_only_changes",
    "validate",
]

# Environment variables the service already uses, kept under their old names.
MYSQL_ENV = {
    "MYSQL_HOST": ("database", "host"),
    "MYSQL_PORT": ("database", "port"),
    "MYSQL_DATABASE": ("database", "name"),
    "MYSQL_USER": ("database", "user"),
    "MYSQL_PASSWORD": ("database", "password"),
    "MYSQL_UNIX_SOCKET": ("database", "socket"),
    "MYSQL_SSL_MODE": ("database", "ssl_mode"),
    "MYSQL_SSL_CA": ("database", "ssl_ca"),
    "MYSQL_SSL_CERT": ("database", "ssl_cert"),
    "MYSQL_SSL_KEY": ("database", "ssl_key"),
}
PASSWORD_FILE_ENV = "MYSQL_PASSWORD_FILE"
CONFIG_ENV = "LAUNCHER_CONFIG"
ENV_PREFIX = "LAUNCHER_"
HIDDEN_SECTION = "database"  # its values are never echoed: a password may stand anywhere in it
MAX_LINES = 20  # problems listed in one error; the rest are counted
DEFAULT_PATH = "config.yaml"

FilePath = str | os.PathLike[str]  # no pathlib: it would stay resident (docs/design.md, Resident cost)
parse_duration = duration


class ConfigError(Exception):
    """Invalid configuration: each line of the message is one problem and its fix."""


@dataclass(frozen=True)
class Source:
    """Where the configuration comes from: a file (or none), the environment the launcher
    was given, and the command line's flags (key path -> (flag, value))."""

    path: FilePath | None = None
    environ: Mapping[str, str] = field(default_factory=dict)
    flags: Mapping[Loc, tuple[str, Any]] = field(default_factory=dict)

    @classmethod
    def find(
        cls, path: FilePath | None, environ: Mapping[str, str], flags: Mapping[Loc, tuple[str, Any]] | None = None
    ) -> Source:
        """--config, else $LAUNCHER_CONFIG, else ./config.yaml when there is one, else none."""
        if path is None and environ.get(CONFIG_ENV):
            path = environ[CONFIG_ENV]
        if path is None and os.path.exists(DEFAULT_PATH):
            path = os.path.abspath(DEFAULT_PATH)
        return cls(path, dict(environ), dict(flags or {}))

    def load(self) -> Config:
        return self.explain()[0]

    def explain(self) -> tuple[Config, dict[Loc, str]]:
        """The config, and where each value that is not a default came from."""
        raw = _read_config(self.path) if self.path is not None else {}
        sources = {loc: f"in {_path(self.path)}" for loc in _leaves(raw)} if self.path is not None else {}
        _apply_env(raw, self.environ, sources)
        for loc, (flag, value) in self.flags.items():
            _set(raw, loc, value, sources, f"from {flag}")
        return validate(raw, sources, self.path), sources


def load(path: FilePath | None, environ: Mapping[str, str]) -> Config:
    """Read the file (a missing default file means all defaults), apply the environment, validate."""
    return Source(path, environ).load()


def validate(raw: dict[str, Any], sources: Mapping[Loc, str] | None = None, path: FilePath | None = None) -> Config:
    try:
        config: Config = parse_config(raw)
        return config
    except Problems as problems:
        found = problems.found
        lines = [_describe(loc, message, raw, sources or {}, path) for loc, message in found[:MAX_LINES]]
        if len(found) > MAX_LINES:
            lines.append(f"... and {len(found) - MAX_LINES} more problems")
        raise ConfigError("\n".join(lines)) from None


def restart_only_changes(old: Config, new: Config) -> list[str]:
    """The keys a reload cannot apply (the socket is bound once): they wait for a restart."""
    changed = []
    for section, key in RESTART_ONLY:
        before, after = getattr(getattr(old, section), key), getattr(getattr(new, section), key)
        if before != after:
            changed.append(f"{section}.{key} ({before!r} -> {after!r})")
    return changed


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


def _leaves(raw: Any, loc: Loc = ()) -> list[Loc]:
    if isinstance(raw, dict) and len(loc) < 2:
        return [leaf for key, value in raw.items() for leaf in _leaves(value, (*loc, str(key)))]
    return [loc]


def env_keys() -> dict[str, Loc]:
    """LAUNCHER_<SECTION>_<KEY> for every knob that may come from the environment, plus the
    service's MYSQL_* names."""
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
    for var, key in env_keys().items():
        if var in environ:
            _set(raw, key, environ[var], sources, f"from {var}")
    password_file = environ.get(PASSWORD_FILE_ENV)
    if password_file:
        _set(raw, ("database", "password"), read_password_file(password_file), sources, f"from {PASSWORD_FILE_ENV}")


def read_password_file(path: str) -> str:
    """The secret in the file, its trailing newline dropped; ConfigError naming the path."""
    try:
        return read_text(path, PASSWORD_LIMIT).rstrip("\r\n")
    except FileProblem as problem:
        raise ConfigError(
            f"{PASSWORD_FILE_ENV}={_path(path)}: cannot read the password file ({problem}); "
            "mount the secret there as a file, or unset the variable"
        ) from None


def _set(raw: dict[str, Any], key: Loc, value: Any, sources: dict[Loc, str], source: str) -> None:
    """Put a value into the raw data; a section that the file gave as something other than a
    mapping stays as it is, for validation to report."""
    node = raw
    for part in key[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            return
    node[key[-1]] = value
    sources[key] = source


def _describe(loc: Loc, message: str, raw: dict[str, Any], sources: Mapping[Loc, str], path: FilePath | None) -> str:
    key = ".".join(loc)
    where = sources.get(loc[:2]) or (f"in {_path(path)}" if path else "in the defaults")
    if message in (MISSING, UNKNOWN, *RENAMED.values()):
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
    plain: dict[str, Any] = _plain(data)
    return plain


def _plain(value: Any) -> Any:
    """Tuples as lists, what JSON prints plainly (the enums are text already)."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value
