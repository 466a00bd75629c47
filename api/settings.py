"""Connection settings from the environment: the launcher passes the resolved MYSQL_* values,
TLS mode and socket included, so the app connects as the launcher's probe does."""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the migrate and seed steps read these settings without SQLAlchemy (~0.14 s to import)
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
    unix_socket: str = ""
    ssl_mode: str = "preferred"
    ssl_ca: str = ""
    ssl_cert: str = ""
    ssl_key: str = ""

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Settings:
        return cls(
            host=env.get("MYSQL_HOST", "127.0.0.1"),
            port=int(env.get("MYSQL_PORT", "3306")),
            user=env.get("MYSQL_USER", "app"),
            password=env.get("MYSQL_PASSWORD", ""),
            database=env.get("MYSQL_DATABASE", "app"),
            timeout=float(env.get("API_DB_TIMEOUT", "1")),
            pool_size=int(env.get("API_DB_POOL_SIZE", "5")),
            max_overflow=int(env.get("API_DB_MAX_OVERFLOW", "10")),
            unix_socket=env.get("MYSQL_UNIX_SOCKET", ""),
            ssl_mode=env.get("MYSQL_SSL_MODE", "preferred"),
            ssl_ca=env.get("MYSQL_SSL_CA", ""),
            ssl_cert=env.get("MYSQL_SSL_CERT", ""),
            ssl_key=env.get("MYSQL_SSL_KEY", ""),
        )

    @property
    def url(self) -> URL:
        from sqlalchemy import URL

        return URL.create(
            "mysql+pymysql",
            username=self.user,
            password=self.password,
            host=self.host,
            port=self.port,
            database=self.database,
        )

    def connect_args(self) -> dict[str, Any]:
        """PyMySQL's arguments beyond the URL: timeouts, the socket, MySQL's --ssl-mode."""
        t = self.timeout
        args: dict[str, Any] = {"connect_timeout": t, "read_timeout": t, "write_timeout": t}
        if self.unix_socket:
            args["unix_socket"] = self.unix_socket
        if self.ssl_mode == "disabled":
            args["ssl_disabled"] = True
        elif self.ssl_mode != "preferred":
            args["ssl"] = self.tls()
        return args

    def tls(self) -> ssl.SSLContext:
        verify = self.ssl_mode in ("verify_ca", "verify_identity")
        context = ssl.create_default_context(cafile=self.ssl_ca) if verify else ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = self.ssl_mode == "verify_identity"
        context.verify_mode = ssl.CERT_REQUIRED if verify else ssl.CERT_NONE
        if self.ssl_cert:
            context.load_cert_chain(self.ssl_cert, self.ssl_key or None)
        return context
