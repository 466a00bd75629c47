"""The DB settings a deployment needs (issue "Never worse", 13): MySQL's --ssl-mode semantics
with a CA and a client certificate, a unix socket, for the launcher's probe and the app alike."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from launcher.config import DatabaseConfig, Secret, SslMode
from launcher.supervisor.dbprobe import probe
from localdb.server import MariaDB
from tests.certs import Pair, authority, signed
from tests.support import Launcher

Start = Callable[..., Launcher]


@dataclass(frozen=True)
class TlsDb:
    server: MariaDB
    ca: Pair
    other_ca: Pair
    client: Pair


@pytest.fixture(scope="module")
def tls_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsDb]:
    certs = tmp_path_factory.mktemp("certs")
    ca, ca_cert, ca_key = authority(certs)
    other, _, _ = authority(certs, "other-ca")
    server_pair = signed(certs, "db", ca_cert, ca_key, hosts=("db.internal",))
    client = signed(certs, "client", ca_cert, ca_key)
    server = MariaDB(
        tmp_path_factory.mktemp("tls-db"),
        options=(f"--ssl-ca={ca.cert}", f"--ssl-cert={server_pair.cert}", f"--ssl-key={server_pair.key}"),
    )
    server.start()
    server.execute("CREATE USER 'x509user'@'%' IDENTIFIED BY 'pw' REQUIRE X509")
    server.execute(f"GRANT ALL ON `{server.database}`.* TO 'x509user'@'%'")
    yield TlsDb(server, ca, other, client)
    server.stop()


def x509_user(db: TlsDb, **kw: object) -> DatabaseConfig:
    base = DatabaseConfig(
        host="127.0.0.1", port=db.server.port, user="x509user", password=Secret("pw"), name=db.server.database
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def test_a_user_that_requires_a_client_certificate_can_log_in_with_one(tls_db: TlsDb) -> None:
    without = probe(x509_user(tls_db), 2.0)
    assert (without.ok, without.reason) == (False, "access_denied")
    cert = x509_user(
        tls_db, ssl_mode=SslMode.REQUIRED, ssl_cert=str(tls_db.client.cert), ssl_key=str(tls_db.client.key)
    )
    assert probe(cert, 2.0).ok


def test_verify_ca_checks_the_servers_certificate(tls_db: TlsDb) -> None:
    client = {"ssl_cert": str(tls_db.client.cert), "ssl_key": str(tls_db.client.key)}
    assert probe(x509_user(tls_db, ssl_mode=SslMode.VERIFY_CA, ssl_ca=str(tls_db.ca.cert), **client), 2.0).ok
    wrong = probe(x509_user(tls_db, ssl_mode=SslMode.VERIFY_CA, ssl_ca=str(tls_db.other_ca.cert), **client), 2.0)
    assert (wrong.ok, wrong.reason) == (False, "tls")
    assert "certificate verify failed" in wrong.detail


def test_verify_identity_checks_the_servers_name_too(tls_db: TlsDb) -> None:
    settings = x509_user(
        tls_db,
        ssl_mode=SslMode.VERIFY_IDENTITY,
        ssl_ca=str(tls_db.ca.cert),
        ssl_cert=str(tls_db.client.cert),
        ssl_key=str(tls_db.client.key),
    )
    wrong_name = probe(settings, 2.0)
    assert (wrong_name.ok, wrong_name.reason) == (False, "tls"), "the certificate names db.internal, not 127.0.0.1"
    assert "127.0.0.1" in wrong_name.detail


def test_required_tls_against_a_server_without_it_is_a_tls_failure(mariadb: MariaDB) -> None:
    plain = DatabaseConfig(
        host="127.0.0.1",
        port=mariadb.port,
        user=mariadb.user,
        password=Secret(mariadb.password),
        name=mariadb.database,
        ssl_mode=SslMode.REQUIRED,
    )
    result = probe(plain, 2.0)
    assert (result.ok, result.reason) == (False, "tls")


def test_disabled_tls_logs_in_in_the_clear(tls_db: TlsDb) -> None:
    def accepted() -> int:
        return int(dict(tls_db.server.execute("SHOW GLOBAL STATUS LIKE 'Ssl_accepts'"))["Ssl_accepts"])

    tls_db.server.execute("CREATE USER IF NOT EXISTS 'plain'@'%' IDENTIFIED BY 'pw'")
    tls_db.server.execute(f"GRANT ALL ON `{tls_db.server.database}`.* TO 'plain'@'%'")
    before = accepted()
    assert probe(x509_user(tls_db, user="plain", ssl_mode=SslMode.DISABLED), 2.0).ok
    assert accepted() == before + 1, "only the connection that asks used TLS"


def test_the_app_connects_with_the_same_tls_settings_as_the_probe(launcher: Start, tls_db: TlsDb) -> None:
    db = tls_db.server
    service = launcher(
        env={
            "MYSQL_PORT": str(db.port),
            "MYSQL_USER": "x509user",
            "MYSQL_PASSWORD": "pw",
            "MYSQL_DATABASE": db.database,
            "MYSQL_SSL_MODE": "verify_ca",
            "MYSQL_SSL_CA": str(tls_db.ca.cert),
            "MYSQL_SSL_CERT": str(tls_db.client.cert),
            "MYSQL_SSL_KEY": str(tls_db.client.key),
        }
    )
    service.wait_status(200)
    assert service.get("/api/health").json() == {"status": "ok", "db": "ok"}


def test_a_unix_socket_serves_the_probe_and_the_app(launcher: Start, mariadb: MariaDB, tmp_path: Path) -> None:
    assert probe(
        DatabaseConfig(
            socket=str(mariadb.socket_path), user=mariadb.user, password=Secret(mariadb.password), name=mariadb.database
        ),
        2.0,
    ).ok
    service = launcher(env={"MYSQL_UNIX_SOCKET": str(mariadb.socket_path), "MYSQL_PORT": "1"})
    service.wait_status(200)
    assert service.get("/api/health").json() == {"status": "ok", "db": "ok"}


def test_a_unix_socket_that_is_not_there_is_refused() -> None:
    result = probe(DatabaseConfig(socket="/nonexistent/mysqld.sock"), 1.0)
    assert (result.ok, result.reason) == (False, "refused")
