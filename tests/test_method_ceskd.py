"""CES-KD (Amara et al., arXiv 2209.07606): the per-sample selection vector of tests/reference/ref_others.py
section 4, reduction to single-teacher KD, strata and curriculum rules, the expert each sample gets in the regime,
and the errors."""
import pytest
import torch

from edgedistill.config import TermConfig, load_recipe
from edgedistill.errors import UserInputError
from edgedistill.losses import kd
from edgedistill.methods.base import Step, TeacherNet
from edgedistill.methods import ceskd as ceskd_module
from edgedistill.methods.ceskd import (
    CESKD, expert_level, final_expert, fold_ids, selected_kd, selected_logits, stratify,
)
from edgedistill.registry import METHODS

from helpers import tiny_net, toy_splits

ZS = torch.tensor([[1.0, 2.0, 0.5, -1.0], [0.0, -0.5, 1.5, 0.3], [2.0, 0.1, -0.3, 0.7]], dtype=torch.float64)
ZT = torch.tensor([[2.0, 1.0, 0.0, -0.5], [0.2, 0.1, 2.5, -1.0], [1.5, 0.5, 0.0, 1.0]], dtype=torch.float64)
ZTA = torch.stack([ZT, ZT.flip(1), ZT * 0.5])  # tests/reference/ref_others.py: the three experts
KD_TERMS = [{"loss": "ce", "weight": 0.1}, {"loss": "kd", "weight": 0.9, "temperature": 4}]


def test_registered():
    assert METHODS.get("ceskd") is CESKD


def test_spec_vector_selection_201():
    assert float(selected_kd(ZS, ZTA, torch.tensor([2, 0, 1]), 4.0)) == pytest.approx(0.323945, abs=1e-6)


def test_selected_logits_are_the_kd_terms_target():
    sel = torch.tensor([2, 0, 1])
    assert torch.equal(selected_logits(ZTA, sel), torch.stack([ZTA[2, 0], ZTA[0, 1], ZTA[1, 2]]))
    assert float(kd(ZS, selected_logits(ZTA, sel), 4.0)) == pytest.approx(0.323945, abs=1e-6)


@pytest.mark.parametrize("k", [0, 1, 2])
def test_one_expert_for_all_is_single_teacher_kd(k):
    got = selected_kd(ZS, ZTA, torch.full((3,), k), 4.0)
    assert float(got) == pytest.approx(float(kd(ZS, ZTA[k], 4.0)), abs=1e-12)


def test_stratify_equal_counts_and_monotone():
    d = torch.tensor([0.9, 0.1, 0.5, 0.3, 0.7, 0.2, 0.8, 0.0])
    s = stratify(d, 4)
    # sorted rows 7, 1 | 5, 3 | 2, 4 | 6, 0 -> strata of rows 0..7:
    assert s.tolist() == [3, 0, 2, 1, 2, 1, 3, 0]
    assert torch.bincount(s).tolist() == [2, 2, 2, 2]
    ties = stratify(torch.zeros(6), 3)  # equal difficulty: split by row order, still equal counts
    assert ties.tolist() == [0, 0, 1, 1, 2, 2]


def test_final_expert_easiest_smallest_hardest_largest():
    assert final_expert(torch.arange(4), 4, 4).tolist() == [0, 1, 2, 3]
    assert final_expert(torch.arange(2), 2, 4).tolist() == [0, 3]
    assert final_expert(torch.arange(5), 5, 3).tolist() == [0, 1, 1, 2, 2]  # round(j * 2 / 4), halves up


def test_curriculum_levels():
    levels = [expert_level(e, 100, 4, "gradual", 0.5) for e in range(100)]
    assert levels[0] == 0 and levels[-1] == 3
    assert all(a <= b for a, b in zip(levels, levels[1:]))  # never moves back to a smaller expert
    assert levels.index(3) == 38  # 4 * 38 / 50 = 3.04: the final assignment from 38 % of training on
    assert {expert_level(e, 100, 4, "static", 0.5) for e in range(100)} == {3}
    assert expert_level(0, 100, 4, "gradual", 0.0) == 3


def _teachers(splits, widths=(32, 4, 16, 8)):
    """Teachers in list order: the top teacher (largest) and assistants NOT in size order."""
    recipe = load_recipe({
        "data": {"name": "synthetic"}, "student": {"model": "cnn1d"},
        "teachers": [{"name": "teacher", "model": "fcn"}] + [
            {"name": f"ta{k}", "model": "cnn1d", "distill_from": "teacher", "terms": KD_TERMS} for k in range(1, len(widths))
        ],
    })
    nets = [tiny_net(classes=splits.info.n_outputs, width=w) for w in widths]
    return [TeacherNet(s.name, m, s) for s, m in zip(recipe.teacher_specs(), nets)]


