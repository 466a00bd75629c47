"""An app that starts a thread when it is imported, as some SDKs and metrics clients do:
forking it would copy a process whose other thread may hold a lock forever."""

from __future__ import annotations

import threading
import time

from tests.apps import controllable

threading.Thread(target=time.sleep, args=(3600,), name="poller-at-import", daemon=True).start()

app = controllable
