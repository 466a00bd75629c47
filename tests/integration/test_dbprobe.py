"""Each probe failure is classified from what a real MariaDB does, and bounded in time."""
from __future__ import annotations

import time

from pydantic import SecretStr

from launcher.config import DatabaseConfig
from launcher.dbprobe import probe
from localdb.server import MariaDB, free_port


def target(db: MariaDB, **kw: object) -> DatabaseConfig:
    base = DatabaseConfig(host="127.0.0.1", port=db.port, user=db.user, password=SecretStr(db.password),
                          name=db.database)
    return base.model_copy(update=kw)


def test_probe_succeeds_against_a_live_server(mariadb: MariaDB) -> None:
    assert probe(target(mariadb), 2.0).ok


def test_nothing_listening_is_refused(mariadb: MariaDB) -> None:
    result = probe(target(mariadb, port=free_port()), 2.0)
    assert (result.ok, result.reason) == (False, "refused")
    assert "MYSQL_HOST/MYSQL_PORT" in result.detail


def test_wrong_password_is_access_denied_and_not_echoed(mariadb: MariaDB) -> None:
    result = probe(target(mariadb, password=SecretStr("wrong-pw-123")), 2.0)
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
