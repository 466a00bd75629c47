"""One interface for the MySQL faults, two backends: the suite's own MariaDB process
(always), and the `mysql` service of compose.yaml through the docker SDK (`-m docker`)."""

from __future__ import annotations

from typing import Protocol

from localdb.server import MariaDB
from tests.chaos.proxy import BlackholeProxy


class DbFaults(Protocol):
    env: dict[str, str]  # MYSQL_* for the launcher: through the proxy, so the path can be cut

    def stop(self) -> None: ...
    def start(self) -> None: ...
    def kill(self) -> None: ...
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
    """compose.yaml's mysql container, driven through the docker SDK."""

    def __init__(self, container: object, env: dict[str, str], upstream: tuple[str, int]) -> None:
        self.container = container
        self.proxy = BlackholeProxy(upstream)
        self.env = {**env, "MYSQL_HOST": "127.0.0.1", "MYSQL_PORT": str(self.proxy.port)}

    def stop(self) -> None:
        self.container.stop(timeout=30)  # type: ignore[attr-defined]

    def start(self) -> None:
        self.container.start()  # type: ignore[attr-defined]

    def kill(self) -> None:
        self.container.kill()  # type: ignore[attr-defined]

    def freeze(self) -> None:
        self.container.pause()  # type: ignore[attr-defined]

    def thaw(self) -> None:
        self.container.unpause()  # type: ignore[attr-defined]

    def blackhole(self) -> None:
        self.proxy.blackhole()

    def restore(self) -> None:
        self.proxy.restore()

    def note_ids(self) -> set[int]:
        db, user, pw = self.env["MYSQL_DATABASE"], self.env["MYSQL_USER"], self.env["MYSQL_PASSWORD"]
        result = self.container.exec_run(  # type: ignore[attr-defined]
            ["mysql", "-N", "-u", user, f"-p{pw}", db, "-e", "SELECT id FROM notes"]
        )
        return {int(line) for line in result.output.decode().split()}

    def close(self) -> None:
        self.proxy.restore()
        self.proxy.close()
