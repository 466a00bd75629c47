"""`alembic upgrade head`, but only when the schema is behind: the prestart step of every start.

Importing alembic and SQLAlchemy costs ~1.6 s here, paid on every start although the schema
is almost always current. This reads the head revision from the migration files and the
database's version with one query; whenever it cannot be sure (a branch, a merge, a file it
cannot read), it lets alembic decide.
"""
from __future__ import annotations

import ast
import os
import sys
from pathlib import Path

import pymysql

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


def current_revision() -> str | None:
    env = os.environ
    conn = pymysql.connect(host=env.get("MYSQL_HOST", "127.0.0.1"), port=int(env.get("MYSQL_PORT", "3306")),
                           user=env.get("MYSQL_USER", "app"), password=env.get("MYSQL_PASSWORD", ""),
                           database=env.get("MYSQL_DATABASE", "app"), connect_timeout=5, read_timeout=30)
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