def test_regime_selects_the_expert_by_difficulty_rule():
    torch.manual_seed(0)
    splits = toy_splits()
    teachers = _teachers(splits)
    method = CESKD(tiny_net(classes=3), splits.info, teachers, schedule="gradual", ramp=0.5, difficulty="in_sample")
    assert method.experts == ["ta1", "ta3", "ta2", "teacher"]  # ordered by parameter count
    method.setup(splits.train, torch.device("cpu"))
    with torch.no_grad():
        p = torch.softmax(teachers[0].model(splits.train.views["x"]).double(), 1)
    diff = 1 - p[torch.arange(len(splits.train)), splits.train.y]
    rank = diff.argsort(stable=True).argsort()
    want = rank * 4 // len(rank)  # 4 equal-count strata, easiest first, stratum j -> expert j at the end
    index = torch.arange(len(splits.train))
    assert torch.equal(method.selection(index, Step(99, 0, 100, 1)), want)
    assert torch.equal(method.selection(index, Step(0, 0, 100, 1)), torch.zeros_like(want))  # curriculum start
    assert torch.equal(method.selection(index, Step(20, 0, 100, 1)), want.clamp(max=1))
    # The hardest sample is taught by the largest expert (the top teacher), the easiest by the smallest.
    assert int(method.selection(diff.argmax().view(1), Step(99, 0, 100, 1))) == 3
    assert int(method.selection(diff.argmin().view(1), Step(99, 0, 100, 1))) == 0

    # The KD term uses exactly the chosen experts' logits, row by row; gradients reach the student only.
    student = method.networks["student"].eval()  # BatchNorm on running stats: the same output twice
    batch = splits.train.batch(torch.arange(16))
    step = Step(99, 0, 100, 1)
    terms = method.training_step(batch, step)
    with torch.no_grad():
        s = student(batch["x"])
        nets = [method.teachers.models[e] for e in method.selection(batch["index"], step).tolist()]
        t = torch.stack([n(batch["x"][i : i + 1])[0] for i, n in enumerate(nets)])
    assert float(terms["kd"].detach()) == pytest.approx(0.9 * float(kd(s, t, 4.0)), rel=1e-5)
    assert float(terms["ce"].detach()) == pytest.approx(0.1 * float(torch.nn.functional.cross_entropy(s, batch["y"])), rel=1e-5)
    sum(terms.values()).backward()
    assert all(p.grad is not None for p in student.parameters())
    assert all(p.grad is None and not p.requires_grad for tn in teachers for p in tn.model.parameters())
    info = method.describe()
    assert info["stratum_sizes"] == torch.bincount(want, minlength=4).tolist()
    assert info["taught_per_epoch"][100] == torch.bincount(want[:16], minlength=4).tolist()


def test_fold_ids_cover_every_row_in_near_equal_folds():
    fold = fold_ids(10, 3, torch.Generator().manual_seed(0))
    assert sorted(torch.bincount(fold).tolist()) == [3, 3, 4]
    assert torch.equal(fold, fold_ids(10, 3, torch.Generator().manual_seed(0)))  # the run seed fixes the folds
    assert not torch.equal(fold, fold_ids(10, 3, torch.Generator().manual_seed(1)))
    with pytest.raises(UserInputError, match=r"^method\.params\.folds: 4 folds need at least 4 training rows"):
        fold_ids(3, 4, torch.Generator())


