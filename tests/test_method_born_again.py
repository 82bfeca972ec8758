"""born_again: the generation plan, the loss (BAN soft CE = KD at T = 1 up to a constant), the ensemble row,
the errors, and one end-to-end run of a chain on synthetic data."""
import json

import pytest
import torch

import edgedistill
from edgedistill.config import load_recipe
from edgedistill.errors import UserInputError
from edgedistill.losses.response import kd
from edgedistill.methods.born_again import BornAgain, generation_seed
from edgedistill.methods.base import TeacherNet
from tests.helpers import tiny_net, toy_splits

RECIPE = {
    "name": "ban",
    "data": {"name": "synthetic", "params": {"n_subjects": 5, "windows_per_subject": 12, "length": 32}},
    "student": {"model": "cnn1d", "width": 4, "depth": 2, "head": "segments"},
    "method": {"name": "born_again", "params": {"generations": 3}},
    "train": {"epochs": 1, "batch_size": 16, "lr": 0.01},
    "seeds": [0],
    "engine": {"progress": False},
}

# tests/reference/ref_others.py: the shared inputs ZS, ZT and the section 17 value BAN_softCE.
ZS = torch.tensor([[1.0, 2.0, 0.5, -1.0], [0.0, -0.5, 1.5, 0.3], [2.0, 0.1, -0.3, 0.7]], dtype=torch.float64)
ZT = torch.tensor([[2.0, 1.0, 0.0, -0.5], [0.2, 0.1, 2.5, -1.0], [1.5, 0.5, 0.0, 1.0]], dtype=torch.float64)


def _recipe(**changes):
    d = json.loads(json.dumps(RECIPE))
    for key, value in changes.items():
        node = d
        *path, last = key.split(".")
        for part in path:
            node = node.setdefault(part, {})
        node[last] = value
    return load_recipe(d)


def test_plan_for_three_generations_is_a_chain_of_the_students_architecture():
    r = _recipe()
    plan = BornAgain.teacher_plan(r, seed=0)
    assert [t.name for t in plan] == ["gen0", "gen1", "gen2"]
    assert [t.distill_from for t in plan] == [None, "gen0", "gen1"]
    assert plan[0].terms == [] and all(t.terms for t in plan[1:])
    for t in plan:
        assert t.model == "cnn1d" and t.kwargs == {"width": 4, "depth": 2, "head": "segments"}
        assert t.train == r.train and t.view == "x" and t.checkpoint is None
    # BAN's generation loss by default: kd at T = 1, weight 1
    term = plan[1].terms[0]
    assert (term.loss, term.weight, term.params) == ("kd", 1.0, {"temperature": 1.0})
    load_recipe({**RECIPE, "method": {"name": "offline", "terms": [{"loss": "ce"}]},
                 "teachers": [t.model_dump(mode="json", exclude_none=True) for t in plan]})  # a valid teachers list


def test_each_run_seed_has_its_own_chain():
    r = _recipe()
    seeds = {s: [t.seed for t in BornAgain.teacher_plan(r, s)] for s in (0, 1, 2)}
    every = [x for v in seeds.values() for x in v]
    assert len(set(every)) == len(every)  # no generation shares a seed with another generation or chain
    assert not set(every) & {0, 1, 2}  # gen0 is not a copy of the student-alone baseline
    assert seeds[1] == [generation_seed(1, k) for k in range(3)]


def test_method_terms_replace_the_generation_loss_everywhere():
    terms = [{"loss": "ce", "weight": 0.5}, {"loss": "kd", "weight": 0.5, "temperature": 4}]
    r = _recipe(**{"method.terms": terms, "method.params": {"generations": 1}})
    plan = BornAgain.teacher_plan(r, 0)
    assert len(plan) == 1 and plan[0].terms == []  # one generation: gen0 on labels, the student from gen0
    splits = toy_splits()
    teachers = [TeacherNet("gen0", tiny_net(), plan[0])]
    m = BornAgain.from_recipe(r, student=tiny_net(), teacher=teachers[0].model, info=splits.info, train=splits.train,
                              teachers=teachers)
    assert [(t.label, t.weight) for t in m.terms] == [("ce", 0.5), ("kd", 0.5)]


def test_ban_soft_cross_entropy_is_kd_at_t1_plus_a_constant_with_the_same_gradient():
    zs = ZS.clone().requires_grad_(True)
    p_t = torch.softmax(ZT, 1)
    soft_ce = -(p_t * torch.log_softmax(zs, 1)).sum(1).mean()
    assert soft_ce.item() == pytest.approx(1.182683, abs=1e-6)  # BAN_softCE
    entropy = -(p_t * p_t.log()).sum(1).mean()
    ours = kd(zs, ZT, temperature=1.0)
    assert (ours + entropy).item() == pytest.approx(soft_ce.item(), abs=1e-12)
    g_soft, = torch.autograd.grad(soft_ce, zs)
    g_ours, = torch.autograd.grad(kd(zs, ZT, temperature=1.0), zs)
    assert torch.allclose(g_soft, g_ours, atol=1e-12)


