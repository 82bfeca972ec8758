"""TASKED: gradient reversal, DANN ramp, subject MMD (vectors of tests/reference/ref_others.py section 11), Tf-KD_reg
self-distillation, gradient routing to the subject classifier and the feature extractor, errors, and a short
end-to-end run."""
from __future__ import annotations

import json
import math

import pytest
import torch

from edgedistill.config import DataConfig, EngineConfig, TermConfig, TrainConfig, load_recipe
from edgedistill.data import prepare_data
from edgedistill.data.dataset import DataInfo
from edgedistill.engine.loop import Stage, Trainer
from edgedistill.errors import UserInputError
from edgedistill.losses.relation import mmd
from edgedistill.losses.response import ce
from edgedistill.methods.base import Step, TeacherNet
from edgedistill.methods.tasked import DEFAULT_TERMS, Tasked, dann_lambda, grad_reverse, subject_mmd
from edgedistill.methods.tfkd import TeacherFreeKD
from edgedistill.models import build_model
from tests.helpers import tiny_net, toy_splits

# tests/reference/ref_others.py shared inputs.
ZS = torch.tensor([[1.0, 2.0, 0.5, -1.0], [0.0, -0.5, 1.5, 0.3], [2.0, 0.1, -0.3, 0.7]], dtype=torch.float64)
Y = torch.tensor([1, 2, 0])
# Alignment off: the task CE and self-KD alone (alpha = 0.5).
SELF_KD_ONLY = [TermConfig(loss="ce", weight=0.5), TermConfig(loss="self_kd", weight=0.5)]


def grid(shape: tuple[int, ...], a: float, b: float = 0.0) -> torch.Tensor:
    n = math.prod(shape)
    return torch.sin(torch.arange(n, dtype=torch.float64) * a + b).reshape(shape)


@pytest.fixture(autouse=True)
def _one_thread():
    # Tiny tensors: a second thread only spins on a busy 2-core machine. Restored for the other files.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def splits():
    return prepare_data(DataConfig(name="synthetic", params={"n_subjects": 5, "windows_per_subject": 16, "length": 32},
                                   split={"by": "subject", "val": 0.2, "test": 0.2}))


def _student(splits, **knobs):
    torch.manual_seed(0)
    return build_model("transformer", 3, splits.info.n_outputs, (32,), d_model=8, depth=1, heads=2, dropout=0.0, **knobs)


# ---- gradient reversal and its schedule -----------------------------------------------------------------
def test_grl_is_identity_forward_and_negated_scaled_backward() -> None:
    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    out = grad_reverse(x, 0.3)
    assert torch.equal(out, x)
    g = torch.randn(4, 3, dtype=torch.float64)
    out.backward(g)
    torch.testing.assert_close(x.grad, -0.3 * g, rtol=0, atol=1e-15)
    x.grad = None
    grad_reverse(x, 0.0).backward(g)
    assert torch.count_nonzero(x.grad) == 0


def test_dann_ramp() -> None:
    assert dann_lambda(0.0) == 0.0
    assert dann_lambda(1.0) == pytest.approx(2 / (1 + math.exp(-10)) - 1, abs=1e-12)
    assert dann_lambda(0.5, gamma=2.0) == pytest.approx(2 / (1 + math.exp(-1.0)) - 1, abs=1e-12)
    values = [dann_lambda(p / 10) for p in range(11)]
    assert values == sorted(values) and values[-1] < 1.0


# ---- MMD ----------------------------------------------------------------------------------------------
def test_mmd_spec_vectors() -> None:
    x, y = grid((3, 2), 0.9), grid((4, 2), 0.6, 0.4) + 0.5
    assert float(mmd(x, y, 1.0)) == pytest.approx(0.160306, abs=1e-6)
    assert float(mmd(x, x, 1.0)) == pytest.approx(0.0, abs=1e-12)
    # Two subjects in one batch give the same number through the method's pairwise form.
    emb, subj = torch.cat([x, y]), torch.tensor([7, 7, 7, 2, 2, 2, 2])
    assert float(subject_mmd(emb, subj, sigma=1.0)) == pytest.approx(0.160306, abs=1e-6)
    assert float(subject_mmd(torch.cat([x, x]), torch.tensor([0, 0, 0, 1, 1, 1]), sigma=1.0)) == pytest.approx(0.0, abs=1e-12)


