"""Fixtures for the tests against a real Docker engine: the engine that answers (DOCKER_HOST
or the default socket; `./dev test` starts a private one as root when none does), the images,
and a MariaDB container on a free port of the host's network. Every container the tests start
carries a label, and is removed with its volumes at the end of the run."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pymysql
import pytest

from localdb.server import free_port
from tests.docker import images
from tests.docker.images import LABEL, Unavailable

PASSWORD = "app-in-docker"
HOW_TO_GET_ONE = "run ./dev test as root (it starts a private dockerd), or point DOCKER_HOST at an engine"


@dataclass(frozen=True)
class Images:
    python: str
    mariadb: str
    app: str


@dataclass
class Mysql:
    container: Any
    port: int

    @property
    def env(self) -> dict[str, str]:
        return {
            "MYSQL_HOST": "127.0.0.1",
            "MYSQL_PORT": str(self.port),
            "MYSQL_DATABASE": "app",
            "MYSQL_USER": "app",
            "MYSQL_PASSWORD": PASSWORD,
        }

    def answers(self) -> bool:
        try:
            pymysql.connect(
                host="127.0.0.1", port=self.port, user="app", password=PASSWORD, database="app", connect_timeout=1
            ).close()
            return True
        except pymysql.MySQLError:
            return False

    def wait(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.answers():
            if time.monotonic() > deadline:
                raise AssertionError(f"MariaDB in the container did not answer:\n{self.container.logs()[-2000:]}")
            time.sleep(0.2)


@pytest.fixture(scope="session")
def engine() -> Iterator[Any]:
    try:
        import docker

        client = docker.from_env(timeout=600)
        client.ping()
    except Exception as err:  # the SDK raises several kinds when no engine answers
        pytest.skip(f"no Docker engine answers ({type(err).__name__}); {HOW_TO_GET_ONE}")
    yield client
    for container in client.containers.list(all=True, filters={"label": LABEL}):
        container.remove(force=True, v=True)


@pytest.fixture(scope="session")
def built(engine: Any) -> Images:
    try:
        python = images.python_base(engine)
        return Images(python, images.mariadb(engine, python), images.app(engine, python))
    except Unavailable as why:
        pytest.skip(str(why))


def run(engine: Any, image: str, **kw: Any) -> Any:
    """A container of the tests': on the host's network, labelled for the clean-up."""
    return engine.containers.run(image, detach=True, network_mode="host", labels={LABEL: "1"}, **kw)


@pytest.fixture
def mysql(engine: Any, built: Images) -> Iterator[Mysql]:
    port = free_port()
    container = run(
        engine,
        built.mariadb,
        command=[f"--port={port}", "--bind-address=127.0.0.1", "--max-connections=500", "--skip-name-resolve"],
        environment={
            "MYSQL_DATABASE": "app",
            "MYSQL_USER": "app",
            "MYSQL_PASSWORD": PASSWORD,
            "MYSQL_ROOT_PASSWORD": "root-in-docker",
        },
    )
    server = Mysql(container, port)
    server.wait()
    yield server
    container.remove(force=True, v=True)
