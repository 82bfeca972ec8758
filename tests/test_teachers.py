"""Several teachers: the `teachers` list, assistants distilled from an earlier teacher (cached with their
parent's key), teachers on a training subset, channel-subset views, and extra evaluated networks."""
import json

import numpy as np
import pytest
import torch
from torch import nn

import edgedistill
from edgedistill.config import load_recipe
from edgedistill.data.prepare import channel_views
from edgedistill.data.raw import RawData
from edgedistill.errors import UserInputError
from edgedistill.methods.offline import OfflineDistillation
from edgedistill.models.ensemble import ProbabilityEnsemble
from edgedistill.registry import METHODS

KD = [{"loss": "ce", "weight": 0.5}, {"loss": "kd", "weight": 0.5, "temperature": 2}]
BASE = {
    "name": "chain",
    "data": {"name": "synthetic", "params": {"n_subjects": 5, "windows_per_subject": 12, "length": 32}},
    "student": {"model": "cnn1d", "width": 4, "depth": 2},
    "method": {"name": "offline", "terms": KD},
    "train": {"epochs": 1, "batch_size": 16},
    "seeds": [0, 1],
    "engine": {"progress": False},
}
CHAIN = [
    {"name": "big", "model": "fcn", "width": 0.25, "train": {"epochs": 2, "batch_size": 16}},
    {"name": "ta", "model": "cnn1d", "width": 8, "depth": 2, "distill_from": "big", "train": {"epochs": 1, "batch_size": 16}, "terms": KD},
    {"name": "half", "model": "cnn1d", "width": 4, "depth": 2, "train_subset": 0.5, "seed": 3, "train": {"epochs": 1, "batch_size": 16}},
]


def _recipe(**changes):
    return {**json.loads(json.dumps(BASE)), **changes}


def _keys(cache):
    return {json.loads((p / "key.json").read_text())["role"] + ":" + json.dumps(json.loads((p / "key.json").read_text())["model"]): p.name
            for p in (cache / "models").iterdir() if (p / "key.json").is_file()}


def test_teachers_list_trains_chain_and_subset_and_reports_each(tmp_path):
    summary = edgedistill.run(_recipe(teachers=CHAIN), out=tmp_path / "a", progress=False)
    roles = [(r["model"], r["role"]) for r in summary["rows"]]
    assert roles[:3] == [("big: fcn", "teacher"), ("ta: cnn1d", "assistant (from big)"), ("half: cnn1d", "teacher")]
    assert roles[3:] == [("cnn1d", "student alone"), ("cnn1d + ce+kd", "method")]
    ta = json.loads((tmp_path / "a" / "ta" / "summary.json").read_text())
    big = json.loads((tmp_path / "a" / "big" / "summary.json").read_text())
    # The assistant was trained by KD from its parent, and its cache entry records the parent's key.
    assert ta["method"]["method"] == "offline" and ta["method"]["terms"][1]["loss"] == "kd"
    entry = json.loads((tmp_path / "model-cache" / "models" / ta["cache_key"] / "key.json").read_text())
    assert entry["distilled_from"] == big["cache_key"]
    half = json.loads((tmp_path / "model-cache" / "models" / json.loads((tmp_path / "a" / "half" / "summary.json").read_text())["cache_key"] / "key.json").read_text())
    assert half["train_subset"] == 0.5
    # Teachers shared by both seeds are one model each (n = 1); the method has both seeds.
    assert summary["rows"][0]["metrics"]["acc"]["n"] == 1 and summary["rows"][4]["metrics"]["acc"]["n"] == 2

    # A second run reuses every teacher; changing the parent retrains the assistant (new key), not the subset one.
    edgedistill.run(_recipe(teachers=CHAIN), out=tmp_path / "b", progress=False)
    assert json.loads((tmp_path / "b" / "ta" / "summary.json").read_text())["cached"] is True
    changed = json.loads(json.dumps(CHAIN))
    changed[0]["train"]["epochs"] = 3
    edgedistill.run(_recipe(teachers=changed), out=tmp_path / "c", progress=False)
    assert json.loads((tmp_path / "c" / "ta" / "summary.json").read_text())["cached"] is False
    assert json.loads((tmp_path / "c" / "half" / "summary.json").read_text())["cached"] is True


def test_training_subset_really_is_a_subset(tmp_path):
    from edgedistill.data import prepare_data

    splits = prepare_data(load_recipe(BASE).data)
    sub = splits.train_subset(0.5, seed=3)
    again = splits.train_subset(0.5, seed=3)
    other = splits.train_subset(0.5, seed=4)
    assert len(sub.train) == round(0.5 * len(splits.train))
    assert torch.equal(sub.train.x, again.train.x) and not torch.equal(sub.train.x, other.train.x)
    assert sub.val is splits.val and sub.test is splits.test


