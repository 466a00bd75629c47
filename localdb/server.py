"""Start, stop, kill, freeze and resume a private MariaDB server on a fixed port.

Chaos tests need all of these on the same port and data dir, so the server is a
plain process we own rather than a system service.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pymysql

SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin", "/sbin"])
INSTALL_HINT = "install it with: apt-get install -y mariadb-server (Debian/Ubuntu)"


class LocalDbError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _binary(*names: str) -> str:
    for name in names:
        found = shutil.which(name, path=SEARCH_PATH)
        if found:
            return found
    raise LocalDbError(f"{names[0]} not found; {INSTALL_HINT}")


@dataclass
class MariaDB:
    datadir: Path
    port: int = field(default_factory=free_port)
    database: str = "app"
    user: str = "app"
    password: str = "app-local-dev"
    options: tuple[str, ...] = ()  # extra mariadbd options, e.g. TLS certificates
    process: subprocess.Popen[bytes] | None = None

    @property
    def socket_path(self) -> Path:
        return self.datadir / "mysqld.sock"

    @property
    def env(self) -> dict[str, str]:
        return {
            "MYSQL_HOST": "127.0.0.1",
            "MYSQL_PORT": str(self.port),
            "MYSQL_DATABASE": self.database,
            "MYSQL_USER": self.user,
            "MYSQL_PASSWORD": self.password,
        }

    @property
    def pid(self) -> int:
        if self.process is None:
            raise LocalDbError("the server is not running")
        return self.process.pid

    def _as_user(self) -> list[str]:
        return ["--user=root"] if os.geteuid() == 0 else []

    def initialize(self) -> None:
        if (self.datadir / "mysql").is_dir():
            return
        self.datadir.mkdir(parents=True, exist_ok=True)
        install = _binary("mariadb-install-db", "mysql_install_db")
        result = subprocess.run(
            [
                install,
                "--no-defaults",
                f"--datadir={self.datadir}",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                *self._as_user(),
            ],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise LocalDbError(f"mariadb-install-db failed: {result.stderr.strip()[-2000:]}")

    def start(self, timeout: float = 60.0) -> None:
        self.initialize()
        server = _binary("mariadbd", "mysqld")
        log = open(self.datadir / "server.log", "ab")
        self.process = subprocess.Popen(
            [
                server,
                "--no-defaults",
                f"--datadir={self.datadir}",
                f"--socket={self.socket_path}",
                f"--port={self.port}",
                "--bind-address=127.0.0.1",
                f"--pid-file={self.datadir / 'mysqld.pid'}",
                "--skip-name-resolve",
                "--skip-log-bin",
                "--innodb-buffer-pool-size=32M",
                "--innodb-log-file-size=16M",
                "--max-connections=500",
                *self.options,
                *self._as_user(),
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        log.close()
        try:
            self._wait_ready(timeout)
            self._provision()
        except BaseException:
            self.kill()  # a half-started server must not outlive the failed start
            raise

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise LocalDbError(f"mariadbd exited with {self.process.returncode}; see {self.datadir / 'server.log'}")
            try:
                self._root().close()
                return
            except pymysql.MySQLError:
                time.sleep(0.05)
        raise LocalDbError(f"mariadbd did not answer within {timeout:g}s; see {self.datadir / 'server.log'}")

    def _root(self) -> pymysql.connections.Connection:
        return pymysql.connect(
            unix_socket=str(self.socket_path), user="root", connect_timeout=2, read_timeout=10, autocommit=True
        )

    def _provision(self) -> None:
        conn = self._root()
        try:
            with conn.cursor() as cur:
                cur.execute(f"CREATE DATABASE IF NOT EXISTS `{self.database}`")
                cur.execute(f"CREATE USER IF NOT EXISTS '{self.user}'@'%%' IDENTIFIED BY %s", (self.password,))
                cur.execute(f"GRANT ALL ON `{self.database}`.* TO '{self.user}'@'%'")
        finally:
            conn.close()

    def execute(self, sql: str) -> list[tuple]:
        """Run one statement as root (tests use it to look behind the API)."""
        conn = self._root()
        try:
            with conn.cursor() as cur:
                cur.execute(sql)
                return list(cur.fetchall())
        finally:
            conn.close()

    def stop(self, timeout: float = 30.0) -> None:
        self._end(signal.SIGTERM, timeout)

    def kill(self) -> None:
        self._end(signal.SIGKILL, 10.0)

    def _end(self, sig: signal.Signals, timeout: float) -> None:
        if self.process is None:
            return
        self.resume()
        self.process.send_signal(sig)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def pause(self) -> None:
        os.kill(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGCONT)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None
