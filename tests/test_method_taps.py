"""Feature terms in the offline method: taps named in the recipe, checked before training, read by hooks.
No feature loss ships before the loss library (issue 3), so these tests register one of their own."""
import json

import pytest
import torch
import yaml
from typer.testing import CliRunner

from edgedistill.cli import app
from edgedistill.config import TermConfig
from edgedistill.errors import UserInputError
from edgedistill.methods.offline import OfflineDistillation
from edgedistill.methods.base import Step
from edgedistill.models import build_model
from edgedistill.registry import LOSSES
from tests.helpers import toy_splits

SEEN: dict[str, tuple] = {}


def _mean_match(student_feat: torch.Tensor, teacher_feat: torch.Tensor) -> torch.Tensor:
    """Test-only feature loss: squared difference of the two maps' means (shape-agnostic)."""
    SEEN["shapes"] = (tuple(student_feat.shape), tuple(teacher_feat.shape))
    return (student_feat.mean() - teacher_feat.mean()) ** 2


if "test_mean_match" not in LOSSES:
    LOSSES.register("test_mean_match")(_mean_match)

RECIPE = {
    "name": "taps",
    "data": {"name": "synthetic", "params": {"n_subjects": 5, "windows_per_subject": 12, "length": 32}},
    "teacher": {"model": "fcn", "width": 0.25, "train": {"epochs": 1, "batch_size": 16}},
    "student": {"model": "cnn1d", "width": 4, "depth": 2},
    "method": {"name": "offline", "terms": [
        {"loss": "ce", "weight": 1.0},
        {"loss": "test_mean_match", "weight": 1.0, "student_tap": "blocks.1", "teacher_tap": "emb"},
    ]},
    "train": {"epochs": 2, "batch_size": 16},
    "engine": {"progress": False},
}


def _run(tmp_path, recipe, out="run"):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return CliRunner().invoke(app, ["run", str(path), "--out", str(tmp_path / out), "--no-progress"])


def test_feature_terms_read_the_named_taps_and_are_logged(tmp_path):
    result = _run(tmp_path, RECIPE)
    assert result.exit_code == 0, result.output
    # student blocks.1 is (N, 4, 32); the teacher's default "emb" tap is its pooled embedding (N, 32)
    assert SEEN["shapes"][0][1:] == (4, 32) and len(SEEN["shapes"][1]) == 2
    line = json.loads((tmp_path / "run" / "offline" / "seed0" / "metrics.jsonl").read_text().splitlines()[0])
    assert set(line["train"]) == {"ce", "test_mean_match", "total"}
    summary = json.loads((tmp_path / "run" / "offline" / "seed0" / "summary.json").read_text())
    assert summary["method"]["teacher_cached"] is True  # the tapped features are cached by row with the logits


def test_cached_teacher_features_give_the_numbers_of_a_live_teacher(tmp_path):
    live = json.loads(json.dumps(RECIPE))
    live["method"]["params"] = {"cache_teacher": False}
    for recipe, out in ((RECIPE, "cached"), (live, "live")):
        result = _run(tmp_path, recipe, out=out)
        assert result.exit_code == 0, result.output
    runs = {out: (tmp_path / out / "offline" / "seed0") for out in ("cached", "live")}
    summaries = {k: json.loads((d / "summary.json").read_text()) for k, d in runs.items()}
    assert summaries["cached"]["method"]["teacher_cached"] and not summaries["live"]["method"]["teacher_cached"]
    lines = {k: [json.loads(x)["train"] for x in (d / "metrics.jsonl").read_text().splitlines()] for k, d in runs.items()}
    for cached, live in zip(lines["cached"], lines["live"], strict=True):
        assert cached == pytest.approx(live, rel=1e-6)
    assert summaries["cached"]["test"] == summaries["live"]["test"]


