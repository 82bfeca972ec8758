"""A recipe's `augment` section: what the student and the teacher see, teacher-output caching switching itself
off, mixed labels, the student-alone baseline trained on the same augmentation, and refusals before training.
The augmentations here are registered by the test itself, so these checks do not depend on the library's: one
with a Params model (its values validated when the pipeline is built), one without (only its keyword names checked)."""
import json

import pytest
import torch
from pydantic import Field

import edgedistill
from edgedistill.augment.pipeline import Augmenter, step_generator
from edgedistill.config import load_recipe
from edgedistill.data.dataset import DataInfo
from edgedistill.errors import UserInputError
from edgedistill.losses.response import ce
from edgedistill.params import Params
from edgedistill.registry import AUGMENTS


class _FlipSignParams(Params):
    p: float = Field(0.5, ge=0, le=1, description="probability of the sign flip")


@AUGMENTS.register("_test_flip_sign", kind="sample", data="any", label_preserving=True, params=_FlipSignParams)
def _flip_sign(x, generator, p: float = 0.5):
    """Test-only: multiply each sample by -1 with probability p."""
    keep = torch.rand(len(x), generator=generator) >= p
    return torch.where(keep.view(-1, *[1] * (x.dim() - 1)).to(x.device), x, -x)


@AUGMENTS.register("_test_pair_mix", kind="batch", data="any", label_preserving=False)
def _pair_mix(x, y, generator, lam: float = 0.7):
    """Test-only: mix every sample with the next one, fixed lambda."""
    return lam * x + (1 - lam) * x.roll(1, 0), lam * y + (1 - lam) * y.roll(1, 0)


KD = [{"loss": "ce", "weight": 0.5}, {"loss": "kd", "weight": 0.5, "temperature": 2}]
BASE = {
    "name": "aug",
    "data": {"name": "synthetic", "params": {"n_subjects": 5, "windows_per_subject": 12, "length": 32}},
    "teacher": {"model": "fcn", "width": 0.25, "train": {"epochs": 1, "batch_size": 16}},
    "student": {"model": "cnn1d", "width": 4, "depth": 2},
    "method": {"name": "offline", "terms": KD},
    "train": {"epochs": 2, "batch_size": 16},
    "seeds": [0],
    "engine": {"progress": False},
}


def _recipe(**changes):
    return {**json.loads(json.dumps(BASE)), **changes}


INFO = DataInfo(name="t", task="classification", input_shape=(2, 8), n_outputs=3, classes=["a", "b", "c"],
                views={"x": (2, 8)}, sizes={"train": 6})


def _batch():
    g = torch.Generator().manual_seed(0)
    return {"x": torch.randn(6, 2, 8, generator=g), "y": torch.tensor([0, 1, 2, 0, 1, 2]), "index": torch.arange(6)}


@pytest.mark.parametrize("sees", ["same", "clean", "separate"])
def test_what_the_teacher_sees(sees):
    cfg = load_recipe(_recipe(augment={"student": [{"name": "_test_flip_sign", "p": 1.0}], "teacher_sees": sees,
                                       **({"teacher": [{"name": "_test_flip_sign", "p": 0.0}]} if sees == "separate" else {})})).augment
    batch = _batch()
    out = Augmenter(cfg, INFO)(batch, step_generator(0, 0))
    assert torch.equal(out["x"], -batch["x"]) and out["x_clean"] is batch["x"]
    expected = {"same": out["x"], "clean": batch["x"], "separate": batch["x"]}[sees]
    assert torch.equal(out["x_teacher"], expected)
    assert Augmenter(cfg, INFO).teacher_input_changes is (sees != "clean")


def test_mix_makes_soft_labels_that_ce_takes():
    cfg = load_recipe(_recipe(augment={"mix": "_test_pair_mix"})).augment
    out = Augmenter(cfg, INFO)(_batch(), step_generator(0, 0))
    assert out["y"].shape == (6, 3) and torch.allclose(out["y"].sum(1), torch.ones(6))
    logits = torch.randn(6, 3)
    hard = torch.tensor([0, 1, 2, 0, 1, 2])
    onehot = torch.nn.functional.one_hot(hard, 3).float()
    torch.testing.assert_close(ce(logits, onehot), ce(logits, hard))
    mixed = ce(logits, out["y"])
    by_hand = -(out["y"] * logits.log_softmax(1)).sum(1).mean()
    torch.testing.assert_close(mixed, by_hand)


def test_generator_depends_only_on_seed_and_step():
    a = torch.rand(3, generator=step_generator(1, 5))
    assert torch.equal(a, torch.rand(3, generator=step_generator(1, 5)))
    assert not torch.equal(a, torch.rand(3, generator=step_generator(1, 6)))
    assert not torch.equal(a, torch.rand(3, generator=step_generator(2, 5)))


def _method_summary(out):
    return json.loads((out / "offline" / "seed0" / "summary.json").read_text())


