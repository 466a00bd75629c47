"""`launcher config`: the effective configuration, password masked, and where each value came from."""

from __future__ import annotations

import json
from typing import Any

from launcher.config import Config, Loc, Source, masked
from launcher.exitcodes import ExitCode


def show(config: Config, sources: dict[Loc, str], source: Source, as_json: bool) -> int:
    data = masked(config)
    if as_json:
        print(json.dumps(data, indent=2))
        return ExitCode.OK
    where = f"config file: {source.path}" if source.path else "config file: none (defaults, environment and flags)"
    print(f"# {where}")
    for key, value in _flatten(data):
        print(f"{'.'.join(key)} = {json.dumps(value)}  # {sources.get(key, 'default')}")
    return ExitCode.OK


def _flatten(data: Any, key: Loc = ()) -> list[tuple[Loc, Any]]:
    if isinstance(data, dict) and len(key) < 2:
        return [item for name, value in data.items() for item in _flatten(value, (*key, name))]
    return [(key, data)]
