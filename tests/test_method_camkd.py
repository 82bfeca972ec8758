"""camkd: golden CA-MKD vectors (Zhang, Chen, Wang, ICASSP 2022, arXiv 2201.00007; tests/reference/ref_others.py
section 5, which follows the official code https://github.com/Rorozhl/CA-MKD), the resize/embed/teacher-head path,
gradients, the first-epoch skip, and the errors."""
import json

import pytest
import torch
from torch import nn

import edgedistill
from edgedistill.config import TeacherConfig, TermConfig
from edgedistill.errors import UserInputError
from edgedistill.losses.response import ce, kd
from edgedistill.methods.base import Step, TeacherNet
from edgedistill.methods.camkd import CAMKD, camkd_inter, camkd_kd, resize
from edgedistill.models import build_model
from tests.helpers import tiny_net, toy_splits

D = torch.float64
ZS = torch.tensor([[1.0, 2.0, 0.5, -1.0], [0.0, -0.5, 1.5, 0.3], [2.0, 0.1, -0.3, 0.7]], dtype=D)
ZT = torch.tensor([[2.0, 1.0, 0.0, -0.5], [0.2, 0.1, 2.5, -1.0], [1.5, 0.5, 0.0, 1.0]], dtype=D)
ZTA = [ZT, ZT.flip(1), 0.5 * ZT]
Y = torch.tensor([1, 2, 0])


def grid(shape, a, b=0.0):
    n = 1
    for s in shape:
        n *= s
    return torch.sin(torch.arange(n, dtype=D) * a + b).reshape(shape)


HS, HT, WCLS = grid((3, 3, 5), 0.31), grid((3, 3, 5), 0.29, 1.0), grid((3, 4, 5), 0.53, 0.2)
ZHAT = [HS[k] @ WCLS[k].T for k in range(3)]


def test_golden_logit_term_and_weights():
    loss, w = camkd_kd(ZS, ZTA, Y, 4.0)
    assert abs(loss.item() - 0.135323) < 1e-6  # CAMKD_LKD_code: sum / (B K)
    expected_w = torch.tensor([[0.390908, 0.462936, 0.373390], [0.203458, 0.091440, 0.291255],
                               [0.405634, 0.445623, 0.335355]], dtype=D)
    assert torch.allclose(w, expected_w, atol=1e-6)
    assert abs(camkd_kd(ZS, ZTA, Y, 4.0, reduction="sum")[0].item() - 0.405970) < 1e-6  # batch mean of sum_k


def test_golden_intermediate_term_and_total():
    loss, w = camkd_inter(list(HS), list(HT), ZHAT, Y)
    assert abs(loss.item() - 0.061521) < 1e-6
    expected_w = torch.tensor([[0.409167, 0.470414, 0.400500], [0.111688, 0.349531, 0.129252],
                               [0.479145, 0.180054, 0.470248]], dtype=D)
    assert torch.allclose(w, expected_w, atol=1e-6)
    total = ce(ZS, Y) + 1.0 * camkd_kd(ZS, ZTA, Y, 4.0)[0] + 50.0 * loss
    assert abs(total.item() - 3.685412) < 1e-6


def test_identical_teachers_give_kd_over_k_and_weights_sum_to_one():
    loss, w = camkd_kd(ZS, [ZT, ZT, ZT], Y, 4.0)
    assert torch.allclose(w, torch.full_like(w, 1 / 3), atol=1e-12)
    assert torch.allclose(loss, kd(ZS, ZT, 4.0) / 3, atol=1e-12)
    assert torch.allclose(camkd_kd(ZS, ZTA, Y)[1].sum(0), torch.ones(3, dtype=D), atol=1e-12)


def test_intermediate_weights_carry_gradient_unless_detached():
    grads = []
    for detach in (False, True):
        hs = HS.clone().requires_grad_(True)
        zhat = [hs[k] @ WCLS[k].T for k in range(3)]
        camkd_inter(list(hs), list(HT), zhat, Y, detach_weights=detach)[0].backward()
        grads.append(hs.grad)
    assert not torch.allclose(grads[0], grads[1])
    # detached: the gradient is the weighted MSE's alone, 2 w (h - f) / (D B K)
    w = camkd_inter(list(HS), list(HT), ZHAT, Y)[1]
    assert torch.allclose(grads[1], 2 * w[..., None] * (HS - HT) / (5 * 3 * 3), atol=1e-12)


def test_resize_pools_down_and_interpolates_up():
    x = torch.arange(8.0).reshape(1, 1, 8)
    assert torch.equal(resize(x, (4,)), torch.tensor([[[0.5, 2.5, 4.5, 6.5]]]))
    assert resize(x, (16,)).shape == (1, 1, 16) and resize(x, (8,)) is x
    assert torch.allclose(resize(torch.ones(2, 3, 4, 4), (8, 8)), torch.ones(2, 3, 8, 8))
    assert resize(torch.ones(2, 3, 8, 8), (2, 2)).shape == (2, 3, 2, 2)


def _teachers(n=3, widths=(0.125, 0.25, 0.125)):
    out = []
    for i in range(n):
        torch.manual_seed(10 + i)
        name, knobs = ("fcn", {"width": widths[i]}) if i % 2 == 0 else ("resnet1d", {"width": 8})
        model = build_model(name, 3, 3, (16,), **knobs)
        out.append(TeacherNet(f"t{i}", model, TeacherConfig(model="fcn", name=f"t{i}")))
    return out


def _student():
    torch.manual_seed(0)
    return build_model("cnn1d", 3, 3, (16,), width=4, depth=2, pool_every=1)  # feat length 8: pooled up to 16


