"""Kill a real `edgedistill run` mid-training, start it again with the same --out, and get exactly the
numbers of an uninterrupted run (each in its own model cache, so nothing is shared between them)."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

RECIPE = {
    "name": "interrupt",
    "data": {"name": "synthetic", "params": {"n_subjects": 5, "windows_per_subject": 16, "length": 32}},
    "teacher": {"model": "fcn", "width": 0.25, "train": {"epochs": 40, "batch_size": 8}},
    "student": {"model": "cnn1d", "width": 4, "depth": 2},
    "method": {"name": "offline", "terms": [{"loss": "ce", "weight": 0.5}, {"loss": "kd", "weight": 0.5}]},
    "train": {"epochs": 6, "batch_size": 8},
    "seeds": [0],
    "engine": {"threads": 1, "progress": False},
}


def _cmd(recipe: Path, out: Path) -> list[str]:
    exe = Path(sys.executable).with_name("edgedistill")
    return [str(exe), "run", str(recipe), "--out", str(out), "--no-progress"]


def _env(cache: Path) -> dict:
    return {**os.environ, "EDGEDISTILL_CACHE": str(cache)}


def test_killed_run_resumes_to_the_same_result(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(RECIPE))
    straight = subprocess.run(_cmd(recipe, tmp_path / "a"), env=_env(tmp_path / "cache-a"), capture_output=True, text=True, timeout=300)
    assert straight.returncode == 0, straight.stderr

    proc = subprocess.Popen(_cmd(recipe, tmp_path / "b"), env=_env(tmp_path / "cache-b"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    partial_log = None
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        logs = list((tmp_path / "cache-b").glob("models/*.partial/metrics.jsonl"))
        if logs and len(logs[0].read_text().splitlines()) >= 5:
            partial_log = logs[0]
            proc.send_signal(signal.SIGKILL)  # no chance to clean up: only atomic writes survive
            break
        time.sleep(0.05)
    proc.wait(timeout=60)
    assert partial_log is not None, "the teacher finished before it could be interrupted"
    assert not (tmp_path / "b" / "summary.json").exists()

    resumed = subprocess.run(_cmd(recipe, tmp_path / "b"), env=_env(tmp_path / "cache-b"), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    a = json.loads((tmp_path / "a" / "summary.json").read_text())
    b = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert [r["metrics"] for r in a["rows"]] == [r["metrics"] for r in b["rows"]]
    entries = [p.parent for p in (tmp_path / "cache-b" / "models").glob("*/key.json")]
    teacher_log = next(e / "metrics.jsonl" for e in entries if json.loads((e / "key.json").read_text())["role"] == "teacher")
    assert [json.loads(l)["epoch"] for l in teacher_log.read_text().splitlines()] == list(range(1, 41))
