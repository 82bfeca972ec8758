"""Integrity (issue 16, item 3): damaged cache entries, checkpoints and persistence-image chunks are detected when
read, moved aside (never deleted) and rebuilt; a damaged user checkpoint is one line with exit 2; temporary files
an interrupted write left behind are removed by the next run, while a live writer's are kept."""
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

import edgedistill
from edgedistill import io as eio
from edgedistill.cli import app
from edgedistill.config import EngineConfig, TrainConfig
from edgedistill.data import topology as topo
from edgedistill.engine import checkpoint as ckpt
from edgedistill.engine.loop import Stage, Trainer
from edgedistill.experiment.teacher_cache import MANIFEST, ModelCache
from edgedistill.methods.supervised import Supervised
from tests.helpers import tiny_net, toy_splits

RECIPE = {
    "name": "integrity",
    "data": {"name": "synthetic", "params": {"n_subjects": 4, "windows_per_subject": 8, "length": 32}},
    "teacher": {"model": "fcn", "width": 0.25, "train": {"epochs": 2}},
    "student": {"model": "cnn1d", "width": 4, "depth": 2},
    "method": {"name": "offline", "terms": [{"loss": "ce", "weight": 0.5}, {"loss": "kd", "weight": 0.5}]},
    "train": {"epochs": 1},
    "seeds": [0],
    "engine": {"threads": 1, "progress": False},
}
STATE = {"w": torch.arange(6, dtype=torch.float32), "b": torch.ones(2)}
SUMMARY = {"label": "t", "val": {"best": {"acc": 0.5}}, "test": {"best": {"acc": 0.25}}}


def _flip(path, at=0.5):
    data = bytearray(path.read_bytes())
    data[int(len(data) * at)] ^= 0xFF
    path.write_bytes(bytes(data))


def _cache_entry(tmp_path):
    cache = ModelCache(tmp_path / "c")
    cache.get_or_train("k", {"role": "teacher"}, lambda partial: (STATE, SUMMARY))
    return cache, cache.entry("k")


