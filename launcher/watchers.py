"""The periodic checks that feed the state machine: DB probes and child liveness.

DB probes run in a daemon thread: PyMySQL blocks, and a thread that is still inside
a bounded probe must never delay the launcher's exit. Liveness checks go to the
child's private socket, so the answer comes from that very child, never from a
sibling that shares the public socket during a swap.
"""
from __future__ import annotations

import asyncio
import threading
import time
from typing import Callable

from launcher.config import Config
from launcher.dbprobe import ProbeResult, probe


class DbWatcher:
    def __init__(self, cfg: Config, deliver: Callable[[ProbeResult], None]) -> None:
        self._cfg = cfg
        self._deliver = deliver
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="db-probe", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        cfg = self._cfg.probe
        previous_ok = False
        while not self._stop.is_set():
            started = time.monotonic()
            result = probe(self._cfg.database, cfg.timeout)
            if self._stop.is_set():
                return
            self._deliver(result)
            # A first failure after a success is confirmed at once, not a whole interval later:
            # detection of a lost DB then takes two probe timeouts, not two intervals. While the
            # DB does not answer, it is tried more often, so its return is noticed at once.
            confirm = previous_ok and not result.ok
            previous_ok = result.ok
            interval = cfg.interval if result.ok else cfg.retry_interval
            self._stop.wait(0.0 if confirm else max(0.0, started + interval - time.monotonic()))


async def check_liveness(address: str, path: str, timeout: float) -> tuple[bool, str]:
    """GET `path` over the child's private unix socket; ok only for a 200 in time."""
    writer = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_unix_connection(address)
            writer.write(f"GET {path} HTTP/1.1\r\nHost: launcher\r\nConnection: close\r\n\r\n".encode())
            status_line = await reader.readline()
    except TimeoutError:
        return False, f"no answer within {timeout:g}s"
    except OSError as err:
        return False, f"cannot connect ({err.strerror or err})"
    finally:
        if writer is not None:
            writer.close()
    parts = status_line.split()
    if len(parts) >= 2 and parts[1] == b"200":
        return True, ""
    return False, f"answered {status_line.decode(errors='replace').strip() or 'nothing'}"
