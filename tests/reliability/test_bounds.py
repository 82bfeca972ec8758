"""Every bad input is a one-line error with exit 2, raised before any folder is created (issue 16, item 4).

One table of hostile or careless inputs: YAML built to hang or exhaust memory, duplicate keys, overrides of
absurd forms, NaN/inf/huge/negative numbers, networks far over the parameter budget, and loss terms of an
assistant chain that are only used after an earlier teacher trains. Each goes through the CLI (in process,
``edgedistill run RECIPE [OVERRIDES] --out OUT``, with and without ``--smoke``) and must exit 2 with one line
naming the key, leaving ``OUT`` uncreated.
"""
from __future__ import annotations

import time

import pytest
import yaml
from typer.testing import CliRunner

from edgedistill.cli import app
from edgedistill.config import load_recipe
from edgedistill.errors import MESSAGE_LIMIT, UserInputError
from edgedistill.yaml_io import MAX_FILE_BYTES, parse_override, safe_load

# A valid recipe that plans in a fraction of a second: tiny synthetic data, a teacher and an assistant chain.
TERMS = [{"loss": "ce", "weight": 0.1}, {"loss": "kd", "weight": 0.9, "temperature": 4}]
BASE = {
    "name": "bounds",
    "data": {"name": "synthetic", "params": {"n_subjects": 4, "windows_per_subject": 6, "n_classes": 3, "length": 32}},
    "teachers": [
        {"name": "big", "model": "cnn1d", "width": 8, "train": {"epochs": 1, "batch_size": 8}},
        {"name": "ta", "model": "cnn1d", "width": 4, "distill_from": "big", "train": {"epochs": 1, "batch_size": 8},
         "terms": [dict(t) for t in TERMS]},
    ],
    "student": {"model": "cnn1d", "width": 4},
    "method": {"name": "takd", "terms": [dict(t) for t in TERMS]},
    "train": {"epochs": 1, "batch_size": 8},
    "seeds": [0],
    "baseline": False,
    "engine": {"progress": False},
}
BASE_YAML = yaml.safe_dump(BASE, sort_keys=False)


