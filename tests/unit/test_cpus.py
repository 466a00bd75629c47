"""`workers: auto` counts the CPUs the cgroup hierarchy allows, on cgroup v2 and v1 alike."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from launcher.config.parsers import available_cpus, cgroup_cpu_quota
from tests.support import ROOT


def hierarchy(tmp_path: Path, cgroup: str, files: dict[str, str]) -> tuple[str, str]:
    proc, root = tmp_path / "proc", tmp_path / "cgroup"
    proc.mkdir()
    (proc / "cgroup").write_text(cgroup)
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return str(proc), str(root)


def test_a_v2_quota_of_one_and_a_half_cpus(tmp_path: Path) -> None:
    proc, root = hierarchy(tmp_path, "0::/app\n", {"app/cpu.max": "150000 100000\n"})
    assert cgroup_cpu_quota(proc, root) == 1.5


def test_the_tightest_limit_up_the_v2_hierarchy_counts(tmp_path: Path) -> None:
    proc, root = hierarchy(
        tmp_path,
        "0::/pod/app\n",
        {"cpu.max": "max 100000\n", "pod/cpu.max": "100000 100000\n", "pod/app/cpu.max": "300000 100000\n"},
    )
    assert cgroup_cpu_quota(proc, root) == 1.0


def test_a_v1_cfs_quota(tmp_path: Path) -> None:
    proc, root = hierarchy(
        tmp_path,
        "4:memory:/x\n3:cpu,cpuacct:/docker/abc\n",
        {"cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "50000\n", "cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000\n"},
    )
    assert cgroup_cpu_quota(proc, root) == 0.5


def test_a_v1_container_whose_mount_is_its_own_cgroup(tmp_path: Path) -> None:
    """Without a cgroup namespace, /proc/self/cgroup names the host's path; the mount is the container's."""
    proc, root = hierarchy(
        tmp_path, "3:cpu:/docker/abc\n", {"cpu/cpu.cfs_quota_us": "200000\n", "cpu/cpu.cfs_period_us": "100000\n"}
    )
    assert cgroup_cpu_quota(proc, root) == 2.0


def test_no_quota_anywhere_is_no_limit(tmp_path: Path) -> None:
    proc, root = hierarchy(tmp_path, "3:cpu:/\n0::/\n", {"cpu/cpu.cfs_quota_us": "-1\n", "cpu.max": "max 100000\n"})
    assert cgroup_cpu_quota(proc, root) is None


def test_a_real_v1_cpu_cgroup_with_a_quota_of_one_cpu_gives_one_worker() -> None:
    folder = Path("/sys/fs/cgroup/cpu") / f"launcher-test-{uuid.uuid4().hex[:8]}"
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("one CPU: a quota of one cannot show")
    try:
        folder.mkdir()
    except OSError as err:
        pytest.skip(f"no cgroup v1 cpu controller to write to here ({err.strerror}); needs root on a v1 host")
    try:
        (folder / "cpu.cfs_period_us").write_text("100000")
        (folder / "cpu.cfs_quota_us").write_text("100000")
        script = (
            f"echo $$ > {folder}/cgroup.procs && exec {sys.executable} -c "
            "'from launcher.config.parsers import available_cpus; print(available_cpus())'"
        )
        done = subprocess.run(["sh", "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        assert int(done.stdout) == 1 < available_cpus()
    finally:
        folder.rmdir()
