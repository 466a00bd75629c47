"""python -m localdb start|stop --dir DIR: a private MariaDB for `./dev run`.

`start` prints shell `export` lines for the MYSQL_* variables, so a script can eval them;
it reuses a server that already runs from that directory.
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys
import time
from pathlib import Path

from localdb.server import LocalDbError, MariaDB, free_port


def _running_pid(datadir: Path) -> int | None:
    try:
        pid = int((datadir / "mysqld.pid").read_text().strip())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return None


def start(datadir: Path, port: int | None) -> MariaDB:
    port_file = datadir / "port"
    if _running_pid(datadir) and port_file.exists():
        return MariaDB(datadir, int(port_file.read_text()))
    chosen = port or (int(port_file.read_text()) if port_file.exists() else free_port())
    server = MariaDB(datadir, chosen)
    server.start()
    port_file.write_text(str(chosen))
    return server


def stop(datadir: Path, timeout: float = 30.0) -> None:
    pid = _running_pid(datadir)
    if pid is None:
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _running_pid(datadir) == pid and time.monotonic() < deadline:
        time.sleep(0.1)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m localdb")
    parser.add_argument("command", choices=["start", "stop"])
    parser.add_argument("--dir", type=Path, default=Path(".localdb"))
    parser.add_argument("--port", type=int, default=None)
    args = parser.parse_args(argv)
    datadir = args.dir.resolve()
    try:
        if args.command == "stop":
            stop(datadir)
            return 0
        server = start(datadir, args.port)
    except LocalDbError as err:
        print(f"localdb: {err}", file=sys.stderr)
        return 1
    for key, value in server.env.items():
        print(f"export {key}={shlex.quote(value)}")
    print(f"localdb: MariaDB on 127.0.0.1:{server.port}, data in {datadir}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
