"""Kill a real `edgedistill run` mid-training, start it again with the same --out, and get exactly the
numbers of an uninterrupted run (each in its own model cache, so nothing is shared between them).

The run kills itself with SIGKILL right after the teacher's epoch 5 checkpoint (the training loop's test-only
EDGEDISTILL_TEST_KILL_AFTER_EPOCH hook): a real hard kill, at a deterministic point, with no timing involved."""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import yaml

from edgedistill.engine.loop import TEST_KILL_AFTER_EPOCH

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
    env = {k: v for k, v in os.environ.items() if k != TEST_KILL_AFTER_EPOCH}
    return {**env, "EDGEDISTILL_CACHE": str(cache)}


def test_killed_run_resumes_to_the_same_result(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(RECIPE))
    straight = subprocess.run(_cmd(recipe, tmp_path / "a"), env=_env(tmp_path / "cache-a"), capture_output=True, text=True, timeout=300)
    assert straight.returncode == 0, straight.stderr

    # No chance to clean up: only atomic writes survive. The teacher (40 epochs) is the first stage to reach epoch 5.
    killed = subprocess.run(_cmd(recipe, tmp_path / "b"), env={**_env(tmp_path / "cache-b"), TEST_KILL_AFTER_EPOCH: "5"},
                            capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    partial_logs = list((tmp_path / "cache-b").glob("models/*.partial/metrics.jsonl"))
    assert len(partial_logs) == 1, "the teacher's unfinished stage is left in the cache"
    assert [json.loads(l)["epoch"] for l in partial_logs[0].read_text().splitlines()] == [1, 2, 3, 4, 5]
    assert not (tmp_path / "b" / "summary.json").exists()

    resumed = subprocess.run(_cmd(recipe, tmp_path / "b"), env=_env(tmp_path / "cache-b"), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    a = json.loads((tmp_path / "a" / "summary.json").read_text())
    b = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert [r["metrics"] for r in a["rows"]] == [r["metrics"] for r in b["rows"]]
    entries = [p.parent for p in (tmp_path / "cache-b" / "models").glob("*/key.json")]
    teacher_log = next(e / "metrics.jsonl" for e in entries if json.loads((e / "key.json").read_text())["role"] == "teacher")
    assert [json.loads(l)["epoch"] for l in teacher_log.read_text().splitlines()] == list(range(1, 41))


def test_sigterm_stops_cleanly_says_how_to_resume_and_the_run_resumes(tmp_path):
    """SIGTERM (a cluster's time limit, a pre-emption) takes Ctrl-C's way out: exit 143, the resume line, no
    traceback; the same command then resumes the teacher from its last epoch instead of starting again."""
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({**RECIPE, "train": {"epochs": 2, "batch_size": 8}}))
    cache = tmp_path / "cache"
    stopped = subprocess.run(_cmd(recipe, tmp_path / "b"), env={**_env(cache), TEST_KILL_AFTER_EPOCH: "3:TERM"},
                             capture_output=True, text=True, timeout=300)
    assert stopped.returncode == 128 + signal.SIGTERM, stopped.stderr
    assert "Traceback" not in stopped.stderr and "╭" not in stopped.stderr, stopped.stderr
    assert f"resume with: edgedistill run {recipe} --out {tmp_path / 'b'}" in stopped.stderr, stopped.stderr
    resumed = subprocess.run(_cmd(recipe, tmp_path / "b"), env=_env(cache), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming at epoch 3/40" in resumed.stdout + resumed.stderr


def test_sigterm_in_a_cross_validation_says_once_how_to_resume_the_whole_of_it(tmp_path):
    """A fold is a run of its own; stopped, the cross-validation (not the fold's run, which may be in another
    process) says how to resume, once, with the cross-validation's command."""
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({**RECIPE, "eval": {"scheme": "group_kfold", "folds": 2}}))
    stopped = subprocess.run(_cmd(recipe, tmp_path / "b") + ["--jobs", "1"],
                             env={**_env(tmp_path / "cache"), TEST_KILL_AFTER_EPOCH: "3:TERM"},
                             capture_output=True, text=True, timeout=300)
    assert stopped.returncode == 128 + signal.SIGTERM, stopped.stderr
    assert "Traceback" not in stopped.stderr, stopped.stderr
    assert stopped.stderr.count("Interrupted.") == 1, stopped.stderr
    assert f"resume with: edgedistill run {recipe} --out {tmp_path / 'b'} --no-progress --jobs 1\n" in stopped.stderr, stopped.stderr


def test_sigterm_with_folds_side_by_side_says_once_how_to_resume(tmp_path):
    """With --jobs 2 the folds run in two worker processes; a SIGTERM to the run's process (what a scheduler's time
    limit sends) stops both and the cross-validation says how to resume, once (a fold's run said it in each worker on
    Ctrl-C, and nobody on SIGTERM)."""
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({**RECIPE, "eval": {"scheme": "group_kfold", "folds": 2}}))
    proc = subprocess.Popen(_cmd(recipe, tmp_path / "b") + ["--jobs", "2"], env=_env(tmp_path / "cache"),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in proc.stdout:  # both folds' teachers are training once each has said it started
        lines.append(line)
        if sum("teacher seed 0: started" in seen for seen in lines) == 2:
            break
    proc.send_signal(signal.SIGTERM)
    out = "".join(lines) + proc.stdout.read()
    assert proc.wait(timeout=60) == 128 + signal.SIGTERM, out
    assert "Traceback" not in out and out.count("Interrupted.") == 1, out
    assert f"resume with: edgedistill run {recipe} --out {tmp_path / 'b'} --no-progress --jobs 2\n" in out, out
