"""A stand-in for Docker's `restart: always`: restart on any exit, 100 ms doubling per
consecutive restart up to 60 s, reset once the process stayed up 10 s. Signals stop it."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

INITIAL, CAP, RESET_AFTER = 0.1, 60.0, 10.0


def main(command: list[str]) -> int:
    stopping = False
    child: subprocess.Popen[bytes] | None = None

    def stop(sig: int, frame: object) -> None:
        nonlocal stopping
        stopping = True
        if child is not None and child.poll() is None:
            child.send_signal(sig)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    delay = INITIAL
    while not stopping:
        started = time.monotonic()
        child = subprocess.Popen(command)
        child.wait()
        if stopping:
            break
        delay = INITIAL if time.monotonic() - started >= RESET_AFTER else delay
        time.sleep(delay)
        delay = min(CAP, delay * 2)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
