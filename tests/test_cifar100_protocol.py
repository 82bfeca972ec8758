"""benchmarks/cifar100.py: RepDistiller's CIFAR-100 protocol. The fast tests check what every real run is made of (the
stand-in the loader reads, each method's recipe validated and its terms bound, the published table, the report); the
slow one runs ``--smoke`` end to end on the synthetic stand-in (teacher, student alone and a method, both pairs)."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from edgedistill.config import TermConfig, load_recipe
from edgedistill.data.archives.cifar import load_100
from edgedistill.errors import UserInputError
from edgedistill.methods.terms import bind_terms

ROOT = Path(__file__).resolve().parents[1]


def _bench():
    spec = importlib.util.spec_from_file_location("cifar100_bench", ROOT / "benchmarks" / "cifar100.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["cifar100_bench"] = mod
    spec.loader.exec_module(mod)
    return mod


bench = _bench()


def test_the_standin_has_the_archive_shape_and_the_loader_reads_it(tmp_path):
    folder = bench.write_standin(tmp_path / "cifar-100-python")
    raw = load_100(folder)
    assert raw.x.shape == (200, 3, 32, 32) and raw.test_x.shape == (100, 3, 32, 32) and len(raw.classes) == 100
    assert len(set(raw.y)) == 100 and 0.0 <= raw.x.min() and raw.x.max() <= 1.0


def test_the_protocol_is_repdistillers():
    t = bench.TRAIN
    assert (t["epochs"], t["batch_size"], t["optimizer"], t["lr"], t["momentum"], t["weight_decay"], t["gamma"]) == (
        240, 64, "sgd", 0.05, 0.9, 5e-4, 0.1)
    assert [round(m * 240) for m in t["milestones"]] == [150, 180, 210]
    assert bench.AUGMENT["student"] == [{"name": "crop", "padding": 4}, {"name": "flip"}]
    assert bench.PAIRS == {"resnet8x4": "resnet32x4", "wrn_16_2": "wrn_40_2"}
    assert bench.METHODS == ["kd", "fitnet", "at", "crd", "dkd", "dist", "reviewkd"]
    # the numbers the issue names, and every compared method has a published entry (None where none was confirmed)
    assert (bench.PUBLISHED["resnet8x4"]["kd"], bench.PUBLISHED["resnet8x4"]["crd"], bench.PUBLISHED["resnet8x4"]["dkd"]) == (
        73.33, 75.51, 76.32)
    for student in bench.PAIRS:
        assert set(bench.PUBLISHED[student]) == {"teacher", "student alone", *bench.METHODS}
        # the docstring's table holds every number the script compares
        assert all(f" {v:.2f} " in bench.__doc__ for v in bench.PUBLISHED[student].values() if v is not None)


@pytest.mark.parametrize("student", list(bench.PAIRS))
@pytest.mark.parametrize("method", bench.METHODS)
def test_every_method_recipe_validates_and_its_terms_bind(tmp_path, student, method):
    r = bench.method_recipe(student, method, tmp_path / "t.pt", tmp_path, bench.VAL, bench.TRAIN, [0], "cpu", bench.REVIEW_TAPS,
                            tmp_path / "cache")
    recipe = load_recipe(r)
    bound = bind_terms([TermConfig(**t) for t in r["method"]["terms"]], "classification")
    assert recipe.train.epochs == 240 and recipe.teacher_specs()[0].model == bench.PAIRS[student]
    assert [b.label.split("_")[0] for b in bound][0] == "ce"


def test_teacher_recipe_trains_the_teacher_with_the_augmentation(tmp_path):
    recipe = load_recipe(bench.teacher_recipe("wrn_40_2", tmp_path, bench.VAL, bench.TRAIN, "cpu", tmp_path / "cache"))
    assert recipe.method.name == "supervised" and recipe.student.model == "wrn_40_2"
    assert [s.name for s in recipe.augment.student] == ["crop", "flip"]


def test_the_report_puts_ours_beside_the_published():
    results = {"protocol": {"seeds": [0], "smoke": False, "reviewkd_taps": bench.REVIEW_TAPS},
               "pairs": {"resnet8x4": {"teacher": "resnet32x4", "ours": {"teacher": 79.0, "student alone": 72.0, "kd": 73.5}}}}
    table = bench.render(results, ["kd", "dkd"])
    assert "| kd | 73.50 | 73.33 |" in table and "| dkd | - | 76.32 |" in table and "| teacher | 79.00 | 79.42 |" in table


def test_the_cost_table_projects_the_protocol_from_one_epoch():
    results = {"pairs": {"resnet8x4": {"teacher": "resnet32x4",
                                       "epoch_s": {"teacher": 15.0, "student alone": 6.0, "kd": 12.0, "dkd": None}}}}
    table = bench.cost_table(results, ["kd", "dkd"])
    assert "| teacher | 15.0 s/epoch → 1.00 h |" in table and "| kd | 12.0 s/epoch → 0.80 h |" in table
    assert "| dkd | - |" in table and "about 2.2 h" in table  # (15 + 6 + 12) s x 240 epochs


def test_bad_arguments_are_refused():
    with pytest.raises(UserInputError, match=r"--pairs/--methods: unknown \['vgg8'\]"):
        bench.main(["--pairs", "vgg8", "--smoke"])
    with pytest.raises(UserInputError, match="--data: the folder holding CIFAR-100"):
        bench.main([])


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_smoke_runs_the_protocol_end_to_end(tmp_path):
    # One pair (the cheaper teacher) and two methods: a teacher run, then a logit and a feature method. The whole
    # --smoke (both pairs, seven methods) is the same code, ten times longer.
    results = bench.main(["--smoke", "--out", str(tmp_path), "--pairs", "wrn_16_2", "--methods", "kd,reviewkd"])
    ours = results["pairs"]["wrn_16_2"]["ours"]
    assert all(ours[k] is not None and 0.0 <= ours[k] <= 100.0 for k in ("teacher", "student alone", "kd", "reviewkd"))
    assert (tmp_path / "results.md").read_text().count("| kd |") == 1 and (tmp_path / "results.json").exists()
