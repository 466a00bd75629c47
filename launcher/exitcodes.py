"""The launcher's exit codes, apart from the machine so the CLI can exit before loading it."""

from enum import IntEnum


class ExitCode(IntEnum):
    """sysexits.h codes, so orchestrators and people can tell causes apart."""

    OK = 0
    INTERNAL = 1  # an unexpected error inside the launcher: a bug, logged as one line
    USAGE = 64
    DB_UNAVAILABLE = 69  # gave up on the database
    NO_ANSWER = 69  # `healthcheck`: nothing answered where the launcher listens (EX_UNAVAILABLE too)
    CRASH_LOOP = 70
    OS_ERROR = 71
    TEMPFAIL = 75  # `healthcheck`: the service answered, but not 200 (503 while the DB is down)
    CONFIG = 78