def test_cross_fitted_difficulty_comes_from_copies_that_never_saw_the_row(monkeypatch):
    torch.manual_seed(0)
    splits = toy_splits()
    teachers = _teachers(splits)
    fits: list[tuple[torch.nn.Module, torch.Tensor]] = []
    real_fit = ceskd_module.fit_on_labels

    def recording_fit(model, x, y, cfg, classification, generator):
        fits.append((model, x.clone()))
        assert cfg.epochs == 2 and cfg.schedule == "constant" and classification
        return real_fit(model, x, y, cfg, classification, generator)

    monkeypatch.setattr(ceskd_module, "fit_on_labels", recording_fit)
    method = CESKD(tiny_net(classes=3), splits.info, teachers, folds=3, difficulty_epochs=2, schedule="static")
    method.setup(splits.train, torch.device("cpu"))
    x, y = splits.train.views["x"], splits.train.y
    assert len(fits) == 3
    held_out = torch.empty(len(y), 3)
    seen_by = []
    for model, xs in fits:
        assert model is not teachers[0].model  # a fresh copy of the largest expert's architecture
        assert [p.shape for p in model.parameters()] == [p.shape for p in teachers[0].model.parameters()]
        seen = (x[:, None] == xs[None]).flatten(2).all(2).any(1)  # which training rows this copy was fitted on
        seen_by.append(seen)
        with torch.no_grad():
            held_out[~seen] = model.eval()(x[~seen])
    seen = torch.stack(seen_by)
    assert (seen.sum(0) == 2).all()  # every row: fitted by 2 copies, held out from exactly one
    p_true = torch.softmax(held_out.double(), 1)[torch.arange(len(y)), y]
    assert torch.equal(method._strata, stratify(1 - p_true, 4))
    info = method.describe()
    assert info["difficulty"] == "cross_fitted" and info["cross_fit"]["folds"] == 3
    assert all(p.grad is None and not p.requires_grad for p in teachers[0].model.parameters())  # the expert untouched


def test_cross_fitted_difficulty_is_not_fooled_by_a_memorising_expert():
    """Random labels: an expert fitted to them is confident on its own training rows (in-sample difficulty says
    everything is easy), while held-out copies are at chance. The cross-fitted ranking must not follow the
    memorised one."""
    torch.manual_seed(0)
    splits = toy_splits(n=120)
    y = torch.randint(0, 3, (len(splits.train),), generator=torch.Generator().manual_seed(5))
    splits.train.y[:] = y
    teachers = _teachers(splits)
    big = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48, 256), torch.nn.ReLU(), torch.nn.Linear(256, 3))
    teachers[0] = TeacherNet(teachers[0].name, big, teachers[0].config)  # enough capacity to memorise 72 rows
    from edgedistill.config import TrainConfig
    from edgedistill.methods.label_fit import fit_on_labels
    big.requires_grad_(True)
    fit_on_labels(big, splits.train.views["x"], y, TrainConfig(epochs=300, batch_size=72, lr=1e-2, weight_decay=0.0),
                  True, torch.Generator().manual_seed(0))
    big.requires_grad_(False)
    with torch.no_grad():
        assert (big(splits.train.views["x"]).argmax(1) == y).float().mean() > 0.9  # memorised
    method = CESKD(tiny_net(classes=3), splits.info, teachers, difficulty_epochs=30)
    method.setup(splits.train, torch.device("cpu"))
    assert method.describe()["cross_fit"]["in_sample_acc"] > 0.9
    assert method.describe()["cross_fit"]["held_out_acc"] < 0.6