def test_teacher_cache_switches_off_when_the_teacher_input_changes_and_baseline_follows_the_augmentation(tmp_path):
    plain = edgedistill.run(_recipe(), out=tmp_path / "plain", progress=False)
    same = edgedistill.run(_recipe(augment={"student": ["_test_flip_sign"], "teacher_sees": "same"}), out=tmp_path / "same", progress=False)
    clean = edgedistill.run(_recipe(augment={"student": ["_test_flip_sign"], "teacher_sees": "clean"}), out=tmp_path / "clean", progress=False)
    assert _method_summary(tmp_path / "plain")["method"]["teacher_cached"] is True
    assert _method_summary(tmp_path / "same")["method"]["teacher_cached"] is False
    assert _method_summary(tmp_path / "clean")["method"]["teacher_cached"] is True
    alone = lambda d: json.loads((tmp_path / d / "student_alone" / "seed0" / "summary.json").read_text())  # noqa: E731
    # The student alone trains on what the student sees: a new cache entry for the augmented student, shared by
    # both teacher_sees variants (the teacher's input does not change the baseline).
    assert alone("same")["cache_key"] != alone("plain")["cache_key"]
    assert alone("clean")["cache_key"] == alone("same")["cache_key"] and alone("clean")["cached"] is True
    # Different inputs, different students (the augmentation is really applied in training).
    assert plain["rows"][2]["per_seed_test"] != same["rows"][2]["per_seed_test"] or \
        _method_summary(tmp_path / "plain")["val"] != _method_summary(tmp_path / "same")["val"]
    # Same recipe again: the same numbers (draws depend only on seed and step).
    again = edgedistill.run(_recipe(augment={"student": ["_test_flip_sign"], "teacher_sees": "same"}), out=tmp_path / "again", progress=False)
    assert again["rows"][2]["metrics"] == same["rows"][2]["metrics"]


def test_mixup_run_end_to_end(tmp_path):
    summary = edgedistill.run(_recipe(augment={"mix": "_test_pair_mix"}), out=tmp_path / "m", progress=False)
    assert [r["role"] for r in summary["rows"]] == ["teacher", "student alone", "method"]


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"augment": {"student": ["nope"]}}, r"augment\.student\[0\]\.name: unknown augmentation 'nope'"),
        ({"augment": {"student": ["_test_pair_mix"]}}, r"augment\.student\[0\]: '_test_pair_mix' is a batch-level augmentation"),
        ({"augment": {"mix": "_test_flip_sign"}}, r"augment\.mix: '_test_flip_sign' is a sample-level augmentation"),
        ({"augment": {"student": [{"name": "_test_flip_sign", "q": 1}]}},
         r"augment\.student\[0\]\.q: unknown parameter for augmentation '_test_flip_sign'; expected one of: p"),
        ({"augment": {"student": ["_test_flip_sign", {"name": "_test_flip_sign", "p": 1.5}]}},
         r"augment\.student\[1\]\.p: Input should be less than or equal to 1"),
        ({"augment": {"teacher_sees": "separate", "teacher": [{"name": "_test_flip_sign", "p": "often"}]}},
         r"augment\.teacher\[0\]\.p: Input should be a valid number"),
        ({"augment": {"student": [{"name": "jitter", "sigma": -0.1}]}}, r"augment\.student\[0\]\.sigma: Input should be greater than or equal to 0"),
        ({"augment": {"mix": {"name": "mixup", "alpha": True}}}, r"augment\.mix\.alpha: Input should be a valid number"),
        ({"augment": {"mix": {"name": "_test_pair_mix", "lamda": 0.5}}},
         r"augment\.mix\.lamda: unknown parameter for augmentation '_test_pair_mix'; expected one of: lam"),
        ({"augment": {"mix": "_test_pair_mix"}, "method": {"name": "offline", "terms": KD + [{"loss": "dkd"}]}},
         r"method\.terms\[2\]: loss 'dkd' reads integer labels"),
        ({"augment": {"mix": "_test_pair_mix"}, "method": {"name": "tfkd"}, "teacher": None}, r"augment\.mix: method 'tfkd'"),
        ({"augment": {"student": ["_test_flip_sign"]}, "teacher": None,
          "teachers": [{"model": "fcn", "width": 0.25, "train": {"epochs": 1}}, {"model": "fcn", "width": 0.25, "seed": 1, "train": {"epochs": 1}}],
          "method": {"name": "camkd"}}, r"augment\.teacher_sees: method 'camkd'"),
        ({"augment": {"teacher": ["_test_flip_sign"]}}, r"augment\.teacher: a teacher pipeline is only used with teacher_sees: separate"),
        ({"augment": {"mix": "_test_pair_mix", "teacher_sees": "clean"}}, r"augment\.mix: a mixed batch must reach the teacher"),
    ],
)
def test_bad_augment_sections_fail_before_training(tmp_path, changes, message):
    with pytest.raises(UserInputError, match=message):
        edgedistill.run(_recipe(**changes), out=tmp_path / "x", progress=False)
    assert not (tmp_path / "x").exists()


def test_averaged_teachers_follow_an_augmented_teacher_input(tmp_path):
    """multi_teacher supplies its soft target to the recipe's terms: with teacher_sees: same the teachers run live
    on the augmented batch (no cache), instead of the regime being refused."""
    teachers = [{"name": "a", "model": "fcn", "width": 0.25, "train": {"epochs": 1}},
                {"name": "b", "model": "fcn", "width": 0.25, "seed": 1, "train": {"epochs": 1}}]
    recipe = {**_recipe(augment={"student": ["_test_flip_sign"], "teacher_sees": "same"}), "teacher": None,
              "teachers": teachers, "method": {"name": "multi_teacher"}}
    summary = edgedistill.run(recipe, out=tmp_path / "mt", progress=False)
    row = next(r for r in summary["rows"] if r["role"] == "method")
    assert 0.0 <= row["metrics"]["acc"]["mean"] <= 1.0