def test_subject_mmd_is_the_mean_over_subject_pairs_of_relation_mmd() -> None:
    g = torch.Generator().manual_seed(0)
    emb = torch.randn(30, 5, generator=g, dtype=torch.float64)
    subj = torch.randint(0, 4, (30,), generator=g)
    subj[:2] = torch.tensor([9, -1])  # subject 9 has one window (skipped), -1 is unknown (skipped)
    pairs = [mmd(emb[subj == a], emb[subj == b], 1.3) for a in range(4) for b in range(a + 1, 4)]
    torch.testing.assert_close(subject_mmd(emb, subj, sigma=1.3), torch.stack(pairs).mean(), rtol=1e-12, atol=1e-12)
    # Median heuristic: the term does not change when every embedding is scaled (no collapse shortcut).
    torch.testing.assert_close(subject_mmd(3.0 * emb, subj), subject_mmd(emb, subj), rtol=1e-9, atol=1e-12)
    # Fewer than two qualifying subjects: zero, still differentiable.
    e = emb[:4].clone().requires_grad_()
    out = subject_mmd(e, torch.tensor([0, 0, 0, 1]))
    out.backward()
    assert out.item() == 0.0 and e.grad is not None


def test_class_balanced_mmd_ignores_the_activity_mix() -> None:
    """Embeddings that depend only on the activity are subject-invariant: the class-balanced MMD is 0 although
    the two subjects did different mixes of activities; the plain MMD is not."""
    centres = torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, 3.0]], dtype=torch.float64)
    labels = torch.tensor([0, 0, 0, 1, 2, 0, 1, 1, 1, 2])
    subj = torch.tensor([0, 0, 0, 0, 0, 1, 1, 1, 1, 1])
    emb = centres[labels]
    assert float(subject_mmd(emb, subj, sigma=1.0)) > 0.1
    assert float(subject_mmd(emb, subj, sigma=1.0, labels=labels)) == pytest.approx(0.0, abs=1e-12)
    # When each subject shows every activity equally often the weights are uniform: both forms agree.
    g = torch.Generator().manual_seed(1)
    noisy = torch.randn(12, 2, generator=g, dtype=torch.float64)
    balanced, subj12 = torch.tensor([0, 1, 2, 2, 1, 0, 1, 0, 2, 2, 0, 1]), torch.arange(12) // 6
    torch.testing.assert_close(subject_mmd(noisy, subj12, 1.0, labels=balanced), subject_mmd(noisy, subj12, 1.0))


# ---- self-distillation ---------------------------------------------------------------------------------
def _info(classes: int = 4, groups: bool = False) -> DataInfo:
    return DataInfo(name="toy", task="classification", input_shape=(3, 16), n_outputs=classes,
                    views={"x": (3, 16)}, has_groups=groups)


def test_self_kd_spec_vector_and_zero_at_the_virtual_teacher() -> None:
    method = Tasked(tiny_net(classes=4), _info(), SELF_KD_ONLY, correct_prob=0.99, temperature=1.0)
    assert float(method.self_kd(ZS, Y)) == pytest.approx(0.424475, abs=1e-6)
    for t in (1.0, 4.0):
        method = Tasked(tiny_net(classes=4), _info(), SELF_KD_ONLY, correct_prob=0.99, temperature=t)
        p = torch.full((3, 4), 0.01 / 3, dtype=torch.float64)
        p[torch.arange(3), Y] = 0.99
        at_target = torch.log(p) + torch.tensor([[2.0], [-1.0], [0.5]], dtype=torch.float64)  # any row shift
        assert float(method.self_kd(at_target, Y)) == pytest.approx(0.0, abs=1e-12)
        assert float(method.self_kd(ZS, Y)) > 0.01


def test_without_alignment_it_is_exactly_tfkd() -> None:
    splits = toy_splits()
    batch = splits.train.batch(torch.arange(16))
    net = tiny_net()
    step = Step(0, 3, 10, 5)
    ours = Tasked(net, splits.info, [TermConfig(loss="ce", weight=0.7), TermConfig(loss="self_kd", weight=0.3)],
                  temperature=2.0, correct_prob=0.8)
    ref = TeacherFreeKD(net, splits.info, [TermConfig(loss="ce", weight=0.7), TermConfig(loss="kd", weight=0.3, temperature=2.0)],
                        correct_prob=0.8)
    net.eval()
    a, b = ours.training_step(batch, step), ref.training_step(batch, step)
    assert list(ours.networks) == ["student"] and set(a) == {"ce", "self_kd"}
    torch.testing.assert_close(sum(a.values()), sum(b.values()))
    off = Tasked(net, splits.info, [TermConfig(loss="ce"), TermConfig(loss="self_kd", weight=0.0)]).training_step(batch, step)
    assert float(off["self_kd"]) == 0.0  # a term at weight 0 is not computed and logs 0


