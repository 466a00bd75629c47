"""Each probe failure is classified from what a real MariaDB does, and bounded in time."""

from __future__ import annotations

import datetime
import importlib.util
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from launcher.config import DatabaseConfig, Secret
from launcher.supervisor.dbprobe import probe
from localdb.server import MariaDB, free_port


def target(db: MariaDB, **kw: Any) -> DatabaseConfig:
    base = DatabaseConfig(host="127.0.0.1", port=db.port, user=db.user, password=Secret(db.password), name=db.database)
    return replace(base, **kw)


def test_probe_succeeds_against_a_live_server(mariadb: MariaDB) -> None:
    assert probe(target(mariadb), 2.0).ok


def test_nothing_listening_is_refused(mariadb: MariaDB) -> None:
    result = probe(target(mariadb, port=free_port()), 2.0)
    assert (result.ok, result.reason) == (False, "refused")
    assert "MYSQL_HOST/MYSQL_PORT" in result.detail


def test_wrong_password_is_access_denied_and_not_echoed(mariadb: MariaDB) -> None:
    result = probe(target(mariadb, password=Secret("wrong-pw-123")), 2.0)
    assert result.reason == "access_denied"
    assert "wrong-pw-123" not in result.detail


def test_missing_database_is_unknown_database(mariadb: MariaDB) -> None:
    assert probe(target(mariadb, name="nope"), 2.0).reason in ("unknown_database", "access_denied")


def test_unresolvable_host_is_dns(mariadb: MariaDB) -> None:
    assert probe(target(mariadb, host="no-such-host.invalid"), 2.0).reason == "dns"


def test_frozen_server_is_a_timeout_bounded_by_the_probe_timeout(mariadb: MariaDB) -> None:
    mariadb.pause()
    started = time.monotonic()
    result = probe(target(mariadb), 0.5)
    took = time.monotonic() - started
    mariadb.resume()
    assert result.reason == "timeout"
    assert took < 2.0


def test_login_method_the_client_cannot_do_is_named_not_a_crash(mariadb: MariaDB) -> None:
    """MariaDB's ed25519 logins need PyNaCl, which we do not install: the probe must say so."""
    if importlib.util.find_spec("nacl") is not None:
        pytest.skip("PyNaCl is installed here, so ed25519 logins work")
    if not mariadb.execute("SELECT 1 FROM information_schema.plugins WHERE plugin_name = 'ed25519'"):
        mariadb.execute("INSTALL SONAME 'auth_ed25519'")
    mariadb.execute("CREATE USER IF NOT EXISTS 'ed'@'%' IDENTIFIED VIA ed25519 USING PASSWORD('ed-pw-123')")
    result = probe(target(mariadb, user="ed", password=Secret("ed-pw-123")), 2.0)
    assert (result.ok, result.reason) == (False, "unsupported_auth")
    assert "install it" in result.detail and "ed-pw-123" not in result.detail


def test_a_server_that_is_not_mysql_is_a_protocol_failure_not_a_crash() -> None:
    """Another service on the port may greet with bytes PyMySQL cannot parse."""
    with socket.create_server(("127.0.0.1", 0)) as server:

        def greet_with_garbage() -> None:
            conn, _ = server.accept()
            with conn:
                conn.sendall(b"\x05\x00\x00\x00\x0a\x01\x02\x03\x04")
                conn.recv(1)

        threading.Thread(target=greet_with_garbage, daemon=True).start()
        result = probe(DatabaseConfig(host="127.0.0.1", port=server.getsockname()[1]), 2.0)
    assert (result.ok, result.reason) == (False, "protocol")
    assert "MYSQL_PORT" in result.detail


def self_signed(directory: Path) -> tuple[str, ...]:
    """A key and certificate for a TLS-enabled MariaDB, as MySQL 8 has by default."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localdb")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    (directory / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
        )
    )
    (directory / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return (f"--ssl-key={directory / 'key.pem'}", f"--ssl-cert={directory / 'cert.pem'}")


@pytest.fixture(scope="module")
def tls_mariadb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MariaDB]:
    certs = tmp_path_factory.mktemp("certs")
    server = MariaDB(tmp_path_factory.mktemp("tls-mariadb"), options=self_signed(certs))
    server.start()
    yield server
    server.stop()


def test_probe_logs_in_over_tls_when_the_server_offers_it(tls_mariadb: MariaDB) -> None:
    def accepted() -> int:
        return int(dict(tls_mariadb.execute("SHOW GLOBAL STATUS LIKE 'Ssl_accepts'"))["Ssl_accepts"])

    before = accepted()
    assert probe(target(tls_mariadb), 2.0).ok
    assert probe(target(tls_mariadb), 2.0).ok
    assert accepted() == before + 3  # the two probes, and the connection that asks
