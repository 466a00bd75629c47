"""Where a running launcher says what it bound, for `launcher healthcheck`.

The health check is a process of its own (Docker's HEALTHCHECK runs it in the container):
with `port: 0`, or a host that is not the loopback, the config alone does not say where to
ask. The launcher writes `<pid>.json` into a directory of its user's, mode 0700, and removes
it at exit. LAUNCHER_RUNTIME_DIR moves it; the default is under /tmp, which a read-only root
filesystem mounts as a tmpfs.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass


@dataclass(frozen=True)
class Published:
    pid: int
    host: str
    port: int
    tls: bool = False


def directory() -> str:
    """Not `tempfile.gettempdir()`: that imports shutil, bz2 and lzma into the resident process."""
    tmp = os.environ.get("TMPDIR") or "/tmp"
    return os.environ.get("LAUNCHER_RUNTIME_DIR") or os.path.join(tmp, f"launcher-{os.getuid()}")


def _own_directory(path: str) -> bool:
    """Create it 0700, or accept it only when it is ours and nobody else may write into it."""
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError:
        return False
    info = os.lstat(path)
    return stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid() and not info.st_mode & 0o022


def publish(host: str, port: int, tls: bool) -> str | None:
    """The file's path, or None when there is nowhere safe to write it (health checks then
    use the config's address)."""
    folder = directory()
    if not _own_directory(folder):
        return None
    path = os.path.join(folder, f"{os.getpid()}.json")
    try:
        with open(path + ".new", "w", encoding="ascii") as file:
            json.dump({"pid": os.getpid(), "host": host, "port": port, "tls": tls}, file)
        os.replace(path + ".new", path)
    except OSError:
        return None
    return path


def withdraw(path: str | None) -> None:
    if path is not None:
        try:
            os.unlink(path)
        except OSError:
            pass


def live() -> list[Published]:
    """Every launcher of this user's that published where it listens and still runs."""
    folder = directory()
    try:
        names = sorted(name for name in os.listdir(folder) if name.endswith(".json"))
    except OSError:
        return []
    return [p for p in (_read(os.path.join(folder, name)) for name in names) if p is not None and _alive(p.pid)]


def _read(path: str) -> Published | None:
    try:
        with open(path, encoding="ascii") as file:
            data = json.load(file)
        return Published(int(data["pid"]), str(data["host"]), int(data["port"]), bool(data.get("tls")))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
