"""One interface for the MySQL faults, two backends: the suite's own MariaDB process
(always), and a MariaDB container through the docker SDK (`-m docker`)."""

from __future__ import annotations

import time
from typing import Any, Protocol

from localdb.server import MariaDB
from tests.chaos.proxy import BlackholeProxy


class DbFaults(Protocol):
    env: dict[str, str]  # MYSQL_* for the launcher: through the proxy, so the path can be cut

    def stop(self) -> None: ...
    def start(self) -> None: ...
    def kill(self) -> None: ...
    def restart(self) -> None: ...
    def freeze(self) -> None: ...
    def thaw(self) -> None: ...
    def blackhole(self) -> None: ...
    def restore(self) -> None: ...
    def note_ids(self) -> set[int]: ...


class LocalFaults:
    def __init__(self, db: MariaDB) -> None:
        self.db = db
        self.proxy = BlackholeProxy(("127.0.0.1", db.port))
        self.env = {**db.env, "MYSQL_PORT": str(self.proxy.port)}

    def stop(self) -> None:
        self.db.stop()

    def start(self) -> None:
        self.db.start()

    def kill(self) -> None:
        self.db.kill()

    def restart(self) -> None:
        self.db.stop()
        self.db.start()

    def freeze(self) -> None:
        self.db.pause()

    def thaw(self) -> None:
        self.db.resume()

    def blackhole(self) -> None:
        self.proxy.blackhole()

    def restore(self) -> None:
        self.proxy.restore()

    def note_ids(self) -> set[int]:
        return {row[0] for row in self.db.execute(f"SELECT id FROM `{self.db.database}`.notes")}

    def close(self) -> None:
        self.proxy.restore()
        self.db.resume()
        self.proxy.close()


class DockerFaults:
    """A MariaDB container, driven through the docker SDK."""

    def __init__(self, container: Any, env: dict[str, str], upstream: tuple[str, int]) -> None:
        self.container = container
        self.proxy = BlackholeProxy(upstream)
        self.env = {**env, "MYSQL_HOST": "127.0.0.1", "MYSQL_PORT": str(self.proxy.port)}

    def stop(self) -> None:
        self.container.stop(timeout=30)

    def restart(self) -> None:
        self.container.restart(timeout=30)
        self.wait()

    def wait(self, timeout: float = 60.0) -> None:
        """Until the server in the container takes logins again, as the local backend's start() does."""
        deadline = time.monotonic() + timeout
        while (
            self.container.exec_run(
                ["mariadb", "-e", "SELECT 1", "-u", self.env["MYSQL_USER"], f"-p{self.env['MYSQL_PASSWORD']}"]
            ).exit_code
            != 0
        ):
            if time.monotonic() > deadline:
                raise AssertionError("the MariaDB container did not come back")
            time.sleep(0.1)

    def start(self) -> None:
        self.container.start()
        self.wait()

    def kill(self) -> None:
        self.container.kill()

    def freeze(self) -> None:
        self.container.pause()

    def thaw(self) -> None:
        self.container.unpause()

    def blackhole(self) -> None:
        self.proxy.blackhole()

    def restore(self) -> None:
        self.proxy.restore()

    def note_ids(self) -> set[int]:
        db, user, pw = self.env["MYSQL_DATABASE"], self.env["MYSQL_USER"], self.env["MYSQL_PASSWORD"]
        result = self.container.exec_run(["mariadb", "-N", "-u", user, f"-p{pw}", db, "-e", "SELECT id FROM notes"])
        return {int(line) for line in result.output.decode().split()}

    def close(self) -> None:
        self.proxy.restore()
        self.proxy.close()
