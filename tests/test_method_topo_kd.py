"""topo_kd: the test vectors of tests/reference/ref_asu.py sections 5 and 6 (the TDA-KD loss, official code
https://github.com/jeunsom/TDA_KD; the TGD merged similarity map, https://github.com/jeunsom/TGD), their properties,
the orthogonality term in the seed's form (the student's correlation maps pushed to the identity, the default) and
in the former matching form (``correlation: match``) with its invariances, the annealing schedule and the spec's
Annealing-KD phase-1 vector, frozen teachers on their own views, gradients reaching only the student, the scratch
initialisation, clear errors, and an end-to-end run with a PI teacher on synthetic windows."""
import copy
import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import edgedistill
from edgedistill.config import TeacherConfig, TermConfig, load_recipe
from edgedistill.data.dataset import DataInfo
from edgedistill.errors import UserInputError
from edgedistill.methods.base import Step, TeacherNet
from edgedistill.losses.multiteacher import correlation_orthogonality
from edgedistill.methods.topo_kd import (DEFAULT_TERMS, INIT_NAME, TopoKD, annealed_mse, annealing_factor,
                                         correlation_match_loss, kd_term, merged_map, merged_similarity_loss,
                                         similarity_map, std_scaled)

D = torch.float64
STEP = Step(epoch=0, step=0, epochs=1, steps_per_epoch=1)


def test_tda_kd_test_vector():
    zs = torch.tensor([[1, 0, 2, -1], [0.5, 0.5, 0, 1]], dtype=D)
    zi = torch.tensor([[2, 0, 3, -2], [0, 1, 0, 2]], dtype=D)
    zg = torch.tensor([[0, 0, 1, 0], [1, 0, 0, 1.5]], dtype=D)
    y = torch.tensor([2, 3])
    ce = F.cross_entropy(std_scaled(zs), y)
    assert float(ce) == pytest.approx(0.5434405330, abs=1e-9)
    assert float(kd_term(zs, zi, 4.0, "std", "mean")) / 16 == pytest.approx(0.0106594217, abs=1e-9)
    assert float(kd_term(zs, zg, 4.0, "std", "mean")) / 16 == pytest.approx(0.0320608370, abs=1e-9)
    total = 0.01 * ce + 0.99 * (0.7 * kd_term(zs, zi, 4.0) + 0.3 * kd_term(zs, zg, 4.0))
    assert float(total) == pytest.approx(0.2759791706, abs=1e-9)


def test_fixed_rule_batchmean_is_hinton_kd():
    zs, zt = torch.randn(5, 3, dtype=D), torch.randn(5, 3, dtype=D)
    ref = F.kl_div(F.log_softmax(zs / 2, 1), F.softmax(zt / 2, 1), reduction="batchmean") * 4
    assert float(kd_term(zs, zt, 2.0, "fixed", "batchmean")) == pytest.approx(float(ref))
    assert float(kd_term(zt, zt, 2.0, "fixed", "batchmean")) == pytest.approx(0.0, abs=1e-12)


def test_tgd_merged_similarity_test_vector():
    fs = torch.tensor([[1, 0, 1], [0, 2, 0], [1, 1, 1]], dtype=D)
    t1 = torch.tensor([[2, 0, 0, 1], [0, 1, 1, 0], [1, 1, 0, 1]], dtype=D)
    t2 = torch.tensor([[0, 1], [1, 0], [1, 1]], dtype=D)
    assert float(merged_similarity_loss(fs, [t1, t2], [0.99, 0.01])) == pytest.approx(0.0184942181, abs=1e-9)


def test_alpha_one_merged_map_is_teacher_one_and_global_scale_does_not_matter():
    f1, f2, fs = torch.randn(6, 4, 5, dtype=D), torch.randn(6, 7, dtype=D), torch.randn(6, 3, 2, dtype=D)
    assert torch.allclose(merged_map([f1, f2], [1.0, 0.0]), similarity_map(f1))
    base = merged_similarity_loss(fs, [f1, f2], [0.7, 0.3])
    assert float(merged_similarity_loss(3 * fs, [f1, f2], [0.7, 0.3])) == pytest.approx(float(base))
    # scaling one teacher against the other changes the merge
    assert float(merged_similarity_loss(fs, [5 * f1, f2], [0.7, 0.3])) != pytest.approx(float(base))
    o = correlation_match_loss(fs, [f1, f2], [0.7, 0.3], patches=2)
    assert float(correlation_match_loss(2.5 * fs, [f1, f2], [0.7, 0.3], patches=2)) == pytest.approx(float(o))
    assert float(correlation_match_loss(f1, [f1], [1.0], patches=3)) == pytest.approx(0.0, abs=1e-12)
    assert float(o) > 0