def test_default_terms_are_the_old_defaults() -> None:
    """alpha = 0.5 between CE and self-KD, adversarial 0.1, mmd 0.5 (times the ramp), as the old parameters."""
    assert [(t.loss, t.weight) for t in DEFAULT_TERMS] == [("ce", 0.5), ("self_kd", 0.5), ("adversarial", 0.1), ("mmd", 0.5)]


# ---- gradient routing ------------------------------------------------------------------------------------
def test_classifier_learns_subjects_and_features_get_the_reversed_gradient(splits) -> None:
    terms = [TermConfig(loss="ce", weight=0.5), TermConfig(loss="self_kd", weight=0.5),
             TermConfig(loss="adversarial", weight=0.7), TermConfig(loss="mmd", weight=0.5)]
    method = Tasked(_student(splits), splits.info, terms, train=splits.train, grl_max=0.8)
    student, clf = method.networks["student"], method.networks["subject_classifier"]
    batch = splits.train.batch(torch.arange(24))
    step = Step(3, 30, 10, 20)  # progress 0.15
    scale = 0.8 * dann_lambda(0.15)

    def grads(loss: torch.Tensor) -> tuple[list, list]:
        method.networks.zero_grad(set_to_none=True)
        loss.backward(retain_graph=True)
        return [p.grad for p in student.parameters()], [p.grad for p in clf.parameters()]

    terms = method.training_step(batch, step)
    assert set(terms) == {"ce", "self_kd", "adversarial", "mmd"}
    g_adv, c_adv = grads(terms["adversarial"])
    # The same loss without the reversal layer.
    with method._taps:
        student(batch["x"])
    plain = 0.7 * ce(clf(method._taps.outputs["emb"]), method.subject_index(batch["group"]))
    g_plain, c_plain = grads(plain)
    for a, b in zip(c_adv, c_plain):  # the subject classifier descends on its CE
        torch.testing.assert_close(a, b)
    moved = [(a, b) for a, b in zip(g_adv, g_plain) if b is not None and b.abs().sum() > 0]
    assert len(moved) > 5
    for a, b in moved:  # the feature extractor ascends it, scaled by the ramp
        torch.testing.assert_close(a, -scale * b)
    # The MMD term is its weight times the ramp times the subject MMD of the embedding.
    labels = batch["y"]
    ref_mmd = 0.5 * (dann_lambda(0.15) * subject_mmd(method._taps.outputs["emb"], method.subject_index(batch["group"]),
                                                     None, labels))
    torch.testing.assert_close(terms["mmd"], ref_mmd)
    # The task, self-KD and MMD terms never reach the subject classifier.
    _, c_rest = grads(terms["ce"] + terms["self_kd"] + terms["mmd"])
    assert all(g is None for g in c_rest)


def test_subject_ids_map_to_classifier_classes(splits) -> None:
    method = Tasked(_student(splits), splits.info, train=splits.train)
    ids = torch.unique(splits.train.group)
    assert method.networks["subject_classifier"][-1].out_features == len(ids)
    unseen = next(i for i in range(100) if i not in ids.tolist())
    mapped = method.subject_index(torch.cat([ids.flip(0), torch.tensor([-1, unseen])]))
    assert mapped.tolist() == list(range(len(ids)))[::-1] + [-1, -1]


# ---- errors ----------------------------------------------------------------------------------------------
def test_no_subject_ids_is_a_clear_error_unless_alignment_is_off() -> None:
    splits = toy_splits()  # no groups
    with pytest.raises(UserInputError, match=r"^data: method 'tasked' aligns subjects and needs subject ids.*"
                                             r"weigh only ce and self_kd, method\.terms: \[\{loss: ce"):
        Tasked(tiny_net(), splits.info, train=splits.train)
    with pytest.raises(UserInputError, match=r"^data: .*subject ids"):  # MMD alone needs them too
        Tasked(tiny_net(), splits.info, [*SELF_KD_ONLY, TermConfig(loss="mmd", weight=0.5)], train=splits.train)
    assert list(Tasked(tiny_net(), splits.info, SELF_KD_ONLY, train=splits.train).networks) == ["student"]
    # alignment terms listed at weight 0 are off too
    zero = [*SELF_KD_ONLY, TermConfig(loss="adversarial", weight=0.0), TermConfig(loss="mmd", weight=0.0)]
    assert list(Tasked(tiny_net(), splits.info, zero, train=splits.train).networks) == ["student"]