@pytest.mark.parametrize(
    "teachers, message",
    [
        ([{"model": "fcn", "distill_from": "nobody", "terms": KD}], "teachers[0].distill_from: 'nobody' is not an earlier teacher"),
        ([{"name": "a", "model": "fcn"}, {"name": "a", "model": "fcn"}], "teachers[1].name: 'a' is used twice"),
        ([{"name": "a", "model": "fcn"}, {"model": "fcn", "distill_from": "a"}], "teachers[1].terms: a teacher distilled from 'a' needs loss terms"),
        ([{"model": "fcn", "terms": KD}], "teachers[0].terms: only a teacher with 'distill_from' takes loss terms"),
        ([{"model": "fcn", "train_subset": 1.5}], "train_subset"),
    ],
)
def test_bad_teacher_lists_are_refused(teachers, message):
    with pytest.raises(UserInputError, match=message.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(")):
        load_recipe(_recipe(teachers=teachers))


def test_teacher_and_teachers_together_are_refused():
    with pytest.raises(UserInputError, match="either 'teacher'"):
        load_recipe(_recipe(teacher={"model": "fcn"}, teachers=[{"model": "fcn"}]))


def test_missing_teacher_view_names_the_list_entry(tmp_path):
    bad = _recipe(teachers=[{"name": "t", "model": "fcn", "view": "full"}])
    with pytest.raises(UserInputError, match=r"teachers\[0\]\.view: the train split has no view 'full'.*data.views"):
        edgedistill.run(bad, out=tmp_path / "x", progress=False)
    assert not (tmp_path / "x").exists()


def _raw(n=6, ch=4, length=5, test=True):
    x = np.arange(n * ch * length, dtype=float).reshape(n, ch, length)
    return RawData(x=x, y=np.arange(n) % 2, task="classification", test_x=x + 1000 if test else None,
                   test_y=np.arange(n) % 2 if test else None)


def test_channel_views_pick_channels_for_student_and_teacher_views():
    raw = channel_views(_raw(), {"x": [0, 2], "full": [0, 1, 2, 3], "rest": [3]})
    assert raw.x.shape == (6, 2, 5) and raw.views["full"].shape == (6, 4, 5) and raw.views["rest"].shape == (6, 1, 5)
    np.testing.assert_array_equal(raw.x[:, 1], raw.views["full"][:, 2])  # "x" is cut from the original input
    np.testing.assert_array_equal(raw.test_views["rest"][:, 0], raw.test_x[:, 0] * 0 + raw.test_views["full"][:, 3])
    assert raw.test_x.shape == (6, 2, 5)


@pytest.mark.parametrize("views, message", [({"x": [0, 9]}, "data.views.x: expected distinct channel indices in 0..3"),
                                            ({"a": []}, "data.views.a"), ({"a": [1, 1]}, "data.views.a")])
def test_bad_channel_views_name_the_key(views, message):
    with pytest.raises(UserInputError, match=message):
        channel_views(_raw(), views)


def test_channel_views_on_a_bundled_style_run(tmp_path):
    recipe = _recipe(
        data={"name": "synthetic", "params": {"n_subjects": 5, "windows_per_subject": 12, "length": 32}, "views": {"x": [0], "full": [0, 1, 2]}},
        teacher={"model": "fcn", "width": 0.25, "view": "full", "train": {"epochs": 1, "batch_size": 16}},
        seeds=[0],
    )
    summary = edgedistill.run(recipe, out=tmp_path / "v", progress=False)
    assert [r["role"] for r in summary["rows"]] == ["teacher", "student alone", "method"]


@METHODS.register("_test_with_peer")
class _WithPeer(OfflineDistillation):
    """Test-only regime: the offline method plus a co-trained peer reported through ``evaluated()``."""

    steps_seen = 0

    def __init__(self, student, info, teacher, terms, teacher_view="x", train=None, **params):
        super().__init__(student, info, teacher, terms, teacher_view, train, **params)
        self.networks["peer"] = nn.Sequential(nn.Flatten(), nn.LazyLinear(info.n_outputs))
        self.networks["peer"](torch.zeros(1, *info.input_shape))
        self.val_rows = None

    def setup(self, train, device, val=None):
        super().setup(train, device, val)
        self.val_rows = len(val)

    def training_step(self, batch, step):
        terms = super().training_step(batch, step)
        terms["peer_ce"] = nn.functional.cross_entropy(self.networks["peer"](batch["x"]), batch["y"])
        return terms

    def after_step(self, step):
        type(self).steps_seen += 1

    def evaluated(self):
        return {"peer": self.networks["peer"], "ensemble": ProbabilityEnsemble([self.networks["student"], self.networks["peer"]])}


def test_extra_networks_are_logged_and_reported_and_hooks_run(tmp_path):
    recipe = _recipe(method={"name": "_test_with_peer", "terms": KD}, teacher=CHAIN[0] | {"name": None}, seeds=[0])
    _WithPeer.steps_seen = 0
    summary = edgedistill.run(recipe, out=tmp_path / "p", progress=False)
    rows = {r["model"]: r for r in summary["rows"]}
    assert rows["peer"]["role"].startswith("also trained") and rows["ensemble"]["params"] == rows["peer"]["params"] + rows["cnn1d"]["params"]
    log = [json.loads(l) for l in (tmp_path / "p" / "_test_with_peer" / "seed0" / "metrics.jsonl").read_text().splitlines()]
    assert set(log[0]["val_others"]) == {"peer", "ensemble"} and "peer_ce" in log[0]["train"]
    assert _WithPeer.steps_seen > 0
    assert "The deliverable is the **method** row" in (tmp_path / "p" / "report.md").read_text()


def test_probability_ensemble_averages_probabilities():
    a, b = nn.Linear(3, 4), nn.Linear(3, 4)
    x = torch.randn(5, 3)
    ens = ProbabilityEnsemble([a, b], weights=[3, 1])
    expected = 0.75 * torch.softmax(a(x), 1) + 0.25 * torch.softmax(b(x), 1)
    torch.testing.assert_close(torch.softmax(ens(x), 1), expected)
