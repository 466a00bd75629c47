"""A real MariaDB server for the whole run, started by the suite on a free port."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from localdb.server import MariaDB
from tests.support import Launcher

pytest_plugins = ["tests.docker.fixtures"]  # the engine, the images and a MariaDB container


@pytest.fixture(scope="session")
def mariadb_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MariaDB]:
    server = MariaDB(tmp_path_factory.mktemp("mariadb"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def mariadb(mariadb_server: MariaDB) -> Iterator[MariaDB]:
    """The shared server, up and unfrozen at the start and at the end of every test."""
    if not mariadb_server.running:
        mariadb_server.start()
    yield mariadb_server
    mariadb_server.resume()
    if not mariadb_server.running:
        mariadb_server.start()


@pytest.fixture
def launcher(tmp_path: Path, mariadb: MariaDB) -> Iterator[Callable[..., Launcher]]:
    """Start launchers against the suite's MariaDB; each is stopped and checked for leftovers."""
    started: list[Launcher] = []

    def start(env: dict[str, str] | None = None, config: str | None = None, **kw: object) -> Launcher:
        """`config` is the text of a config file; without it the shipped config.yaml applies."""
        n = len(started)
        args = []
        if config is not None:
            path = tmp_path / f"config{n}.yaml"
            path.write_text(config)
            args = ["--config", str(path)]
        merged = {**mariadb.env, **(env or {})}
        item = Launcher(merged, tmp_path / f"launcher{n}.log", args, **kw)  # type: ignore[arg-type]
        started.append(item.start())
        return item

    yield start
    for item in started:
        item.stop()