class Probe(nn.Module):
    """A tiny conv net that asserts the channel count it is fed (its view) and exposes default taps."""

    def __init__(self, channels, classes=3, conv=nn.Conv1d):
        super().__init__()
        self.channels = channels
        self.stage1 = conv(channels, 4, 3, padding=1)
        self.stage2 = conv(4, 4, 3, padding=1)
        self.feat = conv(4, 4, 3, padding=1)
        self.head = nn.Linear(4, classes)
        self.default_taps = {"stage1": "stage1", "stage2": "stage2", "feat": "feat"}

    def forward(self, x):
        assert x.shape[1] == self.channels, f"fed {x.shape[1]} channels, expected {self.channels}"
        h = self.feat(torch.relu(self.stage2(torch.relu(self.stage1(x)))))
        return self.head(h.flatten(2).mean(-1))


def _info():
    return DataInfo(name="toy", task="classification", input_shape=(2, 16), n_outputs=3, classes=["0", "1", "2"],
                    views={"x": (2, 16), "pi": (2, 8, 8)}, sizes={"train": 8})


def _teachers():
    return [TeacherNet("raw", Probe(2), TeacherConfig(model="fcn", view="x", name="raw")),
            TeacherNet("pi", Probe(2, conv=nn.Conv2d), TeacherConfig(model="cnn2d", view="pi", name="pi"))]


def _batch(b=8):
    return {"x": torch.randn(b, 2, 16), "pi": torch.randn(b, 2, 8, 8), "y": torch.randint(0, 3, (b,)),
            "index": torch.arange(b)}


def test_step_terms_frozen_teachers_and_student_gradients():
    teachers = _teachers()
    before = [copy.deepcopy(t.model.state_dict()) for t in teachers]
    terms = [TermConfig(loss="ce", weight=0.01), TermConfig(loss="kd", weight=0.99), TermConfig(loss="sim", weight=10.0),
             TermConfig(loss="orth", weight=200.0)]
    m = TopoKD(Probe(2), _info(), teachers, terms, init="none")
    out = m.training_step(_batch(), STEP)
    assert set(out) == {"ce", "kd", "sim", "orth"}
    sum(out.values()).backward()
    assert all(p.grad is not None for p in m.networks["student"].parameters())
    for t, state in zip(teachers, before):
        assert not t.model.training and all(not p.requires_grad and p.grad is None for p in t.model.parameters())
        assert all(torch.equal(v, state[k]) for k, v in t.model.state_dict().items())
    # the weights: alpha on the first teacher, 1 - alpha on the second
    assert m.weights == [0.3, 0.7]


def test_default_terms_are_the_old_weighting():
    """No method.terms: (1 - 0.99) CE + 0.99 (0.3 KD_raw + 0.7 KD_pi) + 200 orth, as the old lam/orth_weight."""
    assert [(t.loss, t.weight) for t in DEFAULT_TERMS] == [("ce", 1.0 - 0.99), ("kd", 0.99), ("orth", 200.0)]
    torch.manual_seed(0)
    m = TopoKD(Probe(2), _info(), _teachers(), init="none")
    b = _batch()
    out = m.training_step(b, STEP)
    assert set(out) == {"ce", "kd", "orth"} and m._student_taps is not None
    assert m._teacher_taps == [None, None]  # the seed's orthogonality reads the student's maps only
    with torch.no_grad():
        z_s = m.networks["student"](b["x"])
        z_raw, z_pi = m.teachers[0].model(b["x"]), m.teachers[1].model(b["pi"])
    ref_kd = 0.99 * 0.3 * kd_term(z_s, z_raw, 4.0) + 0.99 * 0.7 * kd_term(z_s, z_pi, 4.0)
    assert float(out["ce"].detach()) == pytest.approx(float((1.0 - 0.99) * F.cross_entropy(std_scaled(z_s), b["y"])), rel=1e-6)
    assert float(out["kd"].detach()) == pytest.approx(float(ref_kd), rel=1e-6)


def test_kd_weight_zero_and_no_feature_terms_is_plain_ce():
    terms = [TermConfig(loss="ce", weight=1.0), TermConfig(loss="kd", weight=0.0)]
    m = TopoKD(Probe(2), _info(), _teachers(), terms, temperature_rule="fixed", init="none")
    assert m._student_taps is None and m._teacher_taps == [None, None]  # no sim/orth term: no feature hooks
    b = _batch()
    out = m.training_step(b, STEP)
    assert float(out["kd"].detach()) == 0 and set(out) == {"ce", "kd"}
    assert float(out["ce"].detach()) == pytest.approx(float(F.cross_entropy(m.networks["student"](b["x"]), b["y"]).detach()), rel=1e-6)
    # a feature term at weight 0 builds no hooks either
    zero = [TermConfig(loss="ce"), TermConfig(loss="orth", weight=0.0)]
    assert TopoKD(Probe(2), _info(), _teachers(), zero, init="none")._student_taps is None


