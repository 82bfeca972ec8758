"""single_source: the KL vector of tests/reference/ref_others.py section 13 (no T²), crops drawn only from the one
source, the training step never reading the loop's batch inputs or labels (NaN batch), determinism per step, image
crops, errors, one run."""
import json

import pytest
import torch
from torch import nn

import edgedistill
from edgedistill.data.dataset import DataInfo, TensorData
from edgedistill.errors import UserInputError
from edgedistill.losses.response import kd
from edgedistill.methods.base import Step
from edgedistill.methods.single_source import SingleSourceDistillation, crop_resize_1d, crop_resize_2d, kl_no_t2
from tests.helpers import tiny_net, toy_splits

# tests/reference/ref_others.py: the shared inputs ZS, ZT; the section 13 test vector.
ZS = torch.tensor([[1.0, 2.0, 0.5, -1.0], [0.0, -0.5, 1.5, 0.3], [2.0, 0.1, -0.3, 0.7]], dtype=torch.float64)
ZT = torch.tensor([[2.0, 1.0, 0.0, -0.5], [0.2, 0.1, 2.5, -1.0], [1.5, 0.5, 0.0, 1.0]], dtype=torch.float64)


def test_spec_vector_kl_at_t8_without_t_squared():
    assert kl_no_t2(ZS, ZT, 8.0).item() == pytest.approx(0.003998, abs=1e-6)
    assert kl_no_t2(ZS, ZT, 8.0).item() == pytest.approx(kd(ZS, ZT, 8.0).item() / 64, rel=1e-12)
    assert kl_no_t2(ZT, ZT, 8.0).item() == pytest.approx(0.0, abs=1e-12)


def _method(splits, **params):
    torch.manual_seed(0)
    m = SingleSourceDistillation(tiny_net(), splits.info, tiny_net(width=16), train=splits.train, **params)
    m.setup(splits.train, torch.device("cpu"))
    return m


def test_a_nan_batch_leaves_the_student_finite_and_the_loss_unchanged():
    """The loop's batch only clocks the step: NaN inputs and nonsense labels change nothing."""
    splits = toy_splits()
    m = _method(splits, source_index=3)
    clean = splits.train.batch(torch.arange(16))
    poisoned = {**clean, "x": torch.full_like(clean["x"], float("nan")), "y": torch.full_like(clean["y"], -7)}
    step = Step(0, 5, 1, 10)
    a, b = m.training_step(clean, step)["kl"], m.training_step(poisoned, step)["kl"]
    assert torch.isfinite(b) and a.item() == b.item()
    opt = torch.optim.SGD(m.networks["student"].parameters(), lr=0.1)
    b.backward()
    opt.step()
    assert all(torch.isfinite(p).all() for p in m.networks["student"].state_dict().values())
    assert all(p.grad is None and not p.requires_grad for p in m.teacher.parameters())


def test_without_augmentation_every_crop_is_the_source_itself():
    splits = toy_splits()
    m = _method(splits, source_index=7, min_crop=1.0, flip=0.0, scaling_sigma=0.0, jitter_sigma=0.0,
                time_warp_sigma=0.0, cutmix_alpha=0.0)
    x = m.crops(5, torch.Generator().manual_seed(0))
    assert torch.allclose(x, splits.train.x[7].expand(5, -1, -1), atol=1e-6)
    assert not torch.allclose(x, splits.train.x[6].expand(5, -1, -1), atol=1e-3)


def test_crop_resize_1d_takes_segments_of_the_source():
    length = 50
    ramp = torch.arange(length, dtype=torch.float64).view(1, -1).repeat(2, 1)  # value = time index
    x = crop_resize_1d(ramp, 40, 0.2, torch.Generator().manual_seed(1))
    assert x.shape == (40, 2, length)
    span = x[:, 0, -1] - x[:, 0, 0]
    assert torch.all(span >= 0.2 * (length - 1) - 1e-9) and torch.all(span <= length - 1 + 1e-9)
    # a segment of a ramp resampled linearly is a ramp: constant increments, both channels alike
    steps = x[:, 0, 1:] - x[:, 0, :-1]
    assert torch.allclose(steps, steps[:, :1].expand_as(steps), atol=1e-9) and torch.equal(x[:, 0], x[:, 1])
    assert span.std() > 1.0  # crops of different lengths


def test_crop_resize_2d_full_box_is_identity_and_small_boxes_zoom():
    img = torch.arange(64, dtype=torch.float64).view(1, 8, 8)
    same = crop_resize_2d(img, 3, 1.0, torch.Generator().manual_seed(0))
    assert torch.allclose(same, img.expand(3, 1, 8, 8), atol=1e-9)
    zoom = crop_resize_2d(img, 20, 0.1, torch.Generator().manual_seed(0))
    assert zoom.shape == (20, 1, 8, 8) and zoom.min() >= 0 and zoom.max() <= 63
    assert (zoom.amax((1, 2, 3)) - zoom.amin((1, 2, 3))).min() < 63  # a box smaller than the image


