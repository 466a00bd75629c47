"""Knocking on the DB's port: a login is skipped only when the kernel says nothing listens."""

from __future__ import annotations

import socket

from launcher.config import DatabaseConfig, load
from launcher.supervisor.knock import Port, knocker
from localdb.server import free_port


def database(host: str, port: int) -> DatabaseConfig:
    return load(None, {"MYSQL_HOST": host, "MYSQL_PORT": str(port)}).database


def test_a_port_nothing_listens_on_is_refused_and_a_listening_one_open() -> None:
    port = free_port()
    knock = knocker(database("127.0.0.1", port), 0.02)
    assert knock is not None and knock() is Port.REFUSED
    with socket.create_server(("127.0.0.1", port)):
        assert knock() is Port.OPEN


def test_a_port_that_does_not_answer_in_time_is_unknown_so_the_login_decides() -> None:
    with socket.create_server(("127.0.0.1", 0), backlog=0) as server:  # a full queue drops SYNs
        port = server.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)):
            knock = knocker(database("127.0.0.1", port), 0.02)
            assert knock is not None and knock() is Port.UNKNOWN


def test_a_name_that_does_not_resolve_is_not_knocked_on() -> None:
    assert knocker(database("no-such-host.invalid", 3306), 0.02) is None