def test_static_schedule_and_fewer_strata():
    splits = toy_splits()
    method = CESKD(tiny_net(classes=3), splits.info, _teachers(splits), schedule="static", strata=2, difficulty="in_sample")
    method.setup(splits.train, torch.device("cpu"))
    sel = method.selection(torch.arange(len(splits.train)), Step(0, 0, 100, 1))
    assert set(sel.tolist()) == {0, 3}  # easy half -> smallest, hard half -> largest, from the first epoch
    easy = int((torch.arange(len(sel)) * 2 // len(sel) == 0).sum())  # stratum = rank * K // N
    assert method.describe()["final_assignment"] == [easy, 0, 0, len(sel) - easy]


def test_errors_name_the_key():
    splits = toy_splits()
    teachers = _teachers(splits)
    make = lambda **kw: CESKD(tiny_net(classes=3), splits.info, teachers, **kw)  # noqa: E731
    with pytest.raises(UserInputError, match=r"^method\.params\.experts: no teacher named 'big'"):
        make(experts=["teacher", "big"])
    with pytest.raises(UserInputError, match=r"^method\.params\.experts: ceskd needs at least two experts"):
        make(experts=["teacher"])
    with pytest.raises(UserInputError, match=r"^teachers: ceskd needs at least two experts"):
        CESKD(tiny_net(classes=3), splits.info, teachers[:1])
    with pytest.raises(UserInputError, match=r"^method\.params\.strata"):
        make(strata=1)
    with pytest.raises(UserInputError, match=r"^method\.params\.schedule"):
        make(schedule="anti")
    with pytest.raises(UserInputError, match=r"^method\.params\.ramp"):
        make(ramp=2.0)
    # The loss weights and T are the recipe's terms now.
    with pytest.raises(UserInputError, match=r"^method\.params\.alpha: unknown parameter"):
        make(alpha=0.9)
    with pytest.raises(UserInputError, match=r"^method\.params\.temperature: unknown parameter"):
        make(temperature=4)
    recipe = load_recipe({"data": {"name": "synthetic"}, "student": {"model": "cnn1d"},
                          "teachers": [{"name": t.name, **t.config.model_dump(exclude={"name"})} for t in teachers],
                          "method": {"name": "ceskd", "params": {"stratta": 3}}})
    with pytest.raises(UserInputError, match=r"method\.params\.stratta"):
        CESKD.from_recipe(recipe, student=tiny_net(classes=3), teacher=None, info=splits.info, teachers=teachers)


def test_default_terms_and_the_terms_weigh_the_selected_experts_target():
    splits = toy_splits()
    teachers = _teachers(splits)
    method = CESKD(tiny_net(classes=3), splits.info, teachers)
    assert [t.describe() for t in method.terms] == [{"loss": "ce", "weight": 0.1},
                                                    {"loss": "kd", "weight": 0.9, "temperature": 4.0}]
    assert method.augmentation_support == frozenset()
    assert method.teacher is teachers[0].model  # the largest expert
    probe = splits.train.batch(torch.arange(4))  # before setup (a loss module's shape probe): the largest expert
    with torch.no_grad():
        assert torch.equal(method.teacher_logits(probe, None, use_cache=False), teachers[0].model(probe["x"]))
    terms = [TermConfig(loss="kd", weight=0.5, temperature=2.0), TermConfig(loss="reverse_kd", weight=0.25, temperature=3.0)]
    torch.manual_seed(0)
    method = CESKD(tiny_net(classes=3), splits.info, teachers, terms, schedule="static", difficulty="in_sample")
    method.setup(splits.train, torch.device("cpu"))
    student = method.networks["student"].eval()
    batch = splits.train.batch(torch.arange(12))
    step = Step(0, 0, 10, 1)
    got = method.training_step(batch, step)
    assert set(got) == {"kd", "reverse_kd"}
    sel = method.selection(batch["index"], step)
    assert method.describe()["taught_per_epoch"] == {1: torch.bincount(sel, minlength=4).tolist()}
    with torch.no_grad():
        s = student(batch["x"])
        target = method.teachers.cached_stack()[:, batch["index"]]
        assert torch.equal(method.teacher_logits(batch, step), selected_logits(target, sel))
    assert float(got["kd"].detach()) == pytest.approx(0.5 * float(selected_kd(s, target, sel, 2.0)), rel=1e-6)
    with torch.no_grad():
        rev = 3.0**2 * torch.nn.functional.kl_div(
            torch.log_softmax(selected_logits(target, sel) / 3.0, 1), torch.log_softmax(s / 3.0, 1),
            reduction="batchmean", log_target=True)
    assert float(got["reverse_kd"].detach()) == pytest.approx(0.25 * float(rev), rel=1e-5)


def test_recipe_terms_reach_the_regime():
    splits = toy_splits()
    teachers = _teachers(splits)
    base = {"data": {"name": "synthetic"}, "student": {"model": "cnn1d"},
            "teachers": [{"name": t.name, **t.config.model_dump(exclude={"name"})} for t in teachers]}
    recipe = load_recipe({**base, "method": {"name": "ceskd", "params": {"strata": 2},
                                             "terms": [{"loss": "ce", "weight": 0.3}, {"loss": "kd", "weight": 0.7, "temperature": 2}]}})
    method = CESKD.from_recipe(recipe, student=tiny_net(classes=3), teacher=None, info=splits.info, teachers=teachers)
    assert [t.describe() for t in method.terms] == [{"loss": "ce", "weight": 0.3},
                                                    {"loss": "kd", "weight": 0.7, "temperature": 2.0}]
    assert method.n_strata == 2
    feats = load_recipe({**base, "method": {"name": "ceskd", "terms": [{"loss": "fitnet", "weight": 1.0, "student_tap": "1", "teacher_tap": "1"}]}})
    with pytest.raises(UserInputError, match=r"^method\.terms\[0\]: loss 'fitnet' reads teacher features"):
        CESKD.from_recipe(feats, student=tiny_net(classes=3), teacher=None, info=splits.info, teachers=teachers)
