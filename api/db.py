"""The SQLAlchemy engine and per-request sessions, every call bounded by timeouts.

Without read/write timeouts a frozen MySQL (SIGSTOP, a black-holed network) makes a
request hang for as long as the freeze; with them it fails fast and becomes a 503.
"""

from __future__ import annotations

from collections.abc import Iterator

import pymysql
from fastapi import Request
from sqlalchemy import Engine, create_engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from api.settings import Settings

# MySQL client/server error codes -> what /api/health reports (no message, no secret).
ERROR_CLASSES = {
    2003: "unreachable",
    2005: "unreachable",
    2006: "lost",
    2013: "timeout",
    1040: "too_many_connections",
    1044: "access_denied",
    1045: "access_denied",
    1049: "unknown_database",
}


def make_engine(settings: Settings) -> Engine:
    return create_engine(
        settings.url,
        pool_pre_ping=True,
        pool_size=settings.pool_size,
        max_overflow=settings.max_overflow,
        pool_timeout=settings.timeout,
        pool_recycle=3600,
        connect_args=settings.connect_args(),
    )


def error_class(err: DBAPIError) -> str:
    orig = err.orig
    if isinstance(orig, pymysql.MySQLError) and orig.args and isinstance(orig.args[0], int):
        return ERROR_CLASSES.get(orig.args[0], "error")
    return "error"


def session(request: Request) -> Iterator[Session]:
    factory: sessionmaker[Session] = request.app.state.sessions
    with factory() as db:
        yield db
