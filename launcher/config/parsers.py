"""Value parsers for the config fields: each takes what YAML or the environment gave and
returns the typed value, or raises ValueError with what is allowed.

Every parser accepts text, so an environment variable is parsed by the type of its
field (a port as a number, a name as text), never as YAML. Every value is bounded:
durations must fit the event loop's timers, numbers have a few digits, text has no
NUL byte (no environment string, argv word or socket address can hold one).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable
from typing import Any

Parser = Callable[[Any], Any]

_DURATION = re.compile(r"^\s*(\d{1,12}(?:\.\d{1,9})?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_WHOLE = re.compile(r"^\s*[-+]?\d{1,18}\s*$")
_NUMBER = re.compile(r"^\s*[-+]?(?:\d{1,18}(?:\.\d{0,18})?|\.\d{1,18})(?:[eE][-+]?\d{1,3})?\s*$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_SIZE = re.compile(r"^\s*(\d{1,12})\s*([kmg](?:i?b)?|b)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
_FLAGS = {"true": True, "false": False, "yes": True, "no": False, "on": True, "off": False, "1": True, "0": False}
TEXT_LIMIT = 255
DURATION_LIMIT = 7 * 86400.0  # a week: far beyond any sane knob, far within the loop's timers
MAX_WORKERS = 256
CEILING_PER_CPU = 4  # SIGTTIN stops at this many workers per CPU unless server.max_workers says otherwise


def duration(value: Any) -> float:
    """Seconds as a number, or '500ms', '2s', '1m', '1h', '1d'."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError("expected a duration like 500ms, 2s or 1m")
    if isinstance(value, str):
        match = _DURATION.match(value)
        if not match:
            raise ValueError("expected a duration like 500ms, 2s or 1m")
        value = float(match.group(1)) * _UNITS[match.group(2)]
    if not math.isfinite(value) or abs(value) > 1e12:
        raise ValueError("expected a finite duration like 500ms, 2s or 1m")
    return float(value)


def text(limit: int = TEXT_LIMIT, controls: bool = False) -> Parser:
    """Non-empty text of at most `limit` characters; without `controls`, no control characters."""
    forbidden = re.compile("\x00") if controls else _CONTROL

    def parse(value: Any) -> str:
        if not isinstance(value, str) or not value:
            raise ValueError("expected non-empty text (quote a value that YAML reads as a number or true/false)")
        if len(value) > limit:
            raise ValueError(f"is {len(value)} characters long; at most {limit} are allowed")
        if forbidden.search(value):
            raise ValueError("must not contain a NUL byte" if controls else "must not contain control characters")
        return value

    return parse


def whole(value: Any) -> int:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, str))
        or (isinstance(value, str) and not _WHOLE.match(value))
        or (isinstance(value, int) and abs(value) >= 10**18)
    ):
        raise ValueError("expected a whole number")
    return int(value)


def number(value: Any) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float, str))
        or (isinstance(value, str) and not _NUMBER.match(value))
    ):
        raise ValueError("expected a number")
    result = float(value)
    if not math.isfinite(result):
        raise ValueError("expected a finite number")
    return result


def flag(value: Any) -> bool:
    """true or false; from the environment also yes/no, on/off, 1/0."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _FLAGS:
        return _FLAGS[value.strip().lower()]
    raise ValueError("expected true or false")


def one_of(*choices: str) -> Parser:
    allowed = ", ".join(repr(c) for c in choices[:-1]) + f" or {choices[-1]!r}"

    def parse(value: Any) -> str:
        if not isinstance(value, str) or value not in choices:
            raise ValueError(f"expected {allowed}")
        return value

    return parse


def matching(pattern: str, example: str, limit: int = TEXT_LIMIT) -> Parser:
    compiled = re.compile(pattern)

    def parse(value: Any) -> str:
        if not isinstance(value, str) or len(value) > limit or not compiled.fullmatch(value):
            raise ValueError(f"expected something like {example}")
        return value

    return parse


def words(example: str, limit: int = 256) -> Parser:
    """A command as a list of words (argv), each non-empty and without a NUL byte."""
    word = text(limit=4096, controls=True)

    def parse(value: Any) -> tuple[str, ...]:
        if not isinstance(value, list) or not value or len(value) > limit:
            raise ValueError(f"expected a non-empty list of at most {limit} words, like {example}")
        for item in value:
            try:
                word(item)
            except ValueError:
                raise ValueError(f"expected a list of non-empty words without NUL bytes, like {example}") from None
        return tuple(value)

    return parse


def size(value: Any) -> int:
    """Bytes as a number, or with a binary unit: 512k, 10m, 1g (KiB, MiB, GiB)."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError("expected a size like 64k, 10m or 1g")
    if isinstance(value, int):
        return whole(value)
    match = _SIZE.match(value)
    if not match:
        raise ValueError("expected a size like 64k, 10m or 1g")
    return int(match.group(1)) * _SIZE_UNITS[(match.group(2) or "").lower()[:1]]


