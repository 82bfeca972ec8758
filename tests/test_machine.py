"""The machine the process sees (edgedistill.machine): a container's CPU quota and memory limit count as well as the CPU
affinity and MemAvailable, read from the process's cgroups (v2 and v1, its own and every ancestor's)."""
import os

import pytest

from edgedistill import machine

GiB = 2**30


@pytest.fixture
def cgroups(tmp_path, monkeypatch):
    """A fake /sys/fs/cgroup and /proc/self/cgroup on a 16-core host: ``cgroups(self_lines, {file: text})``."""
    root, own = tmp_path / "cgroup", tmp_path / "self_cgroup"
    monkeypatch.setattr(machine, "CGROUP_ROOT", root)
    monkeypatch.setattr(machine, "SELF_CGROUP", own)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)

    def make(lines, files):
        own.write_text("\n".join(lines) + "\n")
        for name, text in files.items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_text(text)
    return make


def test_a_v2_container_quota_and_memory_limit(cgroups):
    cgroups(["0::/"], {"cgroup.controllers": "cpu memory", "cpu.max": "150000 100000",  # docker --cpus 1.5
                       "memory.max": str(4 * GiB), "memory.current": str(GiB)})
    assert machine.available_cores() == 1  # (rounded down: 1.5 cores do not hold two busy processes)
    assert machine.available_memory() <= 3 * GiB


def test_a_v2_ancestor_limit_applies_and_max_is_no_limit(cgroups):
    cgroups(["0::/a/b"], {"cgroup.controllers": "cpu memory", "cpu.max": "max 100000", "a/cpu.max": "400000 100000",
                          "a/b/cpu.max": "max 100000", "a/b/memory.max": "max", "a/b/memory.current": "0"})
    assert machine.available_cores() == 4
    assert machine._memory_left() is None


def test_v1_hierarchies_and_a_container_that_sees_its_own_cgroup_as_the_root(cgroups):
    huge = "9223372036854771712"
    cgroups(["4:memory:/docker/x", "1:cpu,cpuacct:/docker/x", "0::/"],
            {"cpu,cpuacct/cpu.cfs_quota_us": "200000", "cpu,cpuacct/cpu.cfs_period_us": "100000",  # (no docker/x here)
             "memory/memory.limit_in_bytes": huge, "memory/memory.usage_in_bytes": str(GiB),
             "memory/docker/x/memory.limit_in_bytes": str(2 * GiB), "memory/docker/x/memory.usage_in_bytes": str(GiB // 2)})
    assert machine.available_cores() == 2
    assert machine._memory_left() == 2 * GiB - GiB // 2


def test_a_path_outside_the_cgroup_namespace_reads_the_mount_root(cgroups):
    cgroups(["0::/../../system.slice"], {"cgroup.controllers": "cpu", "cpu.max": "300000 100000"})
    assert machine._cgroup_dirs("cpu") == [machine.CGROUP_ROOT] and machine.available_cores() == 3


def test_no_cgroups_no_quota_and_unreadable_files_are_no_limit(cgroups, tmp_path):
    assert machine.available_cores() == 16  # (no /proc/self/cgroup: the affinity alone)
    cgroups(["0::/"], {"cgroup.controllers": "cpu", "cpu.max": "garbage", "memory.max": "-"})
    assert machine.available_cores() == 16 and machine._memory_left() is None
    cgroups(["1:cpu:/"], {"cpu/cpu.cfs_quota_us": "-1", "cpu/cpu.cfs_period_us": "100000"})
    assert machine.available_cores() == 16


def test_a_run_in_a_container_keeps_torch_threads_within_the_quota(monkeypatch):
    """torch's default thread count follows the affinity (every host core in a container); the engine caps it at the
    quota, and leaves a lower count, or a recipe's engine.threads, as it is."""
    import torch

    from edgedistill.config import load_recipe
    from edgedistill.engine import distributed
    from edgedistill.shipped_recipes import recipe_source

    engine = load_recipe(recipe_source("quickstart"), []).engine
    before = torch.get_num_threads()
    try:
        monkeypatch.setattr(distributed, "available_cores", lambda: 1)
        torch.set_num_threads(2)
        distributed.prepare(engine)
        assert torch.get_num_threads() == 1
        monkeypatch.setattr(distributed, "available_cores", lambda: 4)
        torch.set_num_threads(2)
        distributed.prepare(engine)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
