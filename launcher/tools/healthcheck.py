"""`launcher healthcheck`, for Docker's HEALTHCHECK: GET server.health_path where the
launcher really listens, never through a proxy; 0 only for a 200.

Where it listens: PID 1's published address in a container (runtime.py), else the launcher
that published the configured port, else the config's own address. A wildcard address is
asked on its loopback (0.0.0.0 -> 127.0.0.1, :: -> ::1). http.client, not urllib, so that
HTTP_PROXY in the container cannot send the check elsewhere.
"""

from __future__ import annotations

import http.client
import ssl

from launcher import runtime
from launcher.config import Config
from launcher.exitcodes import ExitCode

TIMEOUT = 3.0
LOOPBACK = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}


def target(config: Config) -> runtime.Published:
    found = runtime.live()
    ours = next((p for p in found if p.pid == 1), None)
    if ours is None and config.server.port:
        ours = next((p for p in found if p.port == config.server.port), None)
    if ours is None and not config.server.port and len(found) == 1:
        ours = found[0]
    return ours or runtime.Published(0, config.server.host, config.server.port, bool(config.server.ssl_certfile))


def check(config: Config) -> int:
    where = target(config)
    host = LOOPBACK.get(where.host, where.host)
    shown = f"{'https' if where.tls else 'http'}://{f'[{host}]' if ':' in host else host}:{where.port}"
    url = shown + config.server.health_path
    if where.tls:  # the check asks the service itself: its certificate names the public host, not this one
        unverified = ssl.create_default_context()
        unverified.check_hostname, unverified.verify_mode = False, ssl.CERT_NONE
        connection: http.client.HTTPConnection = http.client.HTTPSConnection(
            host, where.port, timeout=TIMEOUT, context=unverified
        )
    else:
        connection = http.client.HTTPConnection(host, where.port, timeout=TIMEOUT)
    try:
        connection.request("GET", config.server.health_path, headers={"User-Agent": "launcher-healthcheck"})
        response = connection.getresponse()
        body = response.read(512).decode(errors="replace")
    except (OSError, http.client.HTTPException) as err:
        print(f"{url}: no answer ({err})")
        return ExitCode.NO_ANSWER
    finally:
        connection.close()
    print(f"{url}: {response.status} {body}".rstrip())
    return ExitCode.OK if response.status == 200 else ExitCode.TEMPFAIL