def test_training_step_terms_embeds_and_gradients():
    splits = toy_splits()
    teachers = _teachers()
    terms = [TermConfig(loss="ce"), TermConfig(loss="kd"), TermConfig(loss="inter", weight=5.0, start_epoch=1)]
    method = CAMKD(_student(), splits.info, teachers, terms, cache_teacher=False)
    assert [n for n in method.networks] == ["student", "embed0", "embed1", "embed2"]
    assert method.networks["embed1"][0].out_channels == 16  # resnet1d width 8 ends with 2 * 8 channels
    method.setup(splits.train, torch.device("cpu"))
    batch = splits.train.batch(torch.arange(8))
    first = method.training_step(batch, Step(0, 0, 2, 1))
    assert float(first["inter"].detach()) == 0.0  # the feature term is off in the first epoch (start_epoch: 1), as in the code
    terms = method.training_step(batch, Step(1, 1, 2, 1))
    assert set(terms) == {"ce", "kd", "inter"} and float(terms["inter"].detach()) > 0
    # the logit term equals the pure function on the teachers' outputs
    with torch.no_grad():
        s = method.networks["student"](batch["x"])
        z = [t.model(batch["x"]) for t in teachers]
    assert torch.allclose(terms["kd"], camkd_kd(s, z, batch["y"])[0], atol=1e-6)
    sum(terms.values()).backward()
    for name in ("student", "embed0", "embed1", "embed2"):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in method.networks[name].parameters()), name
    assert all(p.grad is None for t in teachers for p in t.model.parameters())


def test_cache_equals_running_the_teachers():
    splits = toy_splits()
    batch = splits.train.batch(torch.arange(8))
    values = []
    for cache in (True, False):
        method = CAMKD(_student(), splits.info, _teachers(), cache_teacher=cache)
        method.setup(splits.train, torch.device("cpu"))
        torch.manual_seed(0)
        values.append(method.training_step(batch, Step(1, 1, 2, 1)))
    for name in ("ce", "kd", "inter"):
        assert torch.allclose(values[0][name], values[1][name], atol=1e-5), name


class NoHead(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = tiny_net()
        self.default_taps = {"feat": "body.2"}

    def forward(self, x):
        return self.body(x)


@pytest.mark.parametrize("bad, message", [
    (tiny_net(), r"teachers\[1\]: method 'camkd' feeds .* teacher 't1' \(Sequential\) has no 'pool' module"),
    (NoHead(), r"teachers\[1\]: .* has no 'pool' module"),
])
def test_teacher_without_pool_head_is_refused(bad, message):
    splits = toy_splits()
    teachers = _teachers(2)
    teachers[1] = TeacherNet("t1", bad, TeacherConfig(model="x", name="t1"))
    with pytest.raises(UserInputError, match=message):
        CAMKD(_student(), splits.info, teachers)


def test_teacher_without_feat_tap_and_bad_params_are_refused():
    splits = toy_splits()
    teachers = _teachers(2)
    del teachers[1].model.default_taps["feat"]
    with pytest.raises(UserInputError, match=r"teachers\[1\]: method 'camkd' reads each teacher's 'feat' tap"):
        CAMKD(_student(), splits.info, teachers)
    for kwargs, message in [({"reduction": "mean"}, "method.params.reduction"),
                            ({"beta": 50}, r"method.params.beta: unknown parameter"),  # weights are recipe terms
                            ({"student_tap": "blocks.9"}, r"method.params.student_tap: tap 'blocks.9' does not exist")]:
        with pytest.raises(UserInputError, match=message):
            CAMKD(_student(), splits.info, _teachers(2), **kwargs)
    for terms, message in [([TermConfig(loss="feat")], r"method.terms\[0\].loss: method 'camkd' weights its own losses"),
                           ([TermConfig(loss="kd", temperature=2)], r"method.terms\[0\]: 'kd' takes weight, start_epoch"),
                           ([TermConfig(loss="kd"), TermConfig(loss="kd")], r"method.terms\[1\].loss: 'kd' is weighted twice")]:
        with pytest.raises(UserInputError, match=message):
            CAMKD(_student(), splits.info, _teachers(2), terms)
    with pytest.raises(UserInputError, match=r"teachers: method 'camkd' needs at least 2"):
        CAMKD(_student(), splits.info, _teachers(1))


def test_recipe_end_to_end_logs_the_feature_term_from_epoch_two(tmp_path):
    recipe = {
        "name": "camkd",
        "data": {"name": "synthetic", "params": {"n_subjects": 5, "windows_per_subject": 12, "length": 32}},
        "teachers": [{"name": "a", "model": "fcn", "width": 0.125, "seed": 0, "train": {"epochs": 1, "batch_size": 16}},
                     {"name": "b", "model": "fcn", "width": 0.25, "seed": 1, "train": {"epochs": 1, "batch_size": 16}}],
        "student": {"model": "cnn1d", "width": 4, "depth": 2},
        "method": {"name": "camkd"},
        "train": {"epochs": 2, "batch_size": 16},
        "baseline": False,
        "engine": {"progress": False},
    }
    edgedistill.run(recipe, out=tmp_path / "run", progress=False)
    lines = [json.loads(l) for l in (tmp_path / "run" / "camkd" / "seed0" / "metrics.jsonl").read_text().splitlines()]
    assert lines[0]["train"]["inter"] == 0.0 and lines[1]["train"]["inter"] > 0  # default terms: inter from epoch 2
    best = torch.load(tmp_path / "run" / "camkd" / "seed0" / "checkpoints" / "best.pt", weights_only=True)
    assert {"student", "embed0", "embed1"} <= set(best["networks"])
