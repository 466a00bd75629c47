"""Whether the workers' connection pools fit in the server's max_connections.

Each worker holds its own SQLAlchemy pool: up to pool_size + max_overflow connections
(API_DB_POOL_SIZE, API_DB_MAX_OVERFLOW; SQLAlchemy's defaults 5 and 10). With the probe's
own connection, workers x (pool_size + max_overflow) + 1 must fit in MySQL's max_connections
(151 by default), or a busy moment ends in 'Too many connections'.
"""

from __future__ import annotations

from collections.abc import Mapping

POOL_SIZE = 5
MAX_OVERFLOW = 10
PROBES = 1


def _count(env: Mapping[str, str], name: str, default: int) -> int:
    try:
        return max(0, int(env.get(name, default)))
    except ValueError:
        return default


def needed(workers: int, env: Mapping[str, str]) -> int:
    per_worker = _count(env, "API_DB_POOL_SIZE", POOL_SIZE) + _count(env, "API_DB_MAX_OVERFLOW", MAX_OVERFLOW)
    return workers * per_worker + PROBES


def connection_warning(workers: int, env: Mapping[str, str], max_connections: int) -> str | None:
    """One line for the log when the pools cannot fit, else None."""
    want = needed(workers, env)
    if want <= max_connections:
        return None
    return (
        f"{workers} workers x (API_DB_POOL_SIZE + API_DB_MAX_OVERFLOW) + {PROBES} probe = {want} connections, "
        f"more than the server's max_connections={max_connections}; lower the pool sizes or server.workers, "
        "or raise max_connections"
    )
