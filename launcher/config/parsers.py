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
from typing import Any, Callable

Parser = Callable[[Any], Any]

_DURATION = re.compile(r"^\s*(\d{1,12}(?:\.\d{1,9})?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_WHOLE = re.compile(r"^\s*[-+]?\d{1,18}\s*$")
_NUMBER = re.compile(r"^\s*[-+]?(?:\d{1,18}(?:\.\d{0,18})?|\.\d{1,18})(?:[eE][-+]?\d{1,3})?\s*$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_FLAGS = {"true": True, "false": False, "yes": True, "no": False, "on": True, "off": False, "1": True, "0": False}
TEXT_LIMIT = 255
DURATION_LIMIT = 7 * 86400.0  # a week: far beyond any sane knob, far within the loop's timers


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
    if isinstance(value, bool) or not isinstance(value, (int, str)) or (
            isinstance(value, str) and not _WHOLE.match(value)) or (isinstance(value, int) and abs(value) >= 10**18):
        raise ValueError("expected a whole number")
    return int(value)


def number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)) or (
            isinstance(value, str) and not _NUMBER.match(value)):
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


def available_cpus() -> int:
    """The CPUs this process may use: its affinity mask, and the cgroup's CPU quota when one
    is set (a container limited to 1.5 CPUs gets 2 workers, not the host's count)."""
    count = len(os.sched_getaffinity(0))
    try:
        with open("/sys/fs/cgroup/cpu.max", encoding="ascii") as file:
            quota, period = file.read().split()[:2]
        if quota != "max":
            count = min(count, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, count)


def workers(value: Any) -> int:
    """A number of workers, or 'auto' for the CPUs this process may use."""
    if isinstance(value, str) and value.strip() == "auto":
        return available_cpus()
    try:
        result = whole(value)
    except ValueError:
        result = 0
    if not 1 <= result <= 256:
        raise ValueError("expected auto or a whole number from 1 to 256")
    return result


def within(parse: Parser, low: float | None = None, high: float | None = None,
           above: float | None = None) -> Parser:
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