def test_single_pi_teacher_gets_all_the_weight():
    m = TopoKD(Probe(2), _info(), _teachers()[1:], init="none")
    assert m.weights == [1.0] and set(m.training_step(_batch(), STEP)) == {"ce", "kd", "orth"}


def test_scratch_init_plan_and_loaded_weights():
    rec = load_recipe({"data": {"name": "synthetic"}, "student": {"model": "cnn1d", "width": 8},
                       "teachers": [{"name": "pi", "model": "cnn2d", "view": "pi"}],
                       "method": {"name": "topo_kd"}, "train": {"epochs": 3}})
    plan = TopoKD.teacher_plan(rec, seed=2)
    assert [t.name for t in plan] == ["pi", INIT_NAME]
    assert plan[1].model == "cnn1d" and plan[1].kwargs["width"] == 8 and plan[1].seed == 2 and plan[1].train.epochs == 3
    rec_none = rec.model_copy(update={"method": rec.method.model_copy(update={"params": {"init": "none"}})})
    assert [t.name for t in TopoKD.teacher_plan(rec_none, seed=0)] == ["pi"]
    init = Probe(2)
    student = Probe(2)
    TopoKD(student, _info(), _teachers() + [TeacherNet(INIT_NAME, init, TeacherConfig(model="cnn1d", name=INIT_NAME))])
    assert all(torch.equal(a, b) for a, b in zip(student.state_dict().values(), init.state_dict().values()))


@pytest.mark.parametrize("kwargs, match", [
    ({"alpha": 1.5}, "alpha"), ({"temperature_rule": "cosine"}, "temperature_rule"), ({"patches": 0}, "patches"),
    ({"layers": ["nope"]}, "layers"), ({"init": "pretrained"}, "init"), ({"correlation": "orthonormal"}, "correlation"),
    ({"anneal_epochs": -1}, "anneal_epochs"), ({"anneal_max_temperature": 0.5}, "anneal_max_temperature"),
])
def test_bad_params_are_named(kwargs, match):
    with pytest.raises(UserInputError, match=match):
        TopoKD(Probe(2), _info(), _teachers(), **kwargs)


@pytest.mark.parametrize("kwargs, match", [
    ({"lam": 0.5}, r"method.params.lam: unknown parameter"), ({"orth_weight": 0}, r"method.params.orth_weight: unknown"),
    ({"terms": [TermConfig(loss="kd_pi")]}, r"method.terms\[0\].loss: method 'topo_kd' weights its own losses: ce .*orth"),
    ({"terms": [TermConfig(loss="kd", temperature=2)]}, r"method.terms\[0\]: 'kd' takes weight, start_epoch"),
])
def test_weights_are_recipe_terms(kwargs, match):
    with pytest.raises(UserInputError, match=match):
        TopoKD(Probe(2), _info(), _teachers(), **kwargs)


def test_needs_one_or_two_teachers_with_existing_views():
    with pytest.raises(UserInputError, match=r"^teachers: method .topo_kd. needs 1 to 2 teachers.*\(1: PI; 2: raw signal, PI\)"):
        TopoKD(Probe(2), _info(), _teachers() + _teachers()[:1])
    info = _info()
    info.views.pop("pi")
    with pytest.raises(UserInputError, match="data.topology"):
        TopoKD(Probe(2), info, _teachers())


def test_end_to_end_with_a_pi_teacher(tmp_path):
    recipe = {
        "name": "topo-e2e",
        "data": {"name": "synthetic", "params": {"n_subjects": 4, "windows_per_subject": 8, "n_classes": 3, "length": 32},
                 "topology": {"resolution": 8, "spread": 0.05}},
        "teachers": [{"name": "raw", "model": "cnn1d", "width": 8, "view": "x", "train": {"epochs": 1, "batch_size": 8}},
                     {"name": "pi", "model": "cnn2d", "width": 4, "view": "pi", "train": {"epochs": 1, "batch_size": 8}}],
        "student": {"model": "cnn1d", "width": 4},
        "method": {"name": "topo_kd", "terms": [{"loss": "ce", "weight": 0.01}, {"loss": "kd", "weight": 0.99},
                                                {"loss": "sim", "weight": 1.0}, {"loss": "orth", "weight": 200.0}]},
        "train": {"epochs": 1, "batch_size": 8}, "seeds": [0],
    }
    summary = edgedistill.run(recipe, out=tmp_path / "run", progress=False)
    roles = {r["role"] for r in summary["rows"]}
    assert "method" in roles and (tmp_path / "run" / "report.md").is_file()
    line = json.loads((tmp_path / "run" / "topo_kd" / "seed0" / "metrics.jsonl").read_text().splitlines()[0])
    assert set(line["train"]) == {"ce", "kd", "sim", "orth", "total"} and line["train"]["sim"] > 0


