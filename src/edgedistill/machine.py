"""What this machine offers the process: the cores it may run on and the memory still free.

One place for both, so every count of processes or threads (``--jobs``, worker threads, CPU ranks, parallel parsing)
sees the same machine: the cores in this process's CPU affinity (a container or ``taskset`` may allow fewer than
``os.cpu_count()`` reports), and the memory the kernel says a new process could still use.
"""
from __future__ import annotations

import os
from typing import Optional


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity where the system has one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def available_memory() -> Optional[int]:
    """Bytes of memory available to new processes without swapping (Linux's MemAvailable), or None where unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None
