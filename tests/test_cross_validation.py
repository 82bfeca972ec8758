"""Cross-validation (eval.scheme): the folds themselves, the data each fold sees, a run over folds and its summary,
and every request that cannot work (exit 2, nothing written)."""
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from edgedistill.cli import app
from edgedistill.config import load_recipe
from edgedistill.data.folds import Fold, assign_folds, check_fold_classes
from edgedistill.data.prepare import dataset_fingerprint, prepare_data
from edgedistill.errors import UserInputError
from edgedistill.experiment import cv_report
from tests.helpers import TINY_RECIPE, cli_run, recipe_file

RECIPE = TINY_RECIPE


def _recipe(tmp_path: Path, **changes) -> Path:
    return recipe_file(tmp_path, RECIPE, **changes)


_run = cli_run


# -- the folds ----------------------------------------------------------------------------------------------
def test_loso_holds_out_each_subject_once_in_sorted_order():
    groups = np.array([2, 0, 1, 2, 0, 1, 1])
    ids, labels = assign_folds(Fold("loso", None, 0), np.zeros(7, int), groups, ["a", "b", "c"], 0, "data")
    assert ids.tolist() == [2, 0, 1, 2, 0, 1, 1]
    assert labels == ["subject a", "subject b", "subject c"]


def test_group_kfold_never_splits_a_subject_and_fills_every_fold():
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(9), rng.integers(5, 30, size=9))
    ids, labels = assign_folds(Fold("group_kfold", 3, 0), np.zeros(len(groups), int), groups, [str(i) for i in range(9)], 7, "d")
    for g in range(9):
        assert len(set(ids[groups == g].tolist())) == 1
    assert sorted(set(ids.tolist())) == [0, 1, 2] and len(labels) == 3
    again, _ = assign_folds(Fold("group_kfold", 3, 0), np.zeros(len(groups), int), groups, [str(i) for i in range(9)], 7, "d")
    assert (again == ids).all()  # deterministic for the seed


def test_stratified_kfold_puts_every_class_in_every_fold_evenly():
    y = np.repeat([0, 1, 2], [10, 7, 23])
    ids, labels = assign_folds(Fold("stratified_kfold", 5, 0), y, None, [], 3, "d", classes=["a", "b", "c"])
    sizes = np.bincount(ids)
    assert len(labels) == 5 and sizes.max() - sizes.min() <= 1
    for c in range(3):
        per_fold = np.bincount(ids[y == c], minlength=5)
        assert per_fold.min() >= 1 and per_fold.max() - per_fold.min() <= 1


@pytest.mark.parametrize("fold, groups, y, message", [
    (Fold("loso", None, 0), None, np.zeros(10, int), "no subject ids"),
    (Fold("group_kfold", 3, 0), None, np.zeros(10, int), "no subject ids"),
    (Fold("loso", None, 0), np.array([0, 0, 1, 1]), np.zeros(4, int), "at least 3 subjects"),
    (Fold("group_kfold", 6, 0), np.repeat(np.arange(4), 3), np.zeros(12, int), "at least 6 subjects"),
    (Fold("stratified_kfold", 5, 0), None, np.repeat([0, 1], [10, 3]), "class 'b' of d has 3"),
    (Fold("stratified_kfold", 20, 0), None, np.zeros(12, int), "at least 20 samples"),
])
def test_impossible_folds_are_refused_naming_the_key(fold, groups, y, message):
    with pytest.raises(UserInputError, match="eval") as err:
        assign_folds(fold, y, groups, [str(i) for i in range(10)], 0, "d", classes=None if "samples" in message else ["a", "b"])
    assert message in str(err.value)


def test_a_class_only_one_subject_has_is_refused_for_loso():
    y, groups = np.array([0, 0, 1, 1, 2, 2]), np.array([0, 0, 1, 1, 2, 2])
    ids, labels = assign_folds(Fold("loso", None, 0), y, groups, ["a", "b", "c"], 0, "d")
    with pytest.raises(UserInputError, match="subject a holds every sample of class"):
        check_fold_classes(ids, y, ["x", "y", "z"], labels, "loso", "d")


