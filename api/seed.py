"""The prestart step that seeds the admin account, idempotently: `python -m api.seed`.

The email comes from ADMIN_EMAIL, else from `--email` in the step's command (config.yaml);
the password from ADMIN_PASSWORD_FILE (a Docker or Kubernetes secret), else ADMIN_PASSWORD.
It is stored as an Argon2 hash (argon2-cffi) and never printed. With no password the step
is skipped with one line: there is never a default password. A second run with the same
password changes nothing; a new password (a rotated secret) replaces the hash.
"""

from __future__ import annotations

import os
import sys

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from api.migrate import connect

LIMIT = 4096


def password(env: os._Environ[str] | dict[str, str]) -> str | None:
    """The admin's password, or None when none is configured; SystemExit naming a bad file."""
    path = env.get("ADMIN_PASSWORD_FILE")
    if path:
        try:
            with open(path, encoding="utf-8") as file:
                return file.read(LIMIT + 1)[:LIMIT].rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as err:
            raise SystemExit(
                f"seed-admin: cannot read ADMIN_PASSWORD_FILE={path}: "
                f"{getattr(err, 'strerror', None) or err}; mount the secret there, or unset the variable"
            ) from None
    return env.get("ADMIN_PASSWORD") or None


def email(argv: list[str], env: os._Environ[str] | dict[str, str]) -> str:
    if env.get("ADMIN_EMAIL"):
        return env["ADMIN_EMAIL"]
    if "--email" in argv and argv.index("--email") + 1 < len(argv):
        return argv[argv.index("--email") + 1]
    raise SystemExit("seed-admin: no admin email: set ADMIN_EMAIL or add --email ADDRESS to the step's command")


def seed(address: str, secret: str) -> str:
    """What the run did, in words for the log."""
    hasher = PasswordHasher()
    conn = connect()
    try:
        with conn.cursor() as cursor:
            cursor.execute("SELECT id, password_hash FROM users WHERE email = %s FOR UPDATE", (address,))
            row = cursor.fetchone()
            if row is None:
                cursor.execute(
                    "INSERT INTO users (email, password_hash, is_admin) VALUES (%s, %s, TRUE)",
                    (address, hasher.hash(secret)),
                )
                conn.commit()
                return f"admin {address} created"
            if _verifies(hasher, row[1], secret) and not hasher.check_needs_rehash(row[1]):
                conn.rollback()
                return f"admin {address} already there; nothing changed"
            cursor.execute(
                "UPDATE users SET password_hash = %s, is_admin = TRUE WHERE id = %s", (hasher.hash(secret), row[0])
            )
            conn.commit()
            return f"admin {address}: password changed"
    finally:
        conn.close()


def _verifies(hasher: PasswordHasher, stored: str, secret: str) -> bool:
    try:
        return hasher.verify(stored, secret)
    except (VerificationError, InvalidHashError):
        return False


def main(argv: list[str]) -> int:
    secret = password(os.environ)
    if secret is None:
        print("seed-admin: skipped: no ADMIN_PASSWORD or ADMIN_PASSWORD_FILE is set (no default password is ever used)")
        return 0
    print(f"seed-admin: {seed(email(argv, os.environ), secret)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