def patterns(example: str) -> Parser:
    """A list of glob patterns, or from the environment one text with commas between them."""
    word = text(limit=TEXT_LIMIT)

    def parse(value: Any) -> tuple[str, ...]:
        items = [part.strip() for part in value.split(",") if part.strip()] if isinstance(value, str) else value
        if not isinstance(items, list) or len(items) > 64:
            raise ValueError(f"expected a list of at most 64 patterns, like {example}")
        return tuple(word(item) for item in items)

    return parse


def available_cpus(proc: str = "/proc/self", root: str = "/sys/fs/cgroup") -> int:
    """The CPUs this process may use: its affinity mask, and the tightest CPU quota of its
    cgroup and the cgroups above it (v2's cpu.max, v1's cfs quota and period), so a container
    limited to 1.5 CPUs gets 2 workers, not the host's count."""
    count = len(os.sched_getaffinity(0))
    quota = cgroup_cpu_quota(proc, root)
    if quota is not None:
        count = min(count, max(1, math.ceil(quota)))
    return max(1, count)


def cgroup_cpu_quota(proc: str = "/proc/self", root: str = "/sys/fs/cgroup") -> float | None:
    """CPUs allowed by the cgroup hierarchy, or None when nothing limits them."""
    try:
        with open(os.path.join(proc, "cgroup"), encoding="ascii") as file:
            lines = file.read().splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    limits = []
    for line in lines:
        _, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        if controllers == "":
            limits += _quotas(root, path, _v2_quota)
        elif "cpu" in controllers.split(","):
            mount = next(
                (
                    os.path.join(root, name)
                    for name in (controllers, "cpu", "cpu,cpuacct")
                    if os.path.isdir(os.path.join(root, name))
                ),
                None,
            )
            if mount is not None:
                limits += _quotas(mount, path, _v1_quota)
    return min(limits) if limits else None


def _quotas(mount: str, path: str, read: Callable[[str], float | None]) -> list[float]:
    """The quotas from the process's cgroup up to the mount's root. Inside a container the
    mount may be the container's own cgroup while /proc/self/cgroup names a host path: then
    only the levels that exist are read."""
    found, parts = [], [part for part in path.split("/") if part]
    for depth in range(len(parts), -1, -1):
        quota = read(os.path.join(mount, *parts[:depth]))
        if quota is not None:
            found.append(quota)
    return found


def _v2_quota(folder: str) -> float | None:
    fields = _read_words(os.path.join(folder, "cpu.max"))
    if len(fields) < 2 or fields[0] == "max":
        return None
    return _ratio(fields[0], fields[1])


def _v1_quota(folder: str) -> float | None:
    quota = _read_words(os.path.join(folder, "cpu.cfs_quota_us"))
    period = _read_words(os.path.join(folder, "cpu.cfs_period_us"))
    if not quota or not period or quota[0].startswith("-"):
        return None
    return _ratio(quota[0], period[0])


def _ratio(quota: str, period: str) -> float | None:
    try:
        return int(quota) / int(period) if int(period) > 0 and int(quota) > 0 else None
    except ValueError:
        return None


def _read_words(path: str) -> list[str]:
    try:
        with open(path, encoding="ascii") as file:
            return file.read().split()
    except (OSError, UnicodeDecodeError):
        return []


def workers(value: Any) -> int:
    """A number of workers, or 'auto' for the CPUs this process may use."""
    if isinstance(value, str) and value.strip() == "auto":
        return available_cpus()
    try:
        result = whole(value)
    except ValueError:
        result = 0
    if not 1 <= result <= MAX_WORKERS:
        raise ValueError(f"expected auto or a whole number from 1 to {MAX_WORKERS}")
    return result


def worker_ceiling(value: Any) -> int:
    """The most workers SIGTTIN may reach: 'auto' is a few per CPU this process may use."""
    if isinstance(value, str) and value.strip() == "auto":
        return min(MAX_WORKERS, CEILING_PER_CPU * available_cpus())
    return workers(value)


def within(parse: Parser, low: float | None = None, high: float | None = None, above: float | None = None) -> Parser:
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