def test_ensemble_row_averages_every_generation_and_keeps_ancestors_frozen():
    from edgedistill.engine.evaluate import predict

    splits = toy_splits()
    r = _recipe(**{"method.params": {"generations": 2}})
    plan = BornAgain.teacher_plan(r, 0)
    torch.manual_seed(0)
    teachers = [TeacherNet(t.name, tiny_net(), t) for t in plan]
    m = BornAgain.from_recipe(r, student=tiny_net(), teacher=teachers[-1].model, info=splits.info,
                              train=splits.train, teachers=teachers)
    assert m.teacher is teachers[-1].model  # the student learns from the last generation
    m.setup(splits.train, torch.device("cpu"))
    (name, ens), = m.evaluated().items()
    assert name == "BAN ensemble (gen0-gen2)"
    x = splits.val.x
    nets = [t.model for t in teachers] + [m.networks["student"]]
    for n in nets:
        n.eval()
    want = torch.log(torch.stack([torch.softmax(n(x), 1) for n in nets]).mean(0))
    m.networks["student"].train()
    got = predict(ens, splits.val, torch.device("cpu"))
    assert torch.allclose(got, want, atol=1e-5)
    assert not any(t.model.training for t in teachers)
    assert not any(p.requires_grad for t in teachers for p in t.model.parameters())


@pytest.mark.parametrize("params, message", [
    ({"generations": 0}, r"method.params.generations: .*greater than or equal to 1"),
    ({"generations": "two"}, r"method.params.generations: .*valid integer"),
    ({"generations": 1.5}, r"method.params.generations: .*valid integer"),
    ({"generations": 2, "gens": 3}, r"method.params.gens: unknown parameter .*expected one of: .*generations"),
])
def test_bad_params_fail_before_training_naming_the_key(tmp_path, params, message):
    with pytest.raises(UserInputError, match=message):
        edgedistill.run({**RECIPE, "method": {"name": "born_again", "params": params}}, out=tmp_path / "never", progress=False)
    assert not (tmp_path / "never").exists()


def test_generations_must_match_the_teachers_given():
    splits = toy_splits()
    r = _recipe(**{"method.params": {"generations": 3}})
    teachers = [TeacherNet(t.name, tiny_net(), t) for t in BornAgain.teacher_plan(r, 0)[:2]]
    with pytest.raises(UserInputError, match=r"^method\.params\.generations: 3 earlier generation\(s\) expected .*got 2"):
        BornAgain.from_recipe(r, student=tiny_net(), teacher=teachers[-1].model, info=splits.info, train=splits.train,
                              teachers=teachers)


def test_a_teacher_section_is_refused(tmp_path):
    recipe = {**RECIPE, "teacher": {"model": "fcn", "width": 0.25, "train": {"epochs": 1}}}
    with pytest.raises(UserInputError, match=r"teacher: born_again trains its own generations"):
        edgedistill.run(recipe, out=tmp_path / "never", progress=False)


def test_end_to_end_chain_trains_each_generation_and_reports_the_ensemble(tmp_path):
    recipe = {**RECIPE, "method": {"name": "born_again", "params": {"generations": 2}}, "seeds": [0, 1], "baseline": False}
    summary = edgedistill.run(recipe, out=tmp_path / "run", progress=False)
    roles = {r["model"]: r["role"] for r in summary["rows"]}
    assert roles["gen0: cnn1d"] == "teacher"
    assert roles["gen1: cnn1d"] == "assistant (from gen0)"
    assert roles["cnn1d + born_again"] == "method"
    assert roles["BAN ensemble (gen0-gen2)"] == "also trained (not the deliverable)"
    keys = set()
    for seed in (0, 1):  # one chain per seed, in its own folders, each generation its own cached model
        for gen in ("gen0", "gen1"):
            s = json.loads((tmp_path / "run" / gen / f"seed{seed}" / "summary.json").read_text())
            keys.add(s["cache_key"])
        line = json.loads((tmp_path / "run" / "born_again" / f"seed{seed}" / "metrics.jsonl").read_text().splitlines()[0])
        assert set(line["train"]) == {"kd", "total"} and "BAN ensemble (gen0-gen2)" in line["val_others"]
    assert len(keys) == 4
    gen1 = next(r for r in summary["rows"] if r["model"] == "gen1: cnn1d")
    assert len(gen1["per_seed_test"]) == 2  # the report counts each seed's generation