def test_a_feature_cache_over_its_budget_is_declined_and_says_why():
    import torch

    from edgedistill.data.dataset import DataInfo, TensorData
    from edgedistill.methods.teachers import Teachers
    from edgedistill.models.taps import FeatureTaps
    from edgedistill.models.zoo1d import fcn

    teacher = fcn(2, 3, (2, 32))
    teachers = Teachers([teacher], DataInfo("toy", "classification", (2, 32), 3, views={"x": (2, 32)}), "test")
    data = TensorData({"x": torch.randn(10, 2, 32)}, torch.zeros(10, dtype=torch.long))
    taps = [FeatureTaps(teacher, {"feat": "pool"}, detach=True)]  # a 128-float embedding per row
    assert teachers.cache(data, torch.device("cpu"), taps=taps, max_feature_bytes=10 * 128 * 4)
    logits, feat = teachers.lookup({"index": torch.tensor([4, 1])})
    with torch.no_grad(), taps[0]:
        live = teacher(data.views["x"][[4, 1]])
    assert torch.equal(logits, live) and torch.equal(feat, taps[0].outputs["feat"])
    assert not teachers.cache(data, torch.device("cpu"), taps=taps, max_feature_bytes=10 * 128 * 4 - 1)
    assert "5 KiB" not in teachers.declined and "more than" in teachers.declined and not teachers.cached

@pytest.mark.parametrize(
    "term, message",
    [
        ({"student_tap": "blocks.9"}, r"method.terms\[1\].student_tap: tap 'blocks.9' does not exist in CNN1d; valid paths: .*blocks.0"),
        ({"teacher_tap": "stages.7"}, r"method.terms\[1\].teacher_tap: tap 'stages.7' does not exist in FCN"),
    ],
)
def test_a_tap_that_does_not_exist_lists_the_valid_ones(tmp_path, term, message):
    import re

    recipe = json.loads(json.dumps(RECIPE))
    recipe["method"]["terms"][1].update(term)
    result = _run(tmp_path, recipe, out="never")
    assert result.exit_code == 2 and re.search(message, result.output), result.output
    assert not (tmp_path / "never").exists()


def test_a_tap_on_a_loss_that_reads_no_features_is_refused():
    splits = toy_splits()
    s, t = build_model("cnn1d", 3, 3, (16,)), build_model("cnn1d", 3, 3, (16,))
    with pytest.raises(UserInputError, match=r"method.terms\[0\].student_tap: loss 'kd' reads no student features"):
        OfflineDistillation(s, splits.info, t, [TermConfig(loss="kd", student_tap="blocks.0")])


def test_default_feat_tap_and_no_hook_left_behind():
    splits = toy_splits()
    s, t = build_model("cnn1d", 3, 3, (16,), width=4), build_model("cnn1d", 3, 3, (16,), width=6)
    m = OfflineDistillation(s, splits.info, t, [TermConfig(loss="test_mean_match")])
    terms = m.training_step(splits.train.batch(torch.arange(4)), Step(0, 0, 1, 1))
    assert SEEN["shapes"] == ((4, 4, 16), (4, 6, 16))  # both models' default "feat" tap
    assert torch.isfinite(terms["test_mean_match"])
    assert not s.blocks[-1]._forward_hooks and not t.blocks[-1]._forward_hooks


class _AdapterMSE(torch.nn.Module):
    """Test-only loss module: a linear adapter from the student's embedding to the teacher's."""

    def __init__(self, student_shape, teacher_shape, n_data, train_labels=None, scale: float = 1.0):
        super().__init__()
        self.built_with = (student_shape, teacher_shape, n_data, None if train_labels is None else len(train_labels))
        self.adapter = torch.nn.Linear(student_shape[0], teacher_shape[0])
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))
        self.scale = scale

    def forward(self, student_emb, teacher_emb, index):
        self.calls += 1
        assert index.dtype == torch.long
        return self.scale * ((self.adapter(student_emb) - teacher_emb) ** 2).mean()


if "test_adapter_mse" not in LOSSES:
    LOSSES.register("test_adapter_mse")(_AdapterMSE)


