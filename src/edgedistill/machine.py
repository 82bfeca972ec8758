"""What this machine offers the process: the cores it may run on and the memory still free.

One place for both, so every count of processes or threads (``--jobs``, worker threads, CPU ranks, parallel parsing)
sees the same machine: the cores in this process's CPU affinity (a container or ``taskset`` may allow fewer than
``os.cpu_count()`` reports), and the memory the kernel says a new process could still use. A container's limits
count too: a CPU quota (``docker --cpus 2``, a Kubernetes CPU limit) leaves the affinity at every host core, and a
memory limit leaves MemAvailable at the host's, so both are read from the process's cgroups (v2 and v1), its own and
every ancestor's, as Go's automaxprocs and the JVM do; a limit that cannot be read is no limit.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

#: Where the cgroup hierarchies are mounted, and the file naming this process's cgroups (tests point them elsewhere).
CGROUP_ROOT = Path("/sys/fs/cgroup")
SELF_CGROUP = Path("/proc/self/cgroup")
_NO_LIMIT = 2**60  # (cgroup v1 writes "no limit" as a huge number, e.g. 9223372036854771712)


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity where the system has one), no more than its cgroups' CPU
    quota allows (rounded down, at least 1)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    quota = _cpu_quota()
    return max(1, min(cores, int(quota)) if quota is not None else cores)


def available_memory() -> Optional[int]:
    """Bytes of memory available to new processes without swapping (Linux's MemAvailable), no more than is left under
    the process's cgroups' memory limit; None where unknown."""
    free: Optional[int] = None
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    free = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError, IndexError):
        pass
    left = _memory_left()
    return left if free is None else free if left is None else min(free, left)


def _cgroup_dirs(v1_controller: str) -> list[Path]:
    """This process's cgroup folders for a controller (v2's unified one, or v1's ``v1_controller``), from its own up
    to the hierarchy's root. A path missing under the mount (a container that sees its own cgroup as the root) is
    skipped; the root still counts."""
    try:
        lines = SELF_CGROUP.read_text(encoding="utf-8").splitlines()
    except OSError:
        return []
    found: list[Path] = []
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if not controllers:  # "0::/path": the unified (v2) hierarchy
            root: Optional[Path] = CGROUP_ROOT if (CGROUP_ROOT / "cgroup.controllers").is_file() else CGROUP_ROOT / "unified"
        elif v1_controller in controllers.split(","):
            root = next((CGROUP_ROOT / n for n in (controllers, v1_controller) if (CGROUP_ROOT / n).is_dir()), None)
        else:
            continue
        if root is None or not root.is_dir():
            continue
        # (a path outside the process's cgroup namespace reads "/../.."; its own cgroup is then the mount's root)
        here = root if ".." in Path(path).parts else root / path.lstrip("/")
        while True:
            if here.is_dir() and here not in found:
                found.append(here)
            if here == root or root not in here.parents:
                break
            here = here.parent
    return found


def _number(path: Path, field: int = 0) -> Optional[int]:
    """A whole number from a cgroup file (its ``field``-th word), or None: no file, "max" (no limit), not a number."""
    try:
        words = path.read_text(encoding="ascii").split()
        return int(words[field]) if len(words) > field and words[field] != "max" else None
    except (OSError, ValueError):
        return None


def _cpu_quota() -> Optional[float]:
    """The smallest CPU quota (in cores) over the process's cgroups, or None when none is set."""
    quotas = []
    for d in _cgroup_dirs("cpu"):
        v2 = (d / "cpu.max").is_file()  # v2: "<quota> <period>" or "max <period>"; v1: two files, quota -1 for none
        quota = _number(d / "cpu.max") if v2 else _number(d / "cpu.cfs_quota_us")
        period = _number(d / "cpu.max", 1) if v2 else _number(d / "cpu.cfs_period_us")
        if quota is not None and period and quota > 0:
            quotas.append(quota / period)
    return min(quotas) if quotas else None


def _memory_left() -> Optional[int]:
    """The least memory left under a limit over the process's cgroups (limit - usage), or None when none is set."""
    left = []
    for d in _cgroup_dirs("memory"):
        v2 = (d / "memory.max").is_file()
        limit = _number(d / ("memory.max" if v2 else "memory.limit_in_bytes"))
        used = _number(d / ("memory.current" if v2 else "memory.usage_in_bytes"))
        if limit is not None and limit < _NO_LIMIT:
            left.append(max(0, limit - (used or 0)))
    return min(left) if left else None