def _student_maps(m, b):
    with m._student_taps:
        m.networks["student"](b["x"])
    return dict(m._student_taps.outputs)


def test_orthogonality_is_the_seeds_form_by_default_and_matching_is_an_option():
    torch.manual_seed(1)
    terms = [TermConfig(loss="orth", weight=1.0)]
    b = _batch(8)
    seed = TopoKD(Probe(2), _info(), _teachers(), terms, init="none")
    assert seed.params.correlation == "orthogonal"
    f_s = _student_maps(seed, b)
    want = sum(correlation_orthogonality(f_s[n], patches=4) for n in seed.layers)
    assert float(seed.training_step(b, STEP)["orth"].detach()) == pytest.approx(float(want.detach()), rel=1e-6)
    # Orthogonal: the penalty is 0 for mutually orthogonal samples whatever the teachers are; matching is not.
    eye = torch.eye(4, dtype=D).reshape(4, 4, 1)
    assert float(correlation_orthogonality(eye, patches=1)) == pytest.approx(0.0, abs=1e-12)
    match = TopoKD(Probe(2), _info(), _teachers(), terms, init="none", correlation="match")
    match.networks["student"].load_state_dict(seed.networks["student"].state_dict())
    out = match.training_step(b, STEP)["orth"].detach()
    with torch.no_grad():
        f_t = []
        for k, tap in enumerate(match._teacher_taps):
            match.teachers.run(b, k, taps=tap)
            f_t.append(dict(tap.outputs))
    ref = sum(correlation_match_loss(f_s[n], [f[n] for f in f_t], match.weights, 4) for n in match.layers)
    assert float(out) == pytest.approx(float(ref.detach()), rel=1e-6) and float(out) != pytest.approx(float(want.detach()), rel=1e-3)
    # A last batch smaller than `patches` uses one group per sample instead of failing.
    assert torch.isfinite(seed.training_step(_batch(3), STEP)["orth"].detach())


@pytest.mark.parametrize("tau, value", [(10, 0.1866666667), (5, 1.1366666667), (1, 4.4166666667)])
def test_annealing_kd_phase_one_vector(tau, value):
    # tests/reference/ref_asu.py: MSE(z_S, Phi(T) z_T), Phi(T) = 1 - (T - 1) / tau_max, tau_max = 10
    z_t, z_s = torch.tensor([[4.0, -2.0, 1.0]], dtype=D), torch.tensor([[1.0, 0.0, 0.5]], dtype=D)
    assert float(annealed_mse(z_s, z_t, 1 - (tau - 1) / 10)) == pytest.approx(value, abs=1e-9)


def test_annealing_schedule_steps_the_temperature_down_to_one():
    # 20 annealing epochs, tau_max 10: T = 10 for epochs 0-1, 9 for 2-3, ..., 1 for 18-19; Phi = 1 after (and off).
    phis = [annealing_factor(e, 20, 10.0) for e in range(22)]
    assert phis[0] == pytest.approx(0.1) and phis[10] == pytest.approx(0.6) and phis[19] == pytest.approx(1.0)
    assert phis == sorted(phis) and phis[20:] == [1.0, 1.0] and annealing_factor(5, 0, 10.0) == 1.0


def test_the_anneal_term_runs_in_phase_one_only_and_reads_the_annealed_teachers():
    terms = [TermConfig(loss="anneal", weight=1.0), TermConfig(loss="kd", weight=0.99, start_epoch=4)]
    m = TopoKD(Probe(2), _info(), _teachers(), terms, init="none", anneal_epochs=4, anneal_max_temperature=4.0)
    b = _batch()
    out = {k: v.detach() for k, v in m.training_step(b, STEP).items()}
    with torch.no_grad():
        z_s = m.networks["student"](b["x"])
        z_raw, z_pi = m.teachers[0].model(b["x"]), m.teachers[1].model(b["pi"])
    phi = 1 - (4 - 1) / 4  # epoch 0: T = tau_max = 4
    ref = 0.3 * F.mse_loss(z_s, phi * z_raw) + 0.7 * F.mse_loss(z_s, phi * z_pi)
    assert float(out["anneal"]) == pytest.approx(float(ref), rel=1e-6) and float(out["kd"]) == 0.0  # kd not started
    later = {k: v.detach() for k, v in m.training_step(b, Step(epoch=4, step=0, epochs=5, steps_per_epoch=1)).items()}
    assert float(later["anneal"]) == 0.0 and float(later["kd"]) > 0  # phase 2: KD on, the annealing over
    with pytest.raises(UserInputError, match="anneal_epochs > 0"):
        TopoKD(Probe(2), _info(), _teachers(), terms, init="none")