# -- what a fold's run sees ---------------------------------------------------------------------------------
def test_each_loso_fold_tests_one_subject_and_validates_on_others():
    cfg = load_recipe(RECIPE).data
    seen_test = []
    for i in range(5):
        s = prepare_data(cfg, 0, Fold("loso", None, i))
        test, val, train = (set(p.group.tolist()) for p in (s.test, s.val, s.train))
        assert len(test) == 1 and not test & val and not test & train and not val & train
        assert s.info.fold["index"] == i and s.info.fold["count"] == 5 and s.info.split_by == "subject"
        seen_test += test
    assert sorted(seen_test) == [0, 1, 2, 3, 4]


def test_fingerprints_name_the_fold_and_leave_holdout_unchanged():
    cfg = load_recipe(RECIPE).data
    prints = {dataset_fingerprint(cfg, 0, Fold("loso", None, i)) for i in range(3)}
    assert len(prints) == 3 and dataset_fingerprint(cfg, 0) not in prints
    assert dataset_fingerprint(cfg, 0) == dataset_fingerprint(cfg, 0, None)


def test_an_official_test_split_is_pooled_and_said(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "d.npz"
    np.savez(path, x=rng.normal(size=(40, 3, 16)), y=np.arange(40) % 2, test_x=rng.normal(size=(20, 3, 16)),
             test_y=np.arange(20) % 2)
    cfg = load_recipe({**RECIPE, "data": {"path": str(path)}}).data
    s = prepare_data(cfg, 0, Fold("stratified_kfold", 4, 1))
    assert sum(s.info.sizes.values()) == 60 and s.info.sizes["test"] == 15 and not s.info.official_test
    assert any("pooled" in n for n in s.info.notes)


# -- a run over folds ---------------------------------------------------------------------------------------
def test_loso_run_writes_folds_a_combined_summary_and_a_paired_verdict(tmp_path):
    out = tmp_path / "run"
    four = {"name": "synthetic", "params": {"n_subjects": 4, "windows_per_subject": 10, "length": 32}}
    recipe = _recipe(tmp_path, eval={"scheme": "loso"}, data=four)
    result = _run(recipe, "--out", out)
    assert result.exit_code == 0, result.output
    assert "folds x seeds" in result.output and "[fold3]" in result.output
    summary = json.loads((out / "summary.json").read_text())
    assert [f["index"] for f in summary["folds"]] == [0, 1, 2, 3]
    roles = {r["role"]: r for r in summary["rows"]}
    assert roles["method"]["metrics"]["acc"]["n"] == 8  # 4 folds x 2 seeds
    assert roles["teacher"]["metrics"]["acc"]["n"] == 4  # one teacher per fold
    assert len(roles["method"]["per_fold_test"]) == 4
    assert "over 4 folds" in summary["verdict"]
    # Pooled per-class counts cover every sample exactly once (each is tested in one fold).
    assert sum(roles["method"]["detail"]["support"]) == 40
    report = (out / "report.md").read_text()
    assert "## Per fold" in report and "leave-one-subject-out" in report and report.count("| subject ") >= 4
    fold2 = yaml.safe_load((out / "fold2" / "config.yaml").read_text())
    assert fold2["eval"] == {"scheme": "loso", "folds": None, "only": [2]}
    assert json.loads((out / "fold2" / "summary.json").read_text())["data"]["fold"]["label"] == "subject 2"
    # The same command again: every fold is read back, nothing retrained.
    again = _run(recipe, "--out", out)
    assert again.exit_code == 0 and "started" not in again.output, again.output
    assert json.loads((out / "summary.json").read_text())["rows"] == summary["rows"]


def test_eval_only_runs_those_folds_and_export_names_a_fold(tmp_path):
    out = tmp_path / "run"
    result = _run(_recipe(tmp_path, eval={"scheme": "group_kfold", "folds": 3, "only": [1]}, seeds=[0]), "--out", out)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.glob("fold*")) == ["fold1"]
    assert "1 of 3 folds run" in (out / "report.md").read_text()
    assert "one fold run" in json.loads((out / "summary.json").read_text())["verdict"]
    refused = CliRunner().invoke(app, ["export", str(out)])
    assert refused.exit_code == 2 and "cross-validation run" in refused.output and "fold1" in refused.output


