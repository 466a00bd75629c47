"""Is anything listening on the DB's port? A TCP connect, closed at once.

While MySQL is down and nothing listens, a knock costs a few syscalls where a probe costs a
login attempt in PyMySQL (about 1 ms of CPU), so the watcher knocks often and logs in only
when the port accepts: a restarted MySQL is noticed within one knock gap, for less CPU than
probing at the retry interval. A knock that connects counts as an aborted connect in MySQL,
once per outage; the login that follows at once resets the host's error count.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Callable, Sequence
from enum import Enum
from typing import Any

from launcher.config import DatabaseConfig

# A name with more addresses than this is not knocked on (a knock must stay cheap, and a
# knock on some of them could not stand for the login, which tries them all): it is probed.
MAX_ADDRESSES = 4


class Port(Enum):
    OPEN = "open"
    REFUSED = "refused"
    UNKNOWN = "unknown"  # no answer within the knock's timeout, or another error: probe to know


Knock = Callable[[], Port]


def knocker(db: DatabaseConfig, timeout: float) -> Knock | None:
    """Resolved once, as PyMySQL resolves once per login; None when the name does not resolve,
    has too many addresses, or the DB is reached through a unix socket."""
    if db.socket:
        return None
    try:
        found = socket.getaddrinfo(db.host, db.port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return None
    if len(found) > MAX_ADDRESSES:
        return None
    addresses = [(family, address) for family, _, _, _, address in found]
    return lambda: _knock_all(addresses, timeout)


def _knock_all(addresses: Sequence[tuple[socket.AddressFamily, Any]], timeout: float) -> Port:
    answers = [_knock(family, address, timeout) for family, address in addresses]
    if 0 in answers:
        return Port.OPEN
    return Port.REFUSED if answers and all(a == errno.ECONNREFUSED for a in answers) else Port.UNKNOWN


def _knock(family: socket.AddressFamily, address: Any, timeout: float) -> int:
    """0 when it connects, else the errno (a timeout is EAGAIN or EINPROGRESS)."""
    try:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            return sock.connect_ex(address)
    except OSError as err:
        return err.errno or -1
