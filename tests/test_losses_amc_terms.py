"""AMC-Loss and the Orthogonal-Sphere regulariser as recipe terms (issue 24 item 9): the spec's vectors reached through
the term binding (roles ``student_emb`` and ``target``), the paper's ramp-up w(t) = 10 exp(-5 (1 - t/50)^2) through
the per-term schedule (``ramp: sigmoid``) with the spec's values w(10), w(25), w(>= 50), the shipped recipes, and an
end-to-end run where the term is logged, is 0 in the first epoch and changes the student."""
import json

import pytest
import torch

import edgedistill
from edgedistill.config import TermConfig, load_recipe
from edgedistill.errors import UserInputError
from edgedistill.methods.base import Step
from edgedistill.methods.terms import bind_terms
from edgedistill.shipped_recipes import shipped_dir
from tests.helpers import TINY_RECIPE

D = torch.float64
EMB = torch.tensor([[1.0, 0, 0], [0, 1, 0], [1, 1, 0], [0, 1, 1]], dtype=D)  # the spec's AMC input
EMB_Y = torch.tensor([0, 1, 0, 2])
FM = torch.tensor([[3.0, 4, 0], [0, 1, 1], [2, 0, 2], [1, 1, 1]], dtype=D)  # the spec's OS input
AMC_TERM = {"loss": "amc", "weight": 10.0, "start_epoch": 1, "warmup_epochs": 50, "ramp": "sigmoid"}


def _bound(term: dict, task: str = "classification"):
    (bound,) = bind_terms([TermConfig(**term)], task)
    return bound


def test_the_terms_read_the_student_embedding_and_the_labels():
    amc, os_ = _bound({"loss": "amc", "margin": 1.5}), _bound({"loss": "orthogonal_sphere", "variant": "B"})
    assert amc.roles == ("student_emb", "target") and amc.taps == {"student_emb": "emb"}
    assert os_.roles == ("student_emb",) and os_.taps == {"student_emb": "emb"}
    # The spec's vectors (tests/reference/ref_asu.py) through the bound terms: L_AMC(m = 1.5), OS variant B.
    assert float(amc({"student@emb": EMB, "target": EMB_Y, "student_emb": EMB})) == pytest.approx(0.5637530300, abs=1e-9)
    assert float(os_({"student@emb": FM, "student_emb": FM})) == pytest.approx(2.0105820106, abs=1e-9)


@pytest.mark.parametrize("epoch, weight", [(0, 0.0), (10, 0.4076220398), (25, 2.8650479686), (50, 10.0), (80, 10.0)])
def test_the_papers_ramp_up_through_the_per_term_schedule(epoch, weight):
    # AMC-Loss code: w(t) = coeff_gs 0.1 * wght_max 100 * exp(-5 (1 - t/50)^2) for t < 50, w = 0 at the first epoch.
    config = TermConfig(**AMC_TERM)
    assert config.weight * config.factor(epoch) == pytest.approx(weight, abs=1e-9)
    term = _bound(AMC_TERM)
    value = term({"student@emb": EMB, "target": EMB_Y, "student_emb": EMB}, Step(epoch, 0, 1, 1))
    assert float(value) == pytest.approx(weight * 0.3084251375, abs=1e-9)


@pytest.mark.parametrize("term, needle", [
    ({"loss": "amc", "margin": "wide"}, "method.terms[0].margin"),
    ({"loss": "orthogonal_sphere", "variant": "D"}, "method.terms[0].variant"),
    ({"loss": "amc", "ramp": "exp"}, "ramp"),
    ({"loss": "amc", "teacher_tap": "emb"}, "reads no teacher features"),
])
def test_bad_settings_are_named(term, needle):
    with pytest.raises((UserInputError, ValueError)) as err:
        _bound(term)
    assert needle in str(err.value)


def test_amc_is_for_classification_only():
    with pytest.raises(UserInputError, match="loss 'amc' is for classification"):
        _bound({"loss": "amc"}, task="regression")


@pytest.mark.parametrize("name", ["amc", "orthogonal_sphere"])
def test_the_shipped_recipes_load(name):
    recipe = load_recipe(shipped_dir() / f"{name}.yaml")
    losses = [t.loss for t in recipe.method.terms]
    assert losses == ["ce", name] and recipe.method.terms[1].ramp == "sigmoid"


def test_end_to_end_the_amc_term_is_off_then_on_and_changes_the_student(tmp_path):
    base = {**json.loads(json.dumps(TINY_RECIPE)), "seeds": [0], "train": {"epochs": 2, "batch_size": 16}}
    base.pop("teacher")
    amc = {**base, "method": {"name": "offline", "terms": [
        {"loss": "ce"}, {"loss": "amc", "weight": 10.0, "start_epoch": 1, "warmup_epochs": 1, "ramp": "sigmoid"}]}}
    edgedistill.run(amc, out=tmp_path / "amc", progress=False)
    rows = [json.loads(line) for line in (tmp_path / "amc" / "offline" / "seed0" / "metrics.jsonl").read_text().splitlines()]
    logged = [r["train"]["amc"] for r in rows if "train" in r and "amc" in r["train"]]
    assert len(logged) == 2 and logged[0] == 0.0 and all(v > 0 for v in logged[1:])
    alone = json.loads((tmp_path / "amc" / "student_alone" / "seed0" / "summary.json").read_text())
    with_amc = json.loads((tmp_path / "amc" / "offline" / "seed0" / "summary.json").read_text())
    assert alone["test"]["last"] != with_amc["test"]["last"]  # same seed and batches: only the AMC term differs
