"""The images the container tests run: the official ones where a registry answers, else local
stand-ins built from Debian's packages, under names of their own (`launcher-test/...`, never an
official tag) and cached on this machine by the hash of what they are built from.

- a Python base as the official `python:3.11-slim` lays it out: `debootstrap --variant=minbase
  bookworm` with python3 and python3-venv, a venv at /usr/local so `python` and `pip` sit where
  the official image has them, and the host's CA bundle so `pip` in a build reaches the index
  the way the host does;
- a MariaDB image from Debian's `mariadb-server` with an entrypoint that honours the official
  image's MYSQL_* variables (tests/docker/mariadb/);
- the application, from the repository's own Dockerfile, unchanged but for its base image
  (`--build-arg PYTHON_IMAGE`).
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from tests.support import ROOT

OFFICIAL_PYTHON = "python:3.11-slim"
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
PACKAGES = "python3,python3-venv,ca-certificates"
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
PIP_CONF = "[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n"
MARIADB = ROOT / "tests" / "docker" / "mariadb"
LABEL = "launcher-tests"  # every container the tests start carries it; none outlives the run


class Unavailable(Exception):
    """No way to have the image here; the message says why."""


def digest(*parts: bytes | str) -> str:
    total = hashlib.sha256()
    for part in parts:
        total.update(part.encode() if isinstance(part, str) else part)
        total.update(b"\0")
    return total.hexdigest()[:12]


def exists(client: Any, tag: str) -> bool:
    import docker

    try:
        client.images.get(tag)
        return True
    except docker.errors.ImageNotFound:
        return False


def pulled(client: Any, tag: str) -> bool:
    """Whether the official image is here or can be pulled (no registry answers here: it fails at once)."""
    if exists(client, tag):
        return True
    try:
        client.images.pull(tag)
        return True
    except Exception:  # the SDK raises several kinds when no registry answers
        return False


def python_base(client: Any) -> str:
    if pulled(client, OFFICIAL_PYTHON):
        return OFFICIAL_PYTHON
    ca = CA_BUNDLE.read_bytes() if CA_BUNDLE.exists() else b""
    tag = f"launcher-test/python:3.11-{digest(SUITE, MIRROR, PACKAGES, ca, PIP_CONF, 'venv at /usr/local')}"
    if not exists(client, tag):
        _debootstrap(client, tag, ca)
    return tag


def _debootstrap(client: Any, tag: str, ca: bytes) -> None:
    if os.geteuid() != 0 or shutil.which("debootstrap") is None:
        raise Unavailable("no Python base image: it is built with debootstrap, as root (apt-get install debootstrap)")
    with tempfile.TemporaryDirectory(prefix="rootfs-", dir="/var/tmp") as rootfs:
        steps = [
            ["debootstrap", "--variant=minbase", f"--include={PACKAGES}", SUITE, rootfs, MIRROR],
            ["chroot", rootfs, "/usr/bin/python3", "-m", "venv", "/usr/local"],
        ]
        for step in steps:
            done = subprocess.run(step, capture_output=True, text=True, timeout=900)
            if done.returncode != 0:
                raise Unavailable(f"{' '.join(step[:2])} failed: {done.stderr.strip()[-500:]}")
        if ca:
            Path(rootfs, "etc/ssl/certs/ca-certificates.crt").write_bytes(ca)
        Path(rootfs, "etc/pip.conf").write_text(PIP_CONF)
        for waste in ("var/cache/apt/archives", "var/lib/apt/lists", "usr/share/doc", "usr/share/man"):
            shutil.rmtree(Path(rootfs, waste), ignore_errors=True)
        archive = io.BytesIO()
        with tarfile.open(fileobj=archive, mode="w") as tar:
            tar.add(rootfs, arcname=".")
        client.api.import_image_from_data(
            archive.getvalue(),
            repository=tag.split(":")[0],
            tag=tag.split(":")[1],
            changes=[
                "ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin",
                "ENV LANG=C.UTF-8",
                'CMD ["python3"]',
            ],
        )


def mariadb(client: Any, base: str) -> str:
    recipe = [(MARIADB / name).read_bytes() for name in ("Dockerfile", "entrypoint.sh")]
    tag = f"launcher-test/mariadb:{digest(base, *recipe)}"
    if not exists(client, tag):
        build(client, str(MARIADB), tag, {"BASE": base})
    return tag


def app(client: Any, base: str) -> str:
    """The application, from the repository's Dockerfile: rebuilt each run (its layers are cached)."""
    tag = "launcher-test/app:current"
    build(client, str(ROOT), tag, {} if base == OFFICIAL_PYTHON else {"PYTHON_IMAGE": base})
    return tag


def build(client: Any, path: str, tag: str, args: dict[str, str]) -> None:
    try:
        client.images.build(path=path, tag=tag, buildargs=args, network_mode="host", rm=True, forcerm=True)
    except Exception as err:  # BuildError carries the log; one line is enough to say why
        log = "".join(str(line.get("stream", "")) for line in getattr(err, "build_log", []))
        raise Unavailable(f"building {tag} failed: {err}; {log.strip()[-800:]}") from None
