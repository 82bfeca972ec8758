"""Ctrl-C on a run whose stages run side by side (--jobs 2: the run's own thread slot and a worker process): the run
stops within seconds with exit 130 and the resume hint, no worker is left behind, and the same command finishes the
run, resuming the interrupted stages from their last epoch."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.test_interrupt import RECIPE as SMALL

# test_interrupt's small synthetic recipe, with stages of several seconds: the interrupt lands inside them
RECIPE = {**SMALL, "name": "ctrlc", "teacher": {**SMALL["teacher"], "train": {"epochs": 2, "batch_size": 8}},
          "train": {"epochs": 400, "batch_size": 8}}


def _group(pgid: int) -> list[int]:
    """The processes of process group ``pgid`` (from /proc: field 5 of a process's stat is its group)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[2]) == pgid:
                pids.append(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            pass
    return pids


def _alive(pids: list[int]) -> list[str]:
    """The processes among ``pids`` still running: (pid, state, command line); a zombie (ended, not yet reaped by
    whoever adopted it) has ended."""
    left = []
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:100]
        except OSError:
            continue
        if state != "Z":
            left.append(f"{pid} {state} {cmd}")
    return left


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the process table from /proc (Linux)")
def test_ctrl_c_stops_every_slot_and_the_same_command_resumes(tmp_path):
    recipe, out = tmp_path / "r.yaml", tmp_path / "run"
    recipe.write_text(yaml.safe_dump(RECIPE))
    cmd = [str(Path(sys.executable).with_name("edgedistill")), "run", str(recipe), "--out", str(out), "--no-progress",
           "--jobs", "2"]
    env = {**os.environ, "EDGEDISTILL_CACHE": str(tmp_path / "cache")}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)  # its own process group, as a terminal's Ctrl-C reaches it
    seen = []
    for line in proc.stdout:  # both stages under way: the student alone and the distilled student
        seen.append(line)
        if sum("seed 0: started (400 epochs)" in s for s in seen if s.startswith("[seed 0]")) == 2:
            break
    group = _group(proc.pid)
    assert len(group) >= 2, group  # the run and its worker process
    time.sleep(1.0)
    start = time.time()
    os.killpg(proc.pid, signal.SIGINT)
    rest, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, "".join(seen) + rest + err
    assert time.time() - start < 20
    assert "Interrupted. Finished stages and the last finished epoch are kept; resume with:" in err
    time.sleep(1.0)
    assert _alive(group) == []  # the worker (and multiprocessing's resource tracker) went with the run

    again = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "resuming at epoch" in again.stdout and (out / "summary.json").exists()
