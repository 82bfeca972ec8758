"""Staged training (methods/stages.py, engine/staged.py, docs/stages.md): the recipe syntax and its refusals, what
each stage trains and freezes, and a staged run resumed inside a stage and between stages equal to the run straight."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from edgedistill.config import StageConfig, load_recipe
from edgedistill.engine import checkpoint as ckpt
from edgedistill.errors import UserInputError
from edgedistill.experiment.build import build_network
from edgedistill.experiment.runner import plan
from edgedistill.methods.offline import OfflineDistillation
from edgedistill.methods.stages import enter_stage, stage_epochs
from edgedistill.progress import StageProgress
from helpers import TINY_RECIPE, cli_run, recipe_file, tiny_net, toy_splits

FT_STAGES = [
    {"name": "paraphraser", "epochs": 2, "train": ["ft.paraphraser"],
     "terms": [{"loss": "ft", "objective": "reconstruction", "student_tap": "feat", "teacher_tap": "feat"}]},
    {"name": "transfer", "terms": [{"loss": "ce"}, {"loss": "ft", "weight": 10, "student_tap": "feat", "teacher_tap": "feat"}]},
]


def staged(stages: list[dict], epochs: int = 4, **method) -> dict:
    d = json.loads(json.dumps(TINY_RECIPE))
    d.update(seeds=[0], baseline=False, train={**d["train"], "epochs": epochs})
    d["method"] = {"name": "offline", "stages": stages, **method}
    return d


# ---------------------------------------------------------------- the recipe syntax


@pytest.mark.parametrize("change, message", [
    (lambda d: d["method"]["stages"][0].update(epoch=2), r"method.stages.0.epoch: unknown key"),
    (lambda d: d["method"].update(terms=[{"loss": "ce"}]), "no method.terms"),
    (lambda d: d["method"].update(name="dml"), "staged training is for method 'offline'"),
    (lambda d: d["method"]["stages"][1].update(name="paraphraser"), "its own name"),
    (lambda d: d["method"]["stages"][0].update(terms=[]), r"method.stages.0.terms"),
    (lambda d: d["method"]["stages"][0].update(name="../up"), r"method.stages.0.name"),
])
def test_malformed_stage_lists_are_refused_with_their_key(change, message):
    d = staged(json.loads(json.dumps(FT_STAGES)))
    change(d)
    with pytest.raises(UserInputError, match=message):
        load_recipe(d)


@pytest.mark.parametrize("epochs, total, want", [
    ([2, None], 5, [2, 3]),  # the last takes the rest
    ([2, 3], 5, [2, 3]),
])
def test_stage_epochs_add_up(epochs, total, want):
    d = staged([{**s, "epochs": e} for s, e in zip(FT_STAGES, epochs)], epochs=total)
    assert [s.epochs for s in stage_epochs(load_recipe(d))] == want


@pytest.mark.parametrize("epochs, total, message", [
    ([None, 2], 4, r"method.stages\[0\].epochs: every stage but the last gives its epochs"),
    ([2, 3], 4, r"method.stages: the stages' epochs \[2, 3\] must add up to train.epochs \(4\)"),
    ([4, None], 4, r"the last stage at least 1"),
    ([1, 1], 4, r"must add up to train.epochs \(4\)"),
])
def test_stage_epochs_that_do_not_add_up_are_refused(epochs, total, message):
    d = staged([{**s, "epochs": e} for s, e in zip(FT_STAGES, epochs)], epochs=total)
    with pytest.raises(UserInputError, match=message):
        stage_epochs(load_recipe(d))


def _method(stages: list[dict]) -> OfflineDistillation:
    """A staged offline method on tiny in-memory nets (tap "2": the ReLU after the first convolution)."""
    splits = toy_splits()
    torch.manual_seed(0)
    teacher = tiny_net(width=6).eval()
    configs = [StageConfig(**{"epochs": 1, **s}) for s in stages]
    return OfflineDistillation(tiny_net(), splits.info, teacher, [], train=splits.train, stages=configs)


FIT = {"loss": "fitnet", "student_tap": "2", "teacher_tap": "2"}


@pytest.mark.parametrize("train, message", [
    (["student", "kd"], r"method.stages\[0\].train\[1\]: 'kd' is not trainable here; .*student, fitnet"),
    (["student", "fitnet.nope"], r"train\[1\]: 'fitnet.nope': 'fitnet' has no module 'nope' \(its children: adapter\)"),
    (["student.2", "fitnet"], r"train\[0\]: 'student.2' has no parameters to train"),
    (["student"], r"method.stages\[0\].train: leaves 'fitnet' untrained, which term 'fitnet' \(method.stages\[0\].terms\[0\]\) trains"),
])
def test_a_train_list_naming_nothing_trainable_or_leaving_a_terms_module_untrained_is_refused(train, message):
    with pytest.raises(UserInputError, match=message):
        _method([{"name": "hint", "terms": [FIT], "train": train}, {"name": "kd", "terms": [{"loss": "kd"}]}])


def test_ft_factor_stage_must_train_the_translator():
    stages = [{**FT_STAGES[0], "terms": [{**FT_STAGES[0]["terms"][0], "student_tap": "2", "teacher_tap": "2"}]},
              {"name": "transfer", "terms": [{"loss": "ft", "student_tap": "2", "teacher_tap": "2"}],
               "train": ["student", "ft.paraphraser"]}]
    with pytest.raises(UserInputError, match=r"method.stages\[1\].train: leaves 'ft.translator' untrained"):
        _method(stages)


def test_each_stage_trains_what_it_lists_and_freezes_the_rest_in_eval_mode():
    m = _method([{"name": "hint", "terms": [FIT], "train": ["student.0", "fitnet"]},
                 {"name": "kd", "terms": [{"loss": "ce"}, {"loss": "kd"}]}])
    student, adapter = m.networks["student"], m.networks["loss_fitnet"]
    # Built in its last stage (what a caller without the staged fit trains): the student; the adapter frozen.
    assert [t.label for t in m.terms] == ["ce", "kd"]
    assert all(p.requires_grad for p in student.parameters()) and not any(p.requires_grad for p in adapter.parameters())
    assert m.frozen_modules == [adapter]
    enter_stage(m, 0)
    assert [t.label for t in m.terms] == ["fitnet"]
    assert [n for n, p in student.named_parameters() if p.requires_grad] == ["0.weight", "0.bias"]
    assert all(p.requires_grad for p in adapter.parameters())
    # Each frozen subtree once, by its top module: the student's modules after the first convolution.
    assert m.frozen_modules == [student[i] for i in range(1, 7)]
    for net in m.networks.values():
        net.train()
    splits = toy_splits()
    batch = next(iter(splits.train.batches(8, shuffle=False)))
    terms = m.training_step(batch, None)  # type: ignore[arg-type]
    assert set(terms) == {"fitnet"} and not student[1].training and student[0].training
    assert m.describe()["stages"][0]["train"] == ["student.0", "loss_fitnet"]


def test_terms_of_later_stages_share_a_module_only_with_the_same_loss_settings_and_taps():
    ft2 = {"loss": "ft", "student_tap": "2", "teacher_tap": "2"}
    m = _method([{"name": "p", "terms": [{**ft2, "objective": "reconstruction"}], "train": ["ft.paraphraser"]},
                 {"name": "t", "terms": [{"loss": "ce"}, ft2]}])
    assert m.stages[0].terms[0].fn is m.stages[1].terms[1].fn and [k for k in m.networks] == ["student", "loss_ft"]
    m = _method([{"name": "p", "terms": [{**ft2, "objective": "reconstruction"}], "train": ["ft.paraphraser"]},
                 {"name": "t", "terms": [{"loss": "ce"}, {**ft2, "factor_rate": 0.25}]}])
    assert m.stages[0].terms[0].fn is not m.stages[1].terms[1].fn and "loss_ft_" in m.networks


def test_a_bad_stage_list_exits_2_before_anything_is_written(tmp_path):
    d = staged([{**FT_STAGES[0], "train": ["student"]}, FT_STAGES[1]])
    result = cli_run(recipe_file(tmp_path, d), "--out", tmp_path / "run")
    assert result.exit_code == 2, result.output
    assert "method.stages[0].train: leaves 'ft.paraphraser' untrained" in result.output
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------- a staged run, straight and resumed


def _weights(folder: Path) -> dict[str, dict[str, torch.Tensor]]:
    return ckpt.load(folder / "checkpoints" / "last.pt")["networks"]


def _log(folder: Path) -> list[dict]:
    """The epochs' records without their durations."""
    return [{k: v for k, v in json.loads(x).items() if k != "time_s"} for x in (folder / "metrics.jsonl").read_text().splitlines()]


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_staged_run_resumed_inside_and_between_stages_equals_the_run_straight(tmp_path, monkeypatch):
    import edgedistill

    d = staged(FT_STAGES, epochs=3)  # paraphraser 2 epochs, transfer 1 (inside the last stage is the loop's own resume)
    straight = tmp_path / "straight"
    snapshots = {1: tmp_path / "inside_first"}  # after epoch 1 of the first stage
    notes = {"n": 0}
    note = StageProgress.note

    def snapshot(self, text):  # the loop notes each epoch right after its checkpoint: a kill there leaves this
        note(self, text)
        notes["n"] += 1
        if notes["n"] in snapshots:
            shutil.copytree(straight, snapshots[notes["n"]])

    monkeypatch.setattr(StageProgress, "note", snapshot)
    edgedistill.run(d, out=straight, progress=False)
    monkeypatch.setattr(StageProgress, "note", note)
    method_dir = straight / "offline" / "seed0"
    first = method_dir / "stages" / "paraphraser"
    assert [json.loads(x)["epoch"] for x in (first / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    assert set(json.loads((first / "metrics.jsonl").read_text().splitlines()[0])["train"]) == {"total", "ft"}
    assert set(json.loads((method_dir / "metrics.jsonl").read_text().splitlines()[0])["train"]) == {"total", "ce", "ft"}
    summary = json.loads((method_dir / "summary.json").read_text())
    assert [s["name"] for s in summary["method"]["stages"]] == ["paraphraser", "transfer"]
    assert summary["epochs"] == 1

    # What each stage trained: the paraphraser only in the first (the student untouched, BatchNorm statistics too),
    # then the student and the translator, the paraphraser frozen.
    w1, w2 = _weights(first), _weights(method_dir)
    recipe = load_recipe(d)
    student0 = build_network(recipe.student, plan(recipe).splits.info, "student", seed=0).state_dict()  # as initialised
    assert _same(w1["student"], student0)
    para = lambda w: {k: v for k, v in w["loss_ft"].items() if k.startswith("paraphraser.")}  # noqa: E731
    trans = lambda w: {k: v for k, v in w["loss_ft"].items() if k.startswith("translator.")}  # noqa: E731
    assert _same(para(w1), para(w2)) and not _same(trans(w1), trans(w2)) and not _same(w1["student"], w2["student"])

    # Between stages: the first stage finished, the second not begun.
    between = tmp_path / "between"
    shutil.copytree(straight, between)
    for name in ("metrics.jsonl", "summary.json", "checkpoints"):
        path = between / "offline" / "seed0" / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    for run in (between, *snapshots.values()):
        edgedistill.run(d, out=run, progress=False)
        again = run / "offline" / "seed0"
        assert _same(_weights(again)["student"], w2["student"]) and _same(_weights(again)["loss_ft"], w2["loss_ft"]), run.name
        assert _log(again) == _log(method_dir), run.name
        assert _same(_weights(again / "stages" / "paraphraser")["loss_ft"], w1["loss_ft"]), run.name