def _laughs(levels: int = 9) -> str:
    lines = ["name: bounds", "lol0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"lol{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n" + BASE_YAML.replace("name: bounds\n", "")


# (id, recipe YAML text, overrides, text the one-line message must contain)
YAML_CASES = [
    ("billion-laughs", _laughs(), [], "aliases expand the document beyond"),
    ("recursive-alias", "a: &a [1, *a]\n" + BASE_YAML, [], "recursive document"),
    ("duplicate-key", BASE_YAML + "seeds: [1]\n", [], "key 'seeds' is given twice"),
    ("duplicate-nested-key", BASE_YAML.replace("  width: 4\n", "  width: 4\n  width: 8\n", 1), [], "key 'width'"),
    ("bool-key", BASE_YAML + "yes: 1\n", [], "key True (of type bool) is not a name"),
    ("int-key", BASE_YAML.replace("data:\n", "data:\n  1: 2\n", 1), [], "key 1 (of type int) is not a name"),
    ("depth-1000", BASE_YAML + "deep: " + "[" * 1000 + "]" * 1000 + "\n", [], "nested deeper than 32 levels"),
    ("2MB-file", BASE_YAML + "# " + "x" * (2 * MAX_FILE_BYTES) + "\n", [], "larger than 1,000,000 bytes"),
    ("binary-file", None, [], "is not UTF-8 text"),
    ("not-a-mapping", "- 1\n- 2\n", [], "expected a mapping at the top level"),
]
OVERRIDE_CASES = [
    ("empty-segment", ["a..b=1"], "empty key segment"),
    ("empty-key", ["=1"], "empty key segment"),
    ("no-equals", ["train.lr"], "expected key.sub=value"),
    ("10k-segments", [".".join(["a"] * 10_000) + "=1"], "the limit is 10,000"),
    ("40-segments", [".".join(["a"] * 40) + "=1"], "segments; at most 16"),
    ("space-in-key", ["train lr=1"], "is not a name or list index"),
    ("key-under-a-list-item", ["seeds.0.x=1"], "'seeds.0' is 0, not a mapping or list"),
    ("key-under-a-number", ["train.epochs.x=1"], "'train.epochs' is 1, not a mapping or list"),
    ("laughs-in-value", ["method.params={" + ", ".join(
        ["l0: &l0 [1, 1, 1, 1, 1, 1, 1, 1, 1]"] + [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, 7)])
        + "}"], "aliases expand the document beyond"),
    ("huge-int", ["train.lr=" + "1" * 5000], "a value cannot be read"),
    ("nan-lr", ["train.lr=.nan"], "train.lr: expected a finite number"),
    ("inf-lr", ["train.lr=.inf"], "train.lr: expected a finite number"),
    ("zero-lr", ["train.lr=0"], "train.lr: Input should be greater than 0"),
    ("huge-lr", ["train.lr=1e3"], "train.lr: Input should be less than or equal to 10"),
    ("teacher-nan-lr", ["teachers.1.train.lr=.nan"], "teachers.1.train.lr: expected a finite number"),
    ("nan-weight", ["method.terms.1.weight=.nan"], "method.terms.1.weight: expected a finite number"),
    ("negative-weight", ["method.terms.0.weight=-0.5"], "method.terms.0.weight: Input should be greater than or equal to 0"),
    ("assistant-negative-weight", ["teachers.1.terms.0.weight=-1"], "teachers.1.terms.0.weight: Input should be greater"),
    ("inf-temperature", ["method.terms.1.temperature=.inf"], "method.terms.1.temperature: expected a finite number"),
    ("nan-model-knob", ["student.width=.nan"], "student.width: expected a finite number"),
    ("huge-model-knob", ["student.width=1e300"], "student.width: expected a finite number within"),
    ("nan-method-param", ["method.params={x: {y: .nan}}"], "method.params.x.y: expected a finite number"),
    ("negative-seed", ["seeds=[-1]"], "seeds.0: Input should be greater than or equal to 0"),
    ("huge-seed", ["seeds=[4294967296]"], "seeds.0: Input should be less than or equal to 4294967295"),
    ("huge-teacher-seed", ["teachers.0.seed=99999999999999999999"], "teachers.0.seed: Input should be less than"),
    ("huge-split-seed", ["data.split.seed=-3"], "data.split.seed"),
    ("huge-epochs", ["train.epochs=1000000000"], "train.epochs: Input should be less than or equal to 100000"),
    ("huge-batch", ["train.batch_size=10000000"], "train.batch_size: Input should be less than or equal to 100000"),
    ("no-train-split", ["data.split.val=0.6", "data.split.test=0.4"], "data.split: val + test is 1"),
    ("milestone-outside", ["train.milestones=[0.5, 1.5]"], "train.milestones.1: Input should be less than 1"),
    ("milestones-decrease", ["train.milestones=[0.7, 0.3]"], "train.milestones: milestones must increase"),
    ("inf-grad-clip", ["train.grad_clip=.inf"], "train.grad_clip: expected a finite number"),
    ("huge-threads", ["engine.threads=100000"], "engine.threads: Input should be less than or equal to 256"),
    ("huge-window", ["data.window={length: 10000000}"], "data.window.length: Input should be less than"),
    ("huge-student", ["student.width=100000"], "student: model 'cnn1d' with width=100000"),
    ("huge-teacher", ["teachers.0.width=100000"], "teachers[0]: model 'cnn1d' with width=100000"),
    ("deep-student", ["student.depth=100000"], "student: model 'cnn1d' with width=4, depth=100000 would have more than"),
    ("overflowing-student", ["student.width=1000000000000"], "would have more than 2^63 parameters"),
    ("transformer-attention", ["student={model: transformer, patch: 1}", "data.params.length=20000"],
     "on inputs of shape (3, 20000) would compute"),
    ("huge-activations", ["data.params.length=400000", "student.width=512"], "values per sample; the budget"),
    ("assistant-bad-keyword", ["teachers.1.terms.1.tmperature=4"], "teachers[1].terms[1].tmperature: unknown parameter"),
    ("assistant-bad-value", ["teachers.1.terms.1.temperature=abc"], "teachers[1].terms[1].temperature"),
    ("assistant-bad-loss", ["teachers.1.terms.1.loss=kdd"], "teachers[1].terms[1].loss: unknown loss 'kdd'"),
    ("assistant-bad-tap", ["teachers.1.terms.1={loss: fitnet, teacher_tap: nope}"],
     "teachers[1].terms[1].teacher_tap: tap 'nope' does not exist"),
    ("zero-temperature", ["method.terms.1.temperature=0"], "method.terms[1]: kd: temperature must be > 0, got 0"),
    ("assistant-negative-temperature", ["teachers.1.terms.1.temperature=-2"],
     "teachers[1].terms[1]: kd: temperature must be > 0"),
    ("method-bad-keyword", ["method.terms.1.temprature=4"], "method.terms[1].temprature: unknown parameter"),
    ("huge-repr", ["method.terms.0.loss=" + "z" * 5000], "method.terms.0.loss: String should have at most 100"),
]


def _invoke(tmp_path, text, overrides, smoke):
    recipe = tmp_path / "recipe.yaml"
    if text is None:
        recipe.write_bytes(b"\x80\x81\x82 not text \xff" * 10)
    else:
        recipe.write_text(text)
    out = tmp_path / "out"
    args = ["run", str(recipe), *overrides, "--out", str(out), "--no-progress"] + (["--smoke"] if smoke else [])
    start = time.perf_counter()
    result = CliRunner().invoke(app, args)
    return result, out, time.perf_counter() - start


def _assert_clean_refusal(result, out, seconds, expected):
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2, (result.exit_code, result.output[-2000:], result.exception)
    assert len(lines) == 1, result.output[:2000]  # one line, no traceback
    assert len(lines[0]) <= MESSAGE_LIMIT + 60, len(lines[0])  # capped (one_line), plus its "... more" note
    assert expected in lines[0], lines[0]
    assert not out.exists(), "a folder was created for a refused input"
    assert seconds < 10, f"refusing took {seconds:.1f} s"


@pytest.mark.parametrize("text,overrides,expected", [c[1:] for c in YAML_CASES], ids=[c[0] for c in YAML_CASES])
def test_bad_yaml_is_one_line_exit_2_and_creates_nothing(tmp_path, text, overrides, expected):
    _assert_clean_refusal(*_invoke(tmp_path, text, overrides, smoke=False), expected)


@pytest.mark.parametrize("smoke", [False, True], ids=["real", "smoke"])
@pytest.mark.parametrize("overrides,expected", [c[1:] for c in OVERRIDE_CASES], ids=[c[0] for c in OVERRIDE_CASES])
def test_bad_values_are_one_line_exit_2_and_create_nothing(tmp_path, overrides, expected, smoke):
    """--smoke checks what a real run checks: the same table fails the same way with it."""
    _assert_clean_refusal(*_invoke(tmp_path, BASE_YAML, overrides, smoke), expected)


def test_the_base_recipe_plans(tmp_path):
    """The table's failures come from the mutation, not from the base recipe."""
    from edgedistill.experiment.runner import plan

    plan(load_recipe(BASE))


def test_an_assistant_term_fails_before_any_teacher_trains(tmp_path, monkeypatch):
    """A bad keyword of the assistant's terms used to surface only when the assistant's training started, after the
    teacher before it had trained; now the plan refuses it and no stage is ever fitted."""
    from edgedistill.engine.loop import Trainer

    def no_training(*args, **kwargs):
        raise AssertionError("a stage was trained before the recipe's terms were checked")

    monkeypatch.setattr(Trainer, "fit", no_training)
    result, out, seconds = _invoke(tmp_path, BASE_YAML, ["teachers.1.terms.1.tmperature=4"], smoke=False)
    _assert_clean_refusal(result, out, seconds, "teachers[1].terms[1].tmperature")


def test_yaml_anchors_and_merges_within_limits_still_work():
    data = safe_load("base: &b {x: 1, y: 2}\nc: {<<: *b, y: 3}\nd: [*b, *b]\n")
    assert data["c"] == {"x": 1, "y": 3} and data["d"] == [{"x": 1, "y": 2}] * 2


def test_overrides_within_limits_parse():
    assert parse_override("teachers.0.terms.1.weight=0.5") == (["teachers", "0", "terms", "1", "weight"], 0.5)
    assert parse_override("data.params.task=regression") == (["data", "params", "task"], "regression")


def test_a_dict_recipe_gets_the_same_bounds():
    """The Python API (a dict, no YAML) is bounded the same way: NaN in a model knob names its key."""
    bad = {**BASE, "student": {"model": "cnn1d", "width": float("nan")}}
    with pytest.raises(UserInputError, match=r"student\.width: expected a finite number"):
        load_recipe(bad)
    bad = {**BASE, "student": {"model": "cnn1d", 3: 4}}
    with pytest.raises(UserInputError, match=r"student\.3: Keys should be strings"):
        load_recipe(bad)


def test_an_override_changes_only_the_aliased_place_it_names():
    """YAML aliases share one object; an override of one place must not silently change the other."""
    from edgedistill.yaml_io import apply_overrides

    data = safe_load("terms: &t [{loss: kd, temperature: 4}]\nmethod: {terms: *t}\n")
    out = apply_overrides(data, ["method.terms.0.temperature=2"])
    assert out["method"]["terms"][0]["temperature"] == 2 and out["terms"][0]["temperature"] == 4
