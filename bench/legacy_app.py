"""The service's original start-up: wait_for_db() at import time, 10 tries 2 s apart, then raise."""

from __future__ import annotations

import os
import time

import pymysql


def wait_for_db(tries: int = 10, delay: float = 2.0) -> None:
    for attempt in range(1, tries + 1):
        try:
            pymysql.connect(
                host=os.environ["MYSQL_HOST"],
                port=int(os.environ["MYSQL_PORT"]),
                user=os.environ["MYSQL_USER"],
                password=os.environ["MYSQL_PASSWORD"],
                database=os.environ["MYSQL_DATABASE"],
                connect_timeout=2,
            ).close()
            return
        except pymysql.MySQLError:
            print(f"database not ready (try {attempt}/{tries})", flush=True)
            time.sleep(delay)
    raise RuntimeError("database never became ready")


wait_for_db()

from api.main import app  # noqa: E402  (after the wait, as the original did)

__all__ = ["app"]
