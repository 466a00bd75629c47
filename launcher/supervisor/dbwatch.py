"""The DB probe thread: it feeds the machine a probe result at the pace the DB's state calls for.

It blocks (PyMySQL, bounded by the probe timeout), so it runs in a thread of its own, never
delays the loop, and a thread still inside a probe never delays the launcher's exit.

- While the DB answers: a probe every `probe.interval`; a first failure is confirmed at once,
  so a lost DB is declared within about two timeouts.
- While it is gone (refused, timeout, ...): every `retry_interval`, sooner while clients wait
  on the launcher's 503 (HURRY_GAP); while nothing listens on the port, a bare TCP knock every
  KNOCK_GAP instead of a login (knock.py).
- While it answers but refuses (access_denied, too_many_connections, ...): with a backoff from
  `retry_interval` doubling up to BUSY_MAX, so a saturated server is not hammered with logins;
  after `access_denied` the password file is read again before the next probe (a rotated secret).
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable

from launcher.config import ConfigError, DatabaseConfig, Secret
from launcher.config import read_password_file as read_secret
from launcher.supervisor.dbprobe import ProbeResult, probe
from launcher.supervisor.events import GONE
from launcher.supervisor.knock import Knock, Port, knocker
from launcher.supervisor.threads import Guarded

# While the DB does not answer and clients are waiting on the launcher's 503, it is probed
# this often, not every retry_interval: their wait ends as soon as it answers.
HURRY_GAP = 0.025
# While nothing listens on the DB's port, it is knocked on this often (knock.py).
KNOCK_GAP = 0.02
# A server that answers but refuses is probed at most this far apart.
BUSY_MAX = 5.0


@dataclasses.dataclass(frozen=True)
class ProbeSettings:
    database: DatabaseConfig
    timeout: float
    interval: float
    retry_interval: float


class DbWatcher(Guarded):
    def __init__(
        self,
        settings: Callable[[], ProbeSettings],
        deliver: Callable[[ProbeResult], None],
        log: Callable[[str], None],
        check: Callable[[DatabaseConfig, float], ProbeResult] = probe,
        password_file: str = "",
    ) -> None:
        super().__init__("db-probe", log)
        self._settings = settings
        self._deliver = deliver
        self._check = check
        self._password_file = password_file
        self._password: Secret | None = None  # read again after access_denied, until the next config
        self._wake = threading.Event()
        self._result = ProbeResult(ok=False)
        self._knock: Knock | None = None  # while the port refused the last probe
        self._busy = 0  # refusals in a row from a server that answers

    def stop(self) -> None:
        super().stop()
        self._wake.set()

    def hurry(self) -> None:
        """A client waits for the DB: probe again soon if it did not answer (any thread)."""
        self._wake.set()

    def once(self) -> None:
        settings = self._settings()
        started = time.monotonic()
        previous = self._result
        if self._knock is None or self._knock() is not Port.REFUSED:
            self._result = self._check(self._database(settings.database), settings.timeout)
        # else the port still refuses, and a login would fail the same way: the same result
        if self.halt.is_set():
            return
        self._deliver(self._result)
        self._knock = None
        if previous.ok and not self._result.ok and self._result.reason in GONE:
            return  # confirmed at once, not an interval later
        self._busy = self._busy + 1 if not self._result.ok and self._result.reason not in GONE else 0
        if self._result.reason == "access_denied":
            self._reread_password()
        if self._result.reason == "refused":
            self._knock = knocker(settings.database, KNOCK_GAP)
        if self._pause(started, settings):
            self._knock = None

    def _database(self, database: DatabaseConfig) -> DatabaseConfig:
        return database if self._password is None else dataclasses.replace(database, password=self._password)

    def _reread_password(self) -> None:
        if not self._password_file:
            return
        try:
            self._password = Secret(read_secret(self._password_file))
        except ConfigError as err:
            self._log(str(err))

    def forget_password(self) -> None:
        """A new config was loaded: its password counts again (any thread)."""
        self._password = None

    def _interval(self, settings: ProbeSettings) -> float:
        if self._result.ok:
            return settings.interval
        if self._busy:
            return min(max(BUSY_MAX, settings.retry_interval), settings.retry_interval * 2.0 ** min(self._busy, 16))
        return settings.retry_interval

    def _pause(self, started: float, settings: ProbeSettings) -> bool:
        """Until the next probe is due; a hurry brings it forward while the DB is gone (a DB
        that answers, or refuses, is not probed faster however many clients come). True when
        a knock found the port open: probe now."""
        due = started + self._interval(settings)
        hurried = not self._result.ok and not self._busy
        while not self.halt.is_set():
            left = due - time.monotonic()
            if left <= 0:
                return False
            if self._wake.wait(min(left, KNOCK_GAP) if self._knock else left):
                self._wake.clear()
                if hurried:
                    due = min(due, started + HURRY_GAP)
            elif self._knock is not None and self._knock() is Port.OPEN:
                return True
        return False
