"""One bounded MySQL probe: connect, log in, SELECT 1, and a classified result.

Every socket operation is bounded (connect, read, write), so a frozen server
(SIGSTOP, a black-holed network) turns into a `timeout` instead of a hang.
"""

from __future__ import annotations

import errno
import functools
import importlib
import socket
import ssl
import sys
from dataclasses import dataclass
from typing import Any

# PyMySQL imports `cryptography` up front (8 MB resident for the launcher's whole life, 60 ms)
# for an RSA exchange that only sha256_password and caching_sha2_password logins without TLS
# need. Import PyMySQL without it; the first login that needs RSA loads it (see below).
if "pymysql" not in sys.modules and "cryptography" not in sys.modules:
    sys.modules["cryptography"] = None  # type: ignore[assignment]  # makes the import fail
    try:
        import pymysql._auth
    finally:
        del sys.modules["cryptography"]
import pymysql  # noqa: E402
import pymysql.connections  # noqa: E402
from pymysql import _auth  # noqa: E402

from launcher.config import DatabaseConfig, SslMode  # noqa: E402

# Class of failure -> what the user can do about it.
HINTS = {
    "refused": "nothing listens there yet: is MySQL running, and are MYSQL_HOST/MYSQL_PORT right?",
    "timeout": "no answer in time: the server is frozen, overloaded or the network drops packets",
    "dns": "the host name does not resolve: check MYSQL_HOST",
    "network": "the network path failed: check MYSQL_HOST/MYSQL_PORT (or database.socket) and firewalls",
    "lost": "the server closed the connection: it may be starting or shutting down",
    "access_denied": "the server refused the login: check MYSQL_USER and MYSQL_PASSWORD",
    "unknown_database": "the database does not exist: create it or fix MYSQL_DATABASE",
    "too_many_connections": "the server is at max_connections: wait, or raise the limit",
    "tls": "the TLS handshake or settings failed: check database.ssl_mode, ssl_ca, ssl_cert and ssl_key",
    "out_of_fds": "the launcher has no free file descriptor for the probe: raise its limit (ulimit -n, "
    "docker run --ulimit nofile=...) or find what holds its descriptors",
    "protocol": "the answer is not MySQL's protocol: do MYSQL_HOST/MYSQL_PORT name the MySQL server?",
    "unsupported_auth": "the user's login method needs a package the launcher lacks: install it, "
    "or give MYSQL_USER mysql_native_password",
    "error": "unexpected answer from the server",
}

_BY_MYSQL_CODE = {
    1040: "too_many_connections",
    1044: "access_denied",
    1045: "access_denied",
    1130: "access_denied",
    1049: "unknown_database",
    2026: "tls",
}


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    reason: str = ""
    detail: str = ""  # the server's message and, after it, the hint for the fix
    max_connections: int = 0  # the server's limit, read in the same query (0: not known)


class _Connection(pymysql.connections.Connection):
    """PyMySQL's default is preferred TLS without verification (as libmysqlclient's PREFERRED),
    yet it builds a new SSL context on every connect and loads the CA store into it, which it
    never uses: 46 ms of CPU (5 % of a core at one probe a second) and 1.7 MB. One bare
    context, built once, encrypts the same way."""

    _preferred_tls: ssl.SSLContext | None = None

    def _create_ssl_ctx(self, sslp: Any) -> ssl.SSLContext:
        if sslp != {}:
            context: ssl.SSLContext = super()._create_ssl_ctx(sslp)  # type: ignore[misc]  # private: not in the stubs
            return context
        if _Connection._preferred_tls is None:
            _Connection._preferred_tls = _bare_context()
        return _Connection._preferred_tls


def _bare_context() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


@functools.lru_cache(maxsize=4)
def tls_context(mode: SslMode, ca: str, cert: str, key: str) -> ssl.SSLContext:
    """MySQL's --ssl-mode above `preferred`, as one context per setting, built once: `required`
    encrypts without checking the server, `verify_ca` checks its certificate against `ca`,
    `verify_identity` its name too. A client certificate goes with any of them."""
    ctx = _bare_context()
    if mode in (SslMode.VERIFY_CA, SslMode.VERIFY_IDENTITY):
        ctx.load_verify_locations(cafile=ca)
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.check_hostname = mode is SslMode.VERIFY_IDENTITY
    if cert:
        ctx.load_cert_chain(cert, keyfile=key or None)
    return ctx


