"""The model cache shared by processes that start together (as on machines sharing an NFS folder): a teacher two
processes need is trained once, the other process says once whom it waits for and then reads the same weights; a
lock holder killed outright does not block the next process, which resumes its unfinished training."""
import hashlib
import io
import json
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import yaml

from tests.helpers import TINY_RECIPE

REPO = Path(__file__).resolve().parents[1]
KEY = "0123456789abcdef01234567"


def _train_slowly(counter: Path, seconds: float):
    def train(partial: Path):
        import torch

        with open(counter, "a") as fh:
            fh.write(f"{os.getpid()}\n")
        time.sleep(seconds)  # long enough for the other process to find the lock taken
        torch.manual_seed(os.getpid())  # a second training would give other weights
        return {"w": torch.randn(4, 3)}, {"val": {"acc": 0.5}, "test": {"acc": 0.5}}
    return train


def _use_cache(root: str, counter: str, barrier, out: str) -> None:
    """A spawned process: wait for the other, then get (or train) the entry; write what it got."""
    from edgedistill.experiment.teacher_cache import ModelCache

    err = io.StringIO()
    sys.stderr = err
    barrier.wait(timeout=60)
    state, _, cached = ModelCache(Path(root)).get_or_train(KEY, {"k": 1}, _train_slowly(Path(counter), 2.0))
    digest = hashlib.sha256(state["w"].numpy().tobytes()).hexdigest()
    Path(out).write_text(json.dumps({"pid": os.getpid(), "cached": cached, "sha": digest, "stderr": err.getvalue()}))


def test_two_processes_started_together_train_the_entry_once_and_read_the_same_weights(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    barrier, counter = ctx.Barrier(2), tmp_path / "trainings"
    procs = [ctx.Process(target=_use_cache, args=(str(tmp_path / "cache"), str(counter), barrier, str(tmp_path / f"{i}.json")))
             for i in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0]
    got = [json.loads((tmp_path / f"{i}.json").read_text()) for i in range(2)]
    trainer = counter.read_text().split()
    assert len(trainer) == 1  # trained exactly once
    assert got[0]["sha"] == got[1]["sha"]  # and both have the same weights
    [waiter] = [g for g in got if g["cached"]]
    [first] = [g for g in got if not g["cached"]]
    assert str(first["pid"]) == trainer[0]
    lines = waiter["stderr"].splitlines()
    assert lines == [f"waiting for cache entry {KEY} being trained by pid {first['pid']} on host {socket.gethostname()} "
                     "(it is read back when done)"], waiter["stderr"]
    assert first["stderr"] == ""
    assert (tmp_path / "cache" / "models" / KEY / "manifest.json").is_file()
    assert not (tmp_path / "cache" / "models" / f"{KEY}.partial").exists()


HOLD = """
import pathlib, sys, time
from edgedistill.experiment.teacher_cache import ModelCache
def train(partial):
    (partial / "checkpoints").mkdir(parents=True, exist_ok=True)
    (partial / "progress.txt").write_text("epoch 1 of 2")
    pathlib.Path(sys.argv[2]).write_text("training")
    time.sleep(300)
ModelCache(pathlib.Path(sys.argv[1])).get_or_train("%s", {"k": 1}, train)
""" % KEY


def test_a_lock_holder_killed_outright_does_not_block_and_its_partial_training_is_resumed(tmp_path):
    from edgedistill.experiment.teacher_cache import ModelCache

    root, marker = tmp_path / "cache", tmp_path / "holding"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(root), str(marker)], cwd=REPO)
    try:
        deadline = time.time() + 60
        while not marker.exists() and holder.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert marker.exists()
        assert json.loads((root / "models" / f"{KEY}.lock").read_text())["pid"] == holder.pid  # who holds it, for waiters
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
    seen = {}

    def resume(partial: Path):
        import torch

        seen["progress"] = (partial / "progress.txt").read_text()  # the dead holder's unfinished training, to resume
        return {"w": torch.zeros(2)}, {"val": {}, "test": {}}

    start = time.time()
    state, _, cached = ModelCache(root).get_or_train(KEY, {"k": 1}, resume)
    assert time.time() - start < 10 and not cached  # the kernel released the dead holder's lock at once
    assert seen == {"progress": "epoch 1 of 2"}
    assert ModelCache(root).lookup(KEY) is not None and (root / "models" / f"{KEY}.lock").read_text() == ""


def test_a_run_started_while_another_trains_the_teacher_waits_and_reads_it(tmp_path):
    # The teacher trains for several seconds (600 epochs of ~15 ms), and the second run starts once the first has
    # begun training it, under the entry's lock: the second's start-up (~3 s) then ends while the lock is held, so it
    # must wait. (Started at the same instant, a teacher trained in 0.1 s was often published before the other run
    # looked: it read the entry without waiting, and the test failed by timing.)
    recipe = {**TINY_RECIPE, "seeds": [0], "teacher": {**TINY_RECIPE["teacher"], "train": {"epochs": 600, "batch_size": 16}}}
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    env = {**os.environ, "EDGEDISTILL_CACHE": str(tmp_path / "shared-cache"), "OMP_NUM_THREADS": "1"}

    def start(i: int) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "edgedistill.cli", "run", str(path), "--out", str(tmp_path / f"run{i}")],
                                cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    first, seen = start(0), []
    for line in first.stdout:  # until it trains the teacher, holding the entry's lock
        seen.append(line)
        if "teacher seed 0: started" in line:
            break
    procs = [first, start(1)]
    outputs = ["".join(seen) + first.communicate(timeout=240)[0], procs[1].communicate(timeout=240)[0]]
    assert [p.returncode for p in procs] == [0, 0], outputs
    both = "\n".join(outputs)
    assert both.count("teacher seed 0: reused from cache") == 1, both  # one trained it, the other read it back
    assert both.count("student seed 0: reused from cache") == 1, both  # the student-alone baseline likewise
    assert both.count("waiting for cache entry") >= 1, both  # the one that waited said so
    summaries = [json.loads((tmp_path / f"run{i}" / "summary.json").read_text()) for i in range(2)]
    teacher = [[r for r in s["rows"] if r["role"] == "teacher"][0]["metrics"] for s in summaries]
    assert teacher[0] == teacher[1]  # the same teacher, hence the same metrics
    assert len(list((tmp_path / "shared-cache" / "models").glob("*/manifest.json"))) == 2  # one teacher, one baseline
