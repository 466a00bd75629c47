"""Reading the config file and the password file as hostile input: bounded, never blocking.

Only regular files are read, with a size limit, through a non-blocking open: a FIFO
would otherwise hang the launcher while its stop signals are still held, and
/dev/zero would fill memory. The YAML loader knows only the types a config needs
(YAML 1.2's core schema: no dates, no base-60 numbers, no yes/no booleans), limits
nesting and the size a document may expand to through aliases, so that every
document ends in data or in one ConfigError line.
"""

from __future__ import annotations

import os
import re
import stat
from typing import Any

import yaml

CONFIG_LIMIT = 1 << 20
PASSWORD_LIMIT = 4096
MAX_DEPTH = 32
MAX_NODES = 10_000  # values in the document once its aliases are expanded
MAX_DIGITS = 100  # an integer longer than this stays text, for the field's parser to refuse

_KINDS = {
    stat.S_IFIFO: "a FIFO",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFDIR: "a directory",
    stat.S_IFSOCK: "a socket",
}


class FileProblem(Exception):
    """A file that cannot be used; the message says why, for the caller to prefix."""


def read_text(path: str | os.PathLike[str], limit: int) -> str:
    """The whole text of a regular file of at most `limit` bytes, or FileProblem."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as err:
        raise FileProblem(err.strerror or str(err)) from None
    except ValueError:
        raise FileProblem("the path contains a NUL byte") from None
    try:
        kind = stat.S_IFMT(os.fstat(fd).st_mode)
        if kind != stat.S_IFREG:
            raise FileProblem(f"it is {_KINDS.get(kind, 'not a regular file')}, not a regular file")
        data = os.read(fd, limit + 1)
    except OSError as err:
        raise FileProblem(err.strerror or str(err)) from None
    finally:
        os.close(fd)
    if len(data) > limit:
        raise FileProblem(f"it is larger than {limit} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise FileProblem(f"not UTF-8 text (byte {err.start})") from None


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2's core scalars, bounded depth and bounded integers."""

    yaml_implicit_resolvers = {
        first: [
            (tag, regexp)
            for tag, regexp in resolvers
            if tag
            not in (
                "tag:yaml.org,2002:bool",
                "tag:yaml.org,2002:int",
                "tag:yaml.org,2002:float",
                "tag:yaml.org,2002:timestamp",
            )
        ]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]  # untyped in the stubs
                raise yaml.composer.ComposerError(None, None, f"nested deeper than {MAX_DEPTH} levels", mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_yaml_int(self, node: yaml.ScalarNode) -> Any:
        text = self.construct_scalar(node)
        return int(text) if len(text) <= MAX_DIGITS else text


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_Loader.add_implicit_resolver("tag:yaml.org,2002:int", re.compile(r"^[-+]?[0-9]+$"), list("-+0123456789"))
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
    list("-+0123456789."),
)
_Loader.add_constructor("tag:yaml.org,2002:int", _Loader.construct_yaml_int)
# An explicitly tagged date is still refused: the config has no dates, and PyYAML raises on 2024-02-30.
_Loader.add_constructor(
    "tag:yaml.org,2002:timestamp",  # the stub types it for loaders of its own only
    _Loader.construct_undefined,
)  # type: ignore[type-var]


def parse_yaml(text: str) -> Any:
    """The document's data, or FileProblem naming the line and what is wrong."""
    try:
        data = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err)
        raise FileProblem(f"invalid YAML{where}: {problem}; fix the syntax") from None
    except (ValueError, TypeError, ArithmeticError, RecursionError) as err:
        raise FileProblem(f"invalid YAML value: {str(err)[:200]}; fix the value") from None
    if _expanded_size(data) > MAX_NODES:
        raise FileProblem(
            f"the document expands to more than {MAX_NODES} values through its aliases; "
            "write the values out instead of nesting aliases"
        )
    return data


def _expanded_size(data: Any) -> int:
    """How many values the data holds when every alias is counted where it is used; stops
    counting past MAX_NODES, so an alias bomb costs no more than a large honest file."""
    count, stack = 0, [data]
    while stack and count <= MAX_NODES:
        value = stack.pop()
        count += 1
        if isinstance(value, dict):
            stack.extend(value.keys())
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
    return count