def connect_arguments(db: DatabaseConfig, timeout: float) -> dict[str, Any]:
    """PyMySQL's arguments for the configured database, TLS mode and socket included."""
    args: dict[str, Any] = dict(
        host=db.host,
        port=db.port,
        user=db.user,
        password=db.password.reveal(),
        database=db.name,
        connect_timeout=timeout,
        read_timeout=timeout,
        write_timeout=timeout,
        unix_socket=db.socket or None,
    )
    if db.ssl_mode is SslMode.DISABLED:
        args["ssl_disabled"] = True
    elif db.ssl_mode is not SslMode.PREFERRED:
        args["ssl"] = tls_context(db.ssl_mode, db.ssl_ca, db.ssl_cert, db.ssl_key)
    return args


def _rsa_on_first_use(password: bytes, salt: bytes, public_key: bytes) -> bytes:
    """Re-run PyMySQL's auth module, this time with `cryptography`, and encrypt with it."""
    importlib.reload(_auth)
    return _auth.sha2_rsa_encrypt(password, salt, public_key)


if not _auth._have_cryptography:  # type: ignore[attr-defined]  # private: not in PyMySQL's stubs
    _auth.sha2_rsa_encrypt = _rsa_on_first_use


def probe(db: DatabaseConfig, timeout: float) -> ProbeResult:
    """Never raises: whatever goes wrong is a failed, classified probe, for the watcher
    thread that calls it must outlive every answer a server or a stranger can give."""
    try:
        return _login_and_select(db, timeout)
    except pymysql.MySQLError as err:
        return _failed(err)
    except ssl.SSLError as err:  # a CA, certificate or key file that cannot be used
        return _result("tls", f"{type(err).__name__}: {err}")
    except OSError as err:
        return _result("tls", f"{err.strerror or err}: {err.filename or ''}")
    except RuntimeError as err:  # PyMySQL's word for a login method whose package is missing
        return _result("unsupported_auth", str(err))
    except Exception as err:  # a garbled greeting breaks PyMySQL's parser: not a MySQL server
        return _result("protocol", f"{type(err).__name__}: {err}")


def _login_and_select(db: DatabaseConfig, timeout: float) -> ProbeResult:
    conn = _Connection(**connect_arguments(db, timeout))
    try:
        with conn.cursor() as cursor:
            cursor.execute("SELECT 1, @@max_connections")
            row = cursor.fetchone()
        return ProbeResult(ok=True, max_connections=int(row[1]) if row and row[1] else 0)
    finally:
        conn.close()


def classify(err: pymysql.MySQLError) -> str:
    original = getattr(err, "original_exception", None)
    if isinstance(original, ssl.SSLError):
        return "tls"
    if isinstance(original, ConnectionRefusedError):
        return "refused"
    if isinstance(original, (TimeoutError, socket.timeout)):
        return "timeout"
    if isinstance(original, socket.gaierror):
        return "dns"
    if isinstance(original, FileNotFoundError):
        return "refused"  # a unix socket that is not there: nothing listens
    if isinstance(original, OSError):
        return "out_of_fds" if original.errno in (errno.EMFILE, errno.ENFILE) else "network"
    code = err.args[0] if err.args and isinstance(err.args[0], int) else 0
    if code == 2013:
        return "timeout" if "timed out" in str(err) else "lost"
    return _BY_MYSQL_CODE.get(code, "error")


def _failed(err: pymysql.MySQLError) -> ProbeResult:
    return _result(classify(err), err.args[1] if len(err.args) > 1 else str(err))


def _result(reason: str, message: str) -> ProbeResult:
    return ProbeResult(ok=False, reason=reason, detail=f"{message} ({HINTS[reason]})")