# -- cached models --------------------------------------------------------------------------------------------------
DAMAGE = {
    "flipped weights": (lambda e: _flip(e / "weights.pt"), "weights.pt does not match its sha256"),
    "truncated weights": (lambda e: (e / "weights.pt").write_bytes((e / "weights.pt").read_bytes()[:100]), "weights.pt has 100 bytes"),
    "weights gone": (lambda e: (e / "weights.pt").unlink(), "weights.pt cannot be read"),
    "missing manifest (an entry from before manifests)": (lambda e: (e / MANIFEST).unlink(), f"no {MANIFEST}"),
    "manifest not JSON": (lambda e: (e / MANIFEST).write_text("{not json"), "not readable JSON"),
    "manifest without files": (lambda e: (e / MANIFEST).write_text("[]"), "does not list"),
    "summary metrics edited": (lambda e: (e / "summary.json").write_text(json.dumps({**SUMMARY, "test": {"best": {"acc": 0.99}}})),
                               "summary.json"),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_cache_entry_is_quarantined_and_trained_again(tmp_path, capsys, damage):
    cache, entry = _cache_entry(tmp_path)
    assert json.loads((entry / MANIFEST).read_text())["metrics"] == {"val": SUMMARY["val"], "test": SUMMARY["test"]}
    hurt, reason = DAMAGE[damage]
    hurt(entry)
    damaged = {p.name: p.read_bytes() for p in entry.iterdir()}
    assert cache.lookup("k") is None and entry.is_dir()  # lookup alone never moves anything
    new_state, new_summary = {"w": torch.zeros(6), "b": torch.zeros(2)}, {**SUMMARY, "label": "retrained"}
    state, summary, cached = cache.get_or_train("k", {"role": "teacher"}, lambda partial: (new_state, new_summary))
    assert not cached and summary["label"] == "retrained" and torch.equal(state["w"], new_state["w"])
    (moved,) = (tmp_path / "c" / "quarantine").iterdir()
    assert moved.name.startswith("k-") and {p.name: p.read_bytes() for p in moved.iterdir()} == damaged
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and reason in err[0] and str(moved) in err[0] and "training it again" in err[0]
    again = cache.get_or_train("k", {}, lambda partial: pytest.fail("a healed entry is reused"))
    assert again[2] and torch.equal(again[0]["w"], new_state["w"]) and again[1]["label"] == "retrained"


def test_an_unfinished_entry_whose_last_checkpoint_is_unreadable_restarts(tmp_path, capsys):
    cache = ModelCache(tmp_path / "c")
    checkpoints = cache.root / "k.partial" / "checkpoints"
    checkpoints.mkdir(parents=True)
    (checkpoints / "last.pt").write_bytes(b"PK\x03\x04 cut short")
    seen = []
    cache.get_or_train("k", {}, lambda partial: (seen.append((partial / "checkpoints").exists()), (STATE, SUMMARY))[1])
    assert seen == [False]  # training started from an empty folder
    (moved,) = (tmp_path / "c" / "quarantine").iterdir()
    assert moved.name.startswith("k.partial-") and (moved / "checkpoints" / "last.pt").read_bytes() == b"PK\x03\x04 cut short"
    assert "checkpoints/last.pt is unusable" in capsys.readouterr().err


def test_flipped_bytes_in_a_cached_teacher_are_caught_and_the_run_uses_the_retrained_one(tmp_path, capsys):
    recipe = {**RECIPE, "cache_dir": str(tmp_path / "cache")}
    first = edgedistill.run(recipe, out=tmp_path / "a", progress=False)
    (entry,) = [p.parent for p in (tmp_path / "cache" / "models").glob("*/key.json") if json.loads(p.read_text())["role"] == "teacher"]
    good = (entry / "weights.pt").read_bytes()
    _flip(entry / "weights.pt")
    capsys.readouterr()
    second = edgedistill.run(recipe, out=tmp_path / "b", progress=False)
    assert "failed its integrity check" in capsys.readouterr().err
    (moved,) = (tmp_path / "cache" / "quarantine").iterdir()
    assert (moved / "weights.pt").read_bytes() != good  # the damaged file is kept for inspection
    assert (entry / "weights.pt").read_bytes() == good  # retrained: training is deterministic
    teacher = json.loads((tmp_path / "b" / "teacher" / "summary.json").read_text())
    assert teacher["cached"] is False and teacher["test"] == json.loads((entry / "summary.json").read_text())["test"]
    # The student distilled from the retrained teacher gets the first run's numbers, not the damaged teacher's.
    assert [r["metrics"] for r in first["rows"]] == [r["metrics"] for r in second["rows"]]



def test_damaged_stage_records_in_a_run_directory_are_written_again_on_resume(tmp_path, capsys):
    recipe = {**RECIPE, "cache_dir": str(tmp_path / "cache")}
    first = edgedistill.run(recipe, out=tmp_path / "run", progress=False)
    for record in ("teacher/summary.json", "offline/seed0/summary.json"):
        (tmp_path / "run" / record).write_bytes(b'{"cache_key": "trunc')  # a record cut short by a crash or an edit
    capsys.readouterr()
    again = edgedistill.run(recipe, out=tmp_path / "run", progress=False)
    assert capsys.readouterr().err.count("is damaged (not valid JSON); it is written again") == 2
    assert [r["metrics"] for r in again["rows"]] == [r["metrics"] for r in first["rows"]]
    for record in ("teacher/summary.json", "offline/seed0/summary.json"):
        json.loads((tmp_path / "run" / record).read_text())  # valid again

# -- training checkpoints -------------------------------------------------------------------------------------------
def _fit(directory, epochs=3):
    splits = toy_splits(n=48)
    torch.manual_seed(0)
    method = Supervised(tiny_net(), splits.info)
    cfg = TrainConfig(epochs=epochs, batch_size=16, lr=1e-2)
    return Trainer(EngineConfig(progress=False, threads=1)).fit(method, splits, Stage("stage", directory, 0, cfg))


def _edit_a_weight(path):  # a flipped bit inside a tensor: torch loads it without complaint, the digest does not
    state = torch.load(path, weights_only=True)
    next(iter(state["networks"]["student"].values())).view(-1)[0] += 1.0
    torch.save(state, path)


@pytest.mark.parametrize("damage", ["truncated", "edited weight", "best.pt gone"])
def test_a_damaged_last_checkpoint_is_moved_aside_and_the_stage_restarts_to_the_same_result(tmp_path, capsys, damage):
    straight = _fit(tmp_path / "straight")
    stage = tmp_path / "damaged"
    _fit(stage)
    last = stage / "checkpoints" / "last.pt"
    if damage == "truncated":
        last.write_bytes(last.read_bytes()[:200])
    elif damage == "edited weight":
        _edit_a_weight(last)
    else:
        (stage / "checkpoints" / "best.pt").unlink()
    capsys.readouterr()
    again = _fit(stage)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "restarting this stage from epoch 0" in err[0]
    assert list((stage / "checkpoints").glob("last.pt.corrupt-*"))
    assert (again["val"], again["test"]) == (straight["val"], straight["test"])
    epochs = [json.loads(line)["epoch"] for line in (stage / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2, 3]


def test_a_checkpoint_digest_catches_an_edited_tensor(tmp_path):
    path = tmp_path / "last.pt"
    ckpt.save(path, {"networks": {"student": dict(STATE)}, "epoch": 1}, digest_content=True)
    assert ckpt.DIGEST_KEY not in ckpt.load(path) and ckpt.load(path)["epoch"] == 1
    state = torch.load(path, weights_only=True)
    state["networks"]["student"]["w"][0] = 5.0
    torch.save(state, path)
    with pytest.raises(ckpt.UnreadableCheckpoint, match="does not match the sha256"):
        ckpt.load(path)


# -- user checkpoints -----------------------------------------------------------------------------------------------
def _user_file(kind, path):
    torch.save(tiny_net().state_dict(), path)
    good = path.read_bytes()
    if kind == "truncated zip":
        path.write_bytes(good[: len(good) // 2])
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "random bytes":
        path.write_bytes(np.random.default_rng(0).bytes(4096))
    elif kind == "npz renamed .pt":
        with open(path, "wb") as fh:
            np.savez(fh, a=np.zeros(3))
    elif kind == "pickled whole model":
        torch.save(tiny_net(), path)
    elif kind == "a bare tensor":
        torch.save(torch.zeros(3), path)


@pytest.mark.parametrize("kind", ["truncated zip", "empty", "random bytes", "npz renamed .pt", "pickled whole model", "a bare tensor"])
@pytest.mark.parametrize("role", ["student", "teacher"])
def test_a_damaged_user_checkpoint_is_one_line_exit_2(tmp_path, kind, role):
    weights = tmp_path / "w.pt"
    _user_file(kind, weights)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({**RECIPE, role: {**RECIPE[role], "checkpoint": "w.pt"}}))
    result = CliRunner().invoke(app, ["run", str(recipe), "--out", str(tmp_path / "out"), "--no-progress"])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and str(weights) in lines[0] and "torch.save(model.state_dict(), path)" in lines[0], result.output
    assert not (tmp_path / "out").exists() and not (tmp_path / "model-cache").exists()  # refused before writing


# -- temporary files ------------------------------------------------------------------------------------------------
def _dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_temporary_files_are_removed_and_live_ones_kept(tmp_path):
    old = time.time() - 3600
    names = {
        f".weights.pt.{_dead_pid()}-abc123xy.tmp": True,  # its writer is dead
        f".weights.pt.{os.getppid()}-abc123xy.tmp": False,  # a live writer (our parent): kept
        f".summary.json.{os.getpid()}-zzzzzz99.tmp": False,  # this process is writing it
        ".summary.json.k3j4h5g6.tmp": False,  # no pid and fresh: may be a writer of an older version
        ".key.json.q1w2e3r4.tmp": True,  # no pid and untouched for an hour
        "weights.tmp": False,  # not atomic_write's pattern
        "notes.txt": False,
    }
    for name in names:
        (tmp_path / name).write_text("x")
    os.utime(tmp_path / ".key.json.q1w2e3r4.tmp", (old, old))
    removed = eio.remove_stale_temp(tmp_path)
    assert {p.name for p in removed} == {n for n, stale in names.items() if stale}
    assert {p.name for p in tmp_path.iterdir()} == {n for n, stale in names.items() if not stale}
    assert eio.remove_stale_temp(tmp_path / "missing") == []


def test_atomic_write_names_its_temporary_file_with_its_pid(tmp_path):
    seen = []
    eio.atomic_write(tmp_path / "f.txt", lambda fh: seen.extend(os.listdir(tmp_path)) or fh.write("ok"))
    assert len(seen) == 1 and seen[0].startswith(f".f.txt.{os.getpid()}-") and seen[0].endswith(".tmp")
    assert os.listdir(tmp_path) == ["f.txt"]


def test_a_killed_writers_temporary_files_are_gone_after_the_next_cache_write(tmp_path):
    cache = ModelCache(tmp_path / "c")
    partial = cache.root / "k.partial"
    (partial / "checkpoints").mkdir(parents=True)
    stale = [partial / f".weights.pt.{_dead_pid()}-a1b2c3d4.tmp", partial / "checkpoints" / f".last.pt.{_dead_pid()}-e5f6g7h8.tmp"]
    for path in stale:
        path.write_bytes(b"half")
    cache.get_or_train("k", {}, lambda p: (STATE, SUMMARY))
    assert not list((tmp_path / "c").rglob("*.tmp"))


# -- persistence-image chunks ---------------------------------------------------------------------------------------
PI = {"resolution": 8, "spread": 0.05, "min_bd": -1.0, "max_bd": 1.0, "threshold": 0.0, "rips": False}


def _windows():
    t = np.linspace(0, 6.28, 24)
    return np.stack([np.stack([np.sin(t * (k + 1)), np.cos(t * (k + 2))]) for k in range(8)])


@pytest.mark.parametrize("damage", ["flipped", "truncated", "sidecar gone, values out of range"])
def test_a_damaged_persistence_image_chunk_is_recomputed(tmp_path, capsys, damage):
    x = _windows()
    good = topo.compute_pis(x, PI, cache_dir=tmp_path, workers=1, chunk=4, progress=False)
    chunks = sorted((tmp_path / "pi").glob("*/rows_*.npy"))
    assert len(chunks) == 2 and all(c.with_suffix(".sha256").is_file() for c in chunks)
    if damage == "flipped":
        _flip(chunks[1], at=0.9)
    elif damage == "truncated":
        chunks[1].write_bytes(chunks[1].read_bytes()[:-40])
    else:
        chunks[1].with_suffix(".sha256").unlink()
        arr = np.load(chunks[1])
        arr[0, 0, 0, 0] = 7.0
        np.save(chunks[1], arr)
    recomputed = []
    again = topo.compute_pis(x, PI, cache_dir=tmp_path, workers=1, chunk=4, progress=False, on_chunk=recomputed.append)
    assert recomputed == [1] and np.array_equal(again, good)
    assert "computing it again" in capsys.readouterr().err
    assert len(list((tmp_path / "quarantine").glob("pi-*.npy"))) == 1


def test_a_chunk_from_before_sidecars_is_adopted_when_it_loads(tmp_path):
    x = _windows()
    good = topo.compute_pis(x, PI, cache_dir=tmp_path, workers=1, chunk=4, progress=False)
    for side in (tmp_path / "pi").glob("*/*.sha256"):
        side.unlink()
    recomputed = []
    again = topo.compute_pis(x, PI, cache_dir=tmp_path, workers=1, chunk=4, progress=False, on_chunk=recomputed.append)
    assert recomputed == [] and np.array_equal(again, good)
    assert len(list((tmp_path / "pi").glob("*/*.sha256"))) == 2


def test_stale_temporary_files_in_sub_folders_are_removed_when_asked(tmp_path):
    deep = tmp_path / "teacher" / "seed0"
    deep.mkdir(parents=True)
    stale = deep / f".summary.json.{_dead_pid()}-a1b2c3d4.tmp"
    stale.write_text("x")
    assert eio.remove_stale_temp(tmp_path) == [] and stale.exists()
    assert eio.remove_stale_temp(tmp_path, recursive=True) == [stale] and not stale.exists()


def test_a_damaged_metrics_log_does_not_stop_a_resume(tmp_path):
    stage = tmp_path / "stage"
    _fit(stage, epochs=2)
    log = stage / "metrics.jsonl"
    lines = log.read_bytes().splitlines()
    log.write_bytes(b"\n".join([lines[0], b"\xff\xfe not json", b"[1, 2]", b'{"no": "epoch"}', lines[1]]) + b"\n")
    _fit(stage, epochs=2)  # resumes at epoch 2: nothing left to train
    assert [json.loads(line)["epoch"] for line in log.read_text().splitlines()] == [1, 2]
