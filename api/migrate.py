"""`alembic upgrade head`, but only when the schema is behind: the prestart step of every start.

Importing alembic and SQLAlchemy costs ~1.6 s here, paid on every start although the schema
is almost always current. This reads the head revision from the migration files and the
database's version with one query; whenever it cannot be sure (a branch, a merge, a file it
cannot read), it lets alembic decide.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pymysql

from api.settings import Settings

VERSIONS = Path(__file__).resolve().parent / "migrations" / "versions"


def head_revision(folder: Path = VERSIONS) -> str | None:
    """The single head of a linear history, or None when that is not what the files say."""
    revisions: dict[str, object] = {}
    for path in folder.glob("*.py"):
        values = {}
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
                if node.targets[0].id in ("revision", "down_revision"):
                    values[node.targets[0].id] = ast.literal_eval(node.value)
        if not isinstance(values.get("revision"), str):
            return None
        revisions[values["revision"]] = values.get("down_revision")
    parents = set(revisions.values())
    heads = [r for r in revisions if r not in parents]
    linear = all(p is None or isinstance(p, str) for p in parents)
    return heads[0] if len(heads) == 1 and linear else None


def connect() -> pymysql.connections.Connection:  # type: ignore[type-arg]
    """One connection with the service's settings (TLS and socket included), patient enough
    for a migration: 5 s to connect, 30 s per statement."""
    settings = Settings.from_env()
    args = {**settings.connect_args(), "connect_timeout": 5, "read_timeout": 30, "write_timeout": 30}
    return pymysql.connect(
        host=settings.host,
        port=settings.port,
        user=settings.user,
        password=settings.password,
        database=settings.database,
        **args,
    )


def current_revision() -> str | None:
    conn = connect()
    try:
        with conn.cursor() as cursor:
            cursor.execute("SHOW TABLES LIKE 'alembic_version'")
            if cursor.fetchone() is None:
                return None
            cursor.execute("SELECT version_num FROM alembic_version")
            row = cursor.fetchone()
            return row[0] if row else None
    finally:
        conn.close()


def main() -> int:
    head = head_revision()
    try:
        current = current_revision()
    except pymysql.MySQLError as err:
        print(f"migrate: cannot read the schema version: {err}", file=sys.stderr)
        return 1
    if head is not None and current == head:
        print(f"migrate: schema at head ({head}); nothing to do")
        return 0
    from alembic.config import main as alembic

    alembic(["upgrade", "head"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