def test_recipe_errors(splits) -> None:
    def recipe(terms=(), **method_params):
        return load_recipe({"data": {"name": "synthetic"}, "student": {"model": "transformer"},
                            "method": {"name": "tasked", "params": method_params, "terms": list(terms)}})

    kw = {"student": _student(splits), "teacher": None, "info": splits.info, "train": splits.train}
    assert Tasked.from_recipe(recipe(), **kw).networks["subject_classifier"] is not None
    with pytest.raises(UserInputError, match=r"method\.params\.mmd_sigmaa: unknown parameter.*Did you mean 'mmd_sigma'"):
        Tasked.from_recipe(recipe(mmd_sigmaa=1.0), **kw)
    with pytest.raises(UserInputError, match=r"method\.params\.alpha: unknown parameter"):  # weights are terms
        Tasked.from_recipe(recipe(alpha=0.5), **kw)
    with pytest.raises(UserInputError, match=r"method\.params\.adversarial: unknown parameter"):
        Tasked.from_recipe(recipe(adversarial=0.1), **kw)
    with pytest.raises(UserInputError, match=r"method\.terms\[0\]\.loss: method 'tasked' weights its own losses: ce "):
        Tasked.from_recipe(recipe([{"loss": "subject_adv"}]), **kw)
    with pytest.raises(UserInputError, match=r"method\.terms\[1\]\.loss: 'mmd' is weighted twice"):
        Tasked.from_recipe(recipe([{"loss": "mmd"}, {"loss": "mmd"}]), **kw)
    with pytest.raises(UserInputError, match=r"method\.terms\[0\]: 'self_kd' takes weight, start_epoch"):
        Tasked.from_recipe(recipe([{"loss": "self_kd", "temperature": 2}]), **kw)
    with pytest.raises(UserInputError, match=r"method\.params\.mmd_sigma: .*greater than 0"):
        Tasked.from_recipe(recipe(mmd_sigma=0), **kw)
    with pytest.raises(UserInputError, match=r"method\.params\.subject_hidden: .*valid integer"):
        Tasked.from_recipe(recipe(subject_hidden=2.5), **kw)
    with pytest.raises(UserInputError, match=r"method\.params\.correct_prob: expected a number in \[1/C, 1\]"):
        Tasked.from_recipe(recipe(correct_prob=0.1), **kw)
    with pytest.raises(UserInputError, match=r"method\.params\.embedding_tap: tap 'nope' does not exist"):
        Tasked.from_recipe(recipe(embedding_tap="nope"), **kw)
    one = splits.train.subset(torch.nonzero(splits.train.group == splits.train.group[0]).flatten())
    with pytest.raises(UserInputError, match=r"^data: .*holds 1 subject"):
        Tasked(_student(splits), splits.info, train=one)
    with_teacher = load_recipe({"data": {"name": "synthetic"}, "student": {"model": "transformer"},
                                "teacher": {"model": "fcn"}, "method": {"name": "tasked"}})
    teacher = TeacherNet("teacher", tiny_net(), with_teacher.teacher)
    with pytest.raises(UserInputError, match=r"^teacher: method 'tasked' uses no pre-trained teacher .*remove the "
                                             r"'teacher'/'teachers' section"):
        Tasked.from_recipe(with_teacher, **kw, teachers=[teacher])


# ---- end to end --------------------------------------------------------------------------------------------
def test_training_logs_every_term_and_trains_the_subject_classifier(splits, tmp_path) -> None:
    method = Tasked(_student(splits), splits.info, train=splits.train)
    before = {k: v.clone() for k, v in method.networks["subject_classifier"].state_dict().items()}
    cfg = TrainConfig(epochs=2, batch_size=16)
    summary = Trainer(EngineConfig(progress=False)).fit(method, splits, Stage("tasked", tmp_path / "s", 0, cfg))
    lines = [json.loads(l) for l in (tmp_path / "s" / "metrics.jsonl").read_text().splitlines()]
    assert set(lines[-1]["train"]) == {"ce", "self_kd", "adversarial", "mmd", "total"}
    assert all(math.isfinite(v) for line in lines for v in line["train"].values())
    after = method.networks["subject_classifier"].state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    saved = torch.load(tmp_path / "s" / "checkpoints" / "last.pt", weights_only=False)
    assert set(saved["networks"]) == {"student", "subject_classifier"}
    assert method.deliverable() is method.networks["student"] and summary["method"]["subjects"] == 3
