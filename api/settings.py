"""Connection settings from the environment (the launcher passes the resolved MYSQL_* values)."""
from __future__ import annotations

import os
from dataclasses import dataclass

from sqlalchemy import URL


@dataclass(frozen=True)
class Settings:
    host: str
    port: int
    user: str
    password: str
    database: str
    timeout: float  # every DB call is bounded by this (connect, read, write, pool wait)
    pool_size: int = 5  # connections each worker keeps (SQLAlchemy's default)
    max_overflow: int = 10  # and may open beyond them under load

    @classmethod
    def from_env(cls) -> "Settings":
        env = os.environ
        return cls(
            host=env.get("MYSQL_HOST", "127.0.0.1"),
            port=int(env.get("MYSQL_PORT", "3306")),
            user=env.get("MYSQL_USER", "app"),
            password=env.get("MYSQL_PASSWORD", ""),
            database=env.get("MYSQL_DATABASE", "app"),
            timeout=float(env.get("API_DB_TIMEOUT", "1")),
            pool_size=int(env.get("API_DB_POOL_SIZE", "5")),
            max_overflow=int(env.get("API_DB_MAX_OVERFLOW", "10")),
        )

    @property
    def url(self) -> URL:
        return URL.create("mysql+pymysql", username=self.user, password=self.password,
                          host=self.host, port=self.port, database=self.database)