def test_cv_report_verdict_is_paired_by_fold():
    def summary(method, alone):
        rows = [{"model": "s", "role": "student alone", "per_fold_test": [{"acc": a} for a in alone], "metrics": {}},
                {"model": "s + kd", "role": "method", "per_fold_test": [{"acc": m} for m in method], "metrics": {}}]
        return {"task": "classification", "rows": rows}
    clear = cv_report.verdict(summary([0.8, 0.82, 0.79, 0.81], [0.7, 0.71, 0.7, 0.72]))
    assert "A clear win" in clear and "won on 4 of 4 folds" in clear
    noisy = cv_report.verdict(summary([0.9, 0.6, 0.8, 0.7], [0.7, 0.7, 0.7, 0.7]))
    assert "not clearly" in noisy
    assert "did not beat" in cv_report.verdict(summary([0.6, 0.6], [0.7, 0.7]))


@pytest.mark.parametrize("changes, message", [
    ({"eval": {"scheme": "loso"}, "data": {"name": "synthetic", "params": {"n_subjects": 2, "windows_per_subject": 12, "length": 32}}},
     "at least 3 subjects"),
    ({"eval": {"scheme": "group_kfold", "folds": 9}}, "at least 9 subjects"),
    ({"eval": {"scheme": "loso", "only": [7]}}, "eval.only: fold 7 does not exist"),
    ({"eval": {"scheme": "loso", "only": [0, 7]}}, "eval.only: fold(s) [7] do not exist"),
    ({"eval": {"scheme": "loso", "folds": 3}}, "has no fold count"),
])
def test_impossible_cross_validation_exits_2_and_writes_nothing(tmp_path, changes, message):
    out = tmp_path / "run"
    result = _run(_recipe(tmp_path, **changes), "--out", out)
    assert result.exit_code == 2, result.output
    assert message in result.output and not out.exists()


def test_loso_without_subject_ids_exits_2(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "d.npz"
    np.savez(path, x=rng.normal(size=(40, 3, 16)), y=np.arange(40) % 2)
    out = tmp_path / "run"
    result = _run(_recipe(tmp_path, data={"path": str(path)}, eval={"scheme": "loso"}), "--out", out)
    assert result.exit_code == 2 and "no subject ids" in result.output and not out.exists()


def test_folds_in_parallel_give_the_same_summary_as_in_sequence(tmp_path):
    recipe = _recipe(tmp_path, eval={"scheme": "group_kfold", "folds": 2}, seeds=[0])
    one, two = tmp_path / "one", tmp_path / "two"
    assert _run(recipe, "--out", one, "--jobs", "1").exit_code == 0
    result = _run(recipe, "--out", two, "--jobs", "2")
    assert result.exit_code == 0, result.output
    for i in (0, 1):  # each fold's stage lines, sent by its worker, shown by the run's process
        assert f"[fold{i}] teacher seed 0: reused" in result.output and f"[fold{i}] Run directory:" in result.output
    a, b = (json.loads((d / "summary.json").read_text())["rows"] for d in (one, two))
    # Equal up to float reduction order (another process, maybe another thread count).
    flat = lambda rows: [s[k] for r in rows for s in r["per_seed_test"] for k in ("acc", "f1", "nll")]  # noqa: E731
    assert flat(a) == pytest.approx(flat(b), rel=1e-5)


def test_distill_refuses_a_cross_validation_before_training():
    import edgedistill

    x, y = np.zeros((20, 3, 16), dtype=np.float32), np.arange(20) % 2
    with pytest.raises(UserInputError, match="eval: distill returns one student"):
        edgedistill.distill(teacher="fcn", student="cnn1d", data=(x, y), **{"eval.scheme": "loso"})