def test_loss_modules_are_built_from_shapes_trained_and_checkpointed(tmp_path):
    from edgedistill.config import EngineConfig, TrainConfig
    from edgedistill.engine import checkpoint as ckpt
    from edgedistill.engine.loop import Stage, Trainer

    splits = toy_splits()
    s, t = build_model("cnn1d", 3, 3, (16,), width=4), build_model("cnn1d", 3, 3, (16,), width=6)
    m = OfflineDistillation(s, splits.info, t, [TermConfig(loss="ce"), TermConfig(loss="test_adapter_mse", scale=2.0)], train=splits.train)
    module = m.networks["loss_test_adapter_mse"]
    assert module.built_with == ((4,), (6,), len(splits.train), len(splits.train)) and module.scale == 2.0
    before = module.adapter.weight.detach().clone()
    Trainer(EngineConfig(progress=False)).fit(m, splits, Stage("mod", tmp_path / "mod", 0, TrainConfig(epochs=2, batch_size=16)))
    assert not torch.equal(before, module.adapter.weight.detach())  # the adapter is optimised with the student
    best = ckpt.load(tmp_path / "mod" / "checkpoints" / "best.pt")
    assert "loss_test_adapter_mse" in best["networks"] and int(best["networks"]["loss_test_adapter_mse"]["calls"]) > 0


def test_a_bad_loss_module_hyperparameter_names_the_term():
    splits = toy_splits()
    s, t = build_model("cnn1d", 3, 3, (16,)), build_model("cnn1d", 3, 3, (16,))
    with pytest.raises(UserInputError, match=r"method.terms\[0\].scal: unknown parameter for loss 'test_adapter_mse'.*Did you mean 'scale'"):
        OfflineDistillation(s, splits.info, t, [TermConfig(loss="test_adapter_mse", scal=2.0)])




def test_a_term_may_name_several_taps_and_the_loss_gets_their_maps_in_order():
    """`student_tap: [stage1, feat]` gives the loss a list of maps (FSP, KD-SVD, ReviewKD); a bad name in the list
    is refused before training, naming the term's key; an empty list too."""
    splits = toy_splits()
    info = splits.info
    student, teacher = build_model("cnn1d", 3, 3, (16,), width=4), build_model("cnn1d", 3, 3, (16,), width=4)
    terms = [TermConfig(loss="fsp", weight=1.0, student_tap=["stage1", "feat"], teacher_tap=["stage1", "feat"])]
    method = OfflineDistillation(student, info, teacher, terms, train=splits.train)
    method.setup(splits.train, torch.device("cpu"))
    batch = {"x": splits.train.x[:8], "y": splits.train.y[:8], "index": torch.arange(8)}
    out = method.training_step(batch, Step(epoch=0, step=0, epochs=1, steps_per_epoch=1))
    assert out["fsp"].shape == () and torch.isfinite(out["fsp"])
    out["fsp"].backward()
    assert any(p.grad is not None for p in student.parameters())
    bad = [TermConfig(loss="fsp", student_tap=["stage1", "nope"], teacher_tap=["stage1", "feat"])]
    with pytest.raises(UserInputError, match=r"method.terms\[0\].student_tap: tap 'nope' does not exist"):
        OfflineDistillation(student, info, teacher, bad, train=splits.train)
    empty = [TermConfig(loss="fsp", student_tap=[], teacher_tap=["stage1", "feat"])]
    with pytest.raises(UserInputError, match=r"method.terms\[0\].student_tap: a list of taps must hold at least one"):
        OfflineDistillation(student, info, teacher, empty, train=splits.train)


def test_a_list_of_taps_for_a_loss_that_reads_one_map_is_refused_naming_the_key():
    from edgedistill.methods.terms import bind_terms

    with pytest.raises(UserInputError, match=r"method.terms\[0\].student_tap: loss 'fitnet' reads one student feature map, "
                                             r"got a list of 2 taps; give one tap"):
        bind_terms([TermConfig(loss="fitnet", student_tap=["stage1", "feat"], teacher_tap="feat")], "classification")