def test_crops_are_fixed_by_the_step_and_differ_between_steps():
    splits = toy_splits()
    m = _method(splits)
    batch = splits.train.batch(torch.arange(8))
    assert m.training_step(batch, Step(0, 3, 1, 10))["kl"].item() == m.training_step(batch, Step(0, 3, 1, 10))["kl"].item()
    assert m.training_step(batch, Step(0, 3, 1, 10))["kl"].item() != m.training_step(batch, Step(0, 4, 1, 10))["kl"].item()


def test_images_work_end_to_end_in_a_step():
    g = torch.Generator().manual_seed(0)
    data = TensorData({"x": torch.randn(20, 1, 8, 8, generator=g)}, torch.randint(0, 3, (20,), generator=g))
    info = DataInfo(name="img", task="classification", input_shape=(1, 8, 8), n_outputs=3, views={"x": (1, 8, 8)},
                    sizes={"train": 20})
    net = lambda: nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))  # noqa: E731
    m = SingleSourceDistillation(net(), info, net(), train=data, crops_per_step=6)
    m.setup(data, torch.device("cpu"))
    terms = m.training_step(data.batch(torch.arange(4)), Step(0, 0, 1, 1))
    assert set(terms) == {"kl"} and terms["kl"].item() > 0
    terms["kl"].backward()
    assert all(p.grad is not None for p in m.networks["student"].parameters())


@pytest.mark.parametrize("params, message", [
    ({"source_index": 10_000}, r"method.params.source_index: expected a row of the training split"),
    ({"crops_per_step": 1}, r"method.params.crops_per_step: Input should be greater than or equal to 2"),
    ({"crops_per_step": 8.0}, r"method.params.crops_per_step: Input should be a valid integer"),
    ({"source_index": True}, r"method.params.source_index: Input should be a valid integer"),
    ({"source_index": -1}, r"method.params.source_index: Input should be greater than or equal to 0"),
    ({"temperature": float("nan")}, r"method.params.temperature: expected a finite number"),
    ({"min_crop": 0}, r"method.params.min_crop: Input should be greater than 0"),
    ({"flip": 2}, r"method.params.flip: Input should be less than or equal to 1"),
    ({"cutmix": 1.0}, r"method.params.cutmix: unknown parameter for method 'single_source'"),
])
def test_bad_params(params, message):
    splits = toy_splits()
    with pytest.raises(UserInputError, match=message):
        SingleSourceDistillation(tiny_net(), splits.info, tiny_net(), train=splits.train, **params)


def test_a_teacher_on_another_view_or_none_is_refused():
    import dataclasses

    from edgedistill.methods.teachers import as_teacher

    splits = toy_splits()
    info = dataclasses.replace(splits.info, views={**splits.info.views, "other": splits.info.views["x"]})
    with pytest.raises(UserInputError, match=r"teacher.view: single_source feeds the teacher the student's crops"):
        SingleSourceDistillation(tiny_net(), info, as_teacher(tiny_net(), view="other"), train=splits.train)
    with pytest.raises(UserInputError, match=r"teachers: method 'single_source' needs 1 teacher"):
        SingleSourceDistillation(tiny_net(), info, None, train=splits.train)


RECIPE = {
    "name": "single-source",
    "data": {"name": "synthetic", "params": {"n_subjects": 5, "windows_per_subject": 12, "length": 32}},
    "teacher": {"model": "fcn", "width": 0.25, "train": {"epochs": 1, "batch_size": 16}},
    "student": {"model": "cnn1d", "width": 4, "depth": 2},
    "method": {"name": "single_source", "params": {"source_index": 2}},
    "train": {"epochs": 1, "batch_size": 16},
    "engine": {"progress": False},
}


def test_end_to_end_run_logs_only_the_kl_term(tmp_path):
    summary = edgedistill.run(RECIPE, out=tmp_path / "run", progress=False)
    assert [r["role"] for r in summary["rows"]][-1] == "method"
    stage = tmp_path / "run" / "single_source" / "seed0"
    line = json.loads((stage / "metrics.jsonl").read_text().splitlines()[0])
    assert set(line["train"]) == {"kl", "total"} and line["train"]["kl"] > 0
    described = json.loads((stage / "summary.json").read_text())["method"]
    assert described["labels_used_for_training"] is False
    share = described["teacher_top_class_share_on_crops"]
    assert len(share) == len(summary["data"]["classes"])
    assert sum(share) == pytest.approx(1.0, abs=1e-2)


@pytest.mark.parametrize("extra, message", [
    ({"augment": {"student": ["jitter"]}}, r"augment: single_source makes its own augmentations"),
    ({"method": {"name": "single_source", "terms": [{"loss": "ce", "weight": 1.0}]}}, r"method.terms: method 'single_source' takes no loss terms"),
])
def test_recipe_sections_it_would_ignore_are_refused(tmp_path, extra, message):
    with pytest.raises(UserInputError, match=message):
        edgedistill.run({**RECIPE, **extra}, out=tmp_path / "never", progress=False)
